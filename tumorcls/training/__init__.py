"""Training: what ``train.py`` runs. The stages are imported from their modules (``tumorcls.training.run.run``,
``.config_checks.check_config``, ``.callbacks.EpochHistory``, ``.checkpoint_io``...): this package re-exports
nothing, so importing one of them (the checkpoint writer, a test of one stage) loads only what that one needs."""
