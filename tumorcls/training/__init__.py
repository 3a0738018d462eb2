"""Training: what ``train.py`` runs (config checks, the run and its folder layout, callbacks, checkpoint files).
Public names are re-exported lazily (see tumorcls.lazy_exports)."""

from tumorcls.lazy_exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "layout": ("RunLayout",),
        "config_checks": ("check_config",),
        "callbacks": ("EpochHistory",),
    },
)
