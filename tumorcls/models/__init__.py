"""Models: the network factory, pretrained loading, the LightningModule, the optimiser/scheduler factory and
checkpoint loading. Public names are re-exported lazily (see tumorcls.lazy_exports)."""

from tumorcls.lazy_exports import lazy_exports

_EXPORTS = {
    "CHECKPOINT_KEY": "checkpoint",
    "CheckpointInfo": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "TumorClassifier": "lit_module",
    "TumorNet": "network",
    "create_network": "network",
    "ModelSettings": "settings",
    "build_optimizer": "optim",
    "build_scheduler": "optim",
    "softmax": "probabilities",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
