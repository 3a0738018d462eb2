"""Training: what ``train.py`` runs (config checks, the run and its folder layout, callbacks, checkpoint files).
Public names are re-exported lazily (see tumorcls.lazy_exports)."""

from tumorcls.lazy_exports import lazy_exports

_EXPORTS = {
    "RunLayout": "layout",
    "check_config": "config_checks",
    "EpochHistory": "callbacks",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
