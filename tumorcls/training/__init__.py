"""Training: what ``train.py`` runs (config checks, the run, callbacks, checkpoint files)."""

from tumorcls.training.callbacks import EpochHistory
from tumorcls.training.config_checks import check_config
from tumorcls.training.run import run

__all__ = ["EpochHistory", "check_config", "run"]
