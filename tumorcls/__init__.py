"""tumorcls: brain MRI tumour classification with PyTorch Lightning, timm and Hydra."""

import sys
import types

from tumorcls.labels import CLASS_NAMES, NUM_CLASSES

# TensorBoard imports TensorFlow, when it is installed (the `keras` extra), unless this marker module exists;
# it then uses its own stub. Training and inference never need TensorFlow, so they never load it.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

__all__ = ["CLASS_NAMES", "NUM_CLASSES"]
__version__ = "0.1.0"
