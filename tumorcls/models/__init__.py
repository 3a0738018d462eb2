"""Models: the network factory, pretrained loading, the LightningModule, the optimiser/scheduler factory and
checkpoint loading. Public names are re-exported lazily (see tumorcls.lazy_exports)."""

from tumorcls.lazy_exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "checkpoint": ("CHECKPOINT_KEY", "CheckpointInfo", "load_checkpoint", "read_checkpoint"),
        "lit_module": ("TumorClassifier",),
        "network": ("TumorNet", "create_network"),
        "settings": ("ModelSettings",),
        "optim": ("build_optimizer", "build_scheduler"),
        "probabilities": ("softmax",),
    },
)
