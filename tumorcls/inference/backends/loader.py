"""Which backend runs a model file: the one place mapping file suffixes to predictor classes, and turning the
model file(s) a command was given into one predictor (several files: their ensemble)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tumorcls.inference.backends.base import ModelFileError, Predictor
from tumorcls.inference.backends.ensemble import combine, repeated_member
from tumorcls.inference.backends.keras_h5 import KerasPredictor
from tumorcls.inference.backends.onnx_runtime import OnnxPredictor
from tumorcls.inference.backends.torch_checkpoint import TorchPredictor

BACKENDS: dict[str, type[Predictor]] = {
    suffix: cls for cls in (TorchPredictor, OnnxPredictor, KerasPredictor) for suffix in cls.suffixes
}

ModelPaths = str | Path | Sequence[str | Path]  # one model file, or the members of an ensemble


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


def model_paths(model: ModelPaths) -> list[Path]:
    """The model file(s) as a list: ``[path]`` for one file, the members in order for several (each once)."""
    paths = [Path(model)] if isinstance(model, str | Path) else [Path(p) for p in model]
    if not paths:
        raise ModelFileError("no model file given")
    repeated = repeated_member(paths)
    if repeated:
        raise ModelFileError(repeated)
    return paths


def load_model(model: ModelPaths, device: str = "cpu", threads: int | None = None) -> Predictor:
    """One predictor for one model file (its backend) or several (:class:`EnsemblePredictor`, the mean of their
    probabilities; they must share class names, input size and preprocessing)."""
    return combine([load_predictor(path, device, threads) for path in model_paths(model)])


def model_field(model: ModelPaths, name_only: bool = False) -> str | list[str]:
    """How outputs name the model: its path (or file name) for one file, the list of them for an ensemble."""
    names = [path.name if name_only else str(path) for path in model_paths(model)]
    return names[0] if len(names) == 1 else names
