"""tumorcls: brain MRI tumour classification with PyTorch Lightning, timm and Hydra.

Importing the package only names the label map, the version and :func:`load`; it loads no framework and changes
no global state (TensorBoard's "no TensorFlow" marker is set when training builds a TensorBoard logger)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tumorcls.labels import CLASS_NAMES, NUM_CLASSES

if TYPE_CHECKING:
    from tumorcls.inference.classifier import Classifier

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "__version__", "load"]
__version__ = "0.1.0"


def load(*models: str | Path, device: str = "cpu", threads: int | None = None) -> Classifier:
    """A trained model from its file (``.ckpt``, ``.onnx``, ``.h5``), or several files as their ensemble (the mean
    of their probabilities): ``tumorcls.load("model.onnx").predict(["scan.jpg"])``. ``device`` (cpu, cuda, auto)
    matters to checkpoints, ``threads`` to torch and ONNX Runtime."""
    from tumorcls.inference.classifier import Classifier

    return Classifier.load(models[0] if len(models) == 1 else models, device=device, threads=threads)
