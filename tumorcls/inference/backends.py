"""Model backends behind one interface: RGB uint8 images in, class probabilities out.

The file's suffix picks the backend: ``.ckpt`` (a tumorcls Lightning checkpoint, run with torch),
``.onnx`` (ONNX Runtime) or ``.h5``/``.keras`` (Keras, when TensorFlow is installed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tumorcls.errors import TumorclsError, first_line
from tumorcls.labels import CLASS_NAMES

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".ckpt",)
ONNX_SUFFIXES = (".onnx",)
KERAS_SUFFIXES = (".h5", ".keras")
DEFAULT_INPUT_SIZE = 150


class ModelFileError(TumorclsError):
    """A model file that is missing, of an unknown kind, or that its backend cannot run."""


@runtime_checkable
class Predictor(Protocol):
    """What every backend offers."""

    backend: str
    class_names: list[str]
    input_size: int
    temperature: float | None  # the temperature its probabilities include, when known

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB at ``input_size`` -> (N, C) probabilities."""
        ...


def _check_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected an N x H x W x 3 RGB batch, got shape {images.shape}")
    return images


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class TorchPredictor:
    """A tumorcls checkpoint run with torch; probabilities are softmax(logits / temperature)."""

    backend = "checkpoint"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        hp = model.hparams
        self.class_names = [str(c) for c in hp.class_names]
        self.input_size = int(hp.get("input_size", DEFAULT_INPUT_SIZE))
        self.temperature = float(getattr(model, "temperature", 1.0) or 1.0)
        self.mean = torch.tensor(hp.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(hp.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: np.ndarray) -> Any:
        """uint8 NHWC RGB -> normalised float NCHW tensor, as the training transforms do."""
        arr = np.ascontiguousarray(_check_batch(images))
        if not arr.flags.writeable:  # e.g. a flipped view for TTA; torch wants writable memory
            arr = arr.copy()
        x = self.torch.from_numpy(arr).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) logits, float64."""
        with self.torch.inference_mode():
            logits = self.model(self.preprocess(images)).float()
        return logits.cpu().numpy().astype(np.float64)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.predict_logits(images), self.temperature)


class OnnxPredictor:
    """An ONNX graph taking float32 RGB 0..255 (NCHW, or NHWC) and returning probabilities."""

    backend = "onnx"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelFileError(f"cannot load ONNX model '{path}': {first_line(exc)}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        self.channels_first = len(shape) == 4 and shape[1] == 3
        spatial = shape[2:4] if self.channels_first else shape[1:3]
        size = next((d for d in spatial if isinstance(d, int) and d > 0), None)
        self.input_size = int(size or meta.get("input_size", DEFAULT_INPUT_SIZE))
        self.class_names = _names_from_metadata(meta.get("class_names"), path)
        self.temperature = float(meta["temperature"]) if "temperature" in meta else None

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        x = _check_batch(images).astype(np.float32)
        if self.channels_first:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float64)


def _names_from_metadata(raw: str | None, path: Path) -> list[str]:
    if raw is None:
        log.warning("'%s' has no class_names metadata; assuming %s", path, list(CLASS_NAMES))
        return list(CLASS_NAMES)
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = [n.strip() for n in raw.split(",")]
    return [str(n) for n in names]


class KerasPredictor:
    """A Keras model taking BGR 0..255 NHWC (the tutorial's cv2-read input) and returning probabilities."""

    backend = "keras"

    def __init__(self, path: Path, class_names: Sequence[str] = CLASS_NAMES) -> None:
        import torch._dynamo  # noqa: F401 - importing it after TensorFlow 2.21 segfaults (torch 2.14)

        try:
            import tensorflow as tf  # noqa: F401 - heavy, so imported only for .h5 models
            from tensorflow import keras
        except ImportError:
            raise ModelFileError(
                f"'{path}' is a Keras model and needs TensorFlow, which is not installed (pip install -e '.[keras]')"
            ) from None
        try:
            self.model = keras.models.load_model(str(path), compile=False)
        except Exception as exc:  # noqa: BLE001 - keras/h5py raise many types
            raise ModelFileError(f"cannot load Keras model '{path}': {first_line(exc)}") from None
        shape = self.model.input_shape
        self.input_size = int(shape[1]) if shape[1] else DEFAULT_INPUT_SIZE
        meta = _h5_metadata(path)  # a tumorcls export says its labels; the tutorial's file does not
        names = meta.get("class_names")
        self.class_names = _names_from_metadata(names, path) if names else list(class_names)
        self.temperature = float(meta["temperature"]) if "temperature" in meta else None

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(_check_batch(images)[..., ::-1]).astype(np.float32)
        # a one-element list is the input structure both Keras 2 and Keras 3 accept for one named input
        return np.asarray(self.model([bgr], training=False), dtype=np.float64)


def _h5_metadata(path: Path) -> dict[str, str]:
    """The ``tumorcls_*`` attributes a tumorcls .h5 export carries (empty for other files)."""
    if path.suffix.lower() != ".h5":
        return {}
    import h5py

    with h5py.File(path, "r") as f:
        return {k[len("tumorcls_") :]: str(v) for k, v in f.attrs.items() if k.startswith("tumorcls_")}


def load_predictor(path: str | Path, device: str = "cpu", threads: int | None = None) -> Predictor:
    """The backend for this model file, chosen by its suffix."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    known = CHECKPOINT_SUFFIXES + ONNX_SUFFIXES + KERAS_SUFFIXES
    if suffix not in known:
        raise ModelFileError(f"unknown model file type '{suffix or path.name}' for '{path}'; expected {list(known)}")
    if not path.is_file():
        raise ModelFileError(f"model file not found: '{path}'")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if suffix in CHECKPOINT_SUFFIXES:
        import torch

        from tumorcls.models.checkpoint import load_classifier

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise ModelFileError(f"unknown device {device!r}; choose cpu, cuda, cuda:N or auto")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelFileError(f"device {device!r} asked for, but torch sees no CUDA device")
        return TorchPredictor(load_classifier(path, expected_classes=None, map_location=device), device)
    if suffix in ONNX_SUFFIXES:
        return OnnxPredictor(path, threads)
    return KerasPredictor(path)
