"""Training: what ``train.py`` runs (the run, its folder layout, callbacks, checkpoint files)."""
