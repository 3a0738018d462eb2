"""tumorcls: brain MRI tumour classification with PyTorch Lightning, timm and Hydra.

Importing the package only names the label map and the version; it loads no framework and changes no global
state (TensorBoard's "no TensorFlow" marker is set when training builds a TensorBoard logger)."""

from tumorcls.labels import CLASS_NAMES, NUM_CLASSES

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "__version__"]
__version__ = "0.1.0"
