"""tumorcls: brain MRI tumour classification with PyTorch Lightning, timm and Hydra."""

from tumorcls.labels import CLASS_NAMES, NUM_CLASSES

__all__ = ["CLASS_NAMES", "NUM_CLASSES"]
__version__ = "0.1.0"
