"""Which backend runs a model file: the one place mapping file suffixes to predictor classes."""

from __future__ import annotations

from pathlib import Path

from tumorcls.inference.backends.base import ModelFileError, Predictor
from tumorcls.inference.backends.keras_h5 import KerasPredictor
from tumorcls.inference.backends.onnx_runtime import OnnxPredictor
from tumorcls.inference.backends.torch_checkpoint import TorchPredictor

BACKENDS: dict[str, type[Predictor]] = {
    suffix: cls for cls in (TorchPredictor, OnnxPredictor, KerasPredictor) for suffix in cls.suffixes
}


def load_predictor(path: str | Path, device: str = "cpu", threads: int | None = None) -> Predictor:
    """The backend for this model file, chosen by its suffix; ``device`` (auto, cpu, cuda, cuda:N) matters to
    checkpoints only, ``threads`` to torch and ONNX Runtime."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in BACKENDS:
        raise ModelFileError(f"unknown model file type '{suffix or path.name}' for '{path}'; expected {list(BACKENDS)}")
    if not path.is_file():
        raise ModelFileError(f"model file not found: '{path}'")
    return BACKENDS[suffix].from_file(path, device=device, threads=threads)
