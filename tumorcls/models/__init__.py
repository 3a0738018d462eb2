"""Models: the network factory, pretrained loading, the LightningModule, the optimiser/scheduler factory and
checkpoint loading."""

from tumorcls.models.checkpoint import CHECKPOINT_KEY, CheckpointInfo, load_checkpoint, read_checkpoint
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.models.network import TumorNet, create_network
from tumorcls.models.optim import build_optimizer, build_scheduler
from tumorcls.models.settings import ModelSettings

__all__ = [
    "CHECKPOINT_KEY",
    "CheckpointInfo",
    "ModelSettings",
    "TumorClassifier",
    "TumorNet",
    "build_optimizer",
    "build_scheduler",
    "create_network",
    "load_checkpoint",
    "read_checkpoint",
]
