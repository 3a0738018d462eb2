"""The Keras backend: an .h5/.keras model run with TensorFlow, taking BGR 0..255 NHWC (the tutorial's cv2-read
input) and returning probabilities. TensorFlow is imported only when such a model is loaded.

On load the model is held to the contract (one N x H x W x 3 input, square when static; one probability per
class name: the metadata's for a tumorcls export, else the tutorial's four), or refused in one line. Its
preprocessing (crop, intensity) is the export's ``preprocess`` attribute; "none" for the tutorial's file.
``export.py`` checks its .h5 files through this class, with both Keras APIs.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.errors import first_line
from tumorcls.inference.backends.base import ModelFileError, Predictor, check_outputs, checked_input_size
from tumorcls.labels import CLASS_NAMES
from tumorcls.model_file import read_h5_metadata, read_metadata

KERAS_APIS = ("tf_keras", "keras3")


def keras_module(api: str = "keras3") -> Any:
    """``tf.keras`` (Keras 3) or tf_keras (the Keras 2 API); ImportError when TensorFlow or tf_keras is missing."""
    if api not in KERAS_APIS:
        raise ValueError(f"unknown Keras API {api!r}; expected one of {KERAS_APIS}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import torch._dynamo  # noqa: F401 - importing it after TensorFlow 2.21 segfaults (torch 2.14)

    tf = importlib.import_module("tensorflow")  # after torch._dynamo, whatever an import sorter prefers
    tf.get_logger().setLevel("ERROR")
    return tf.keras if api == "keras3" else importlib.import_module("tf_keras")


def load_keras_model(path: str | Path, api: str = "keras3", keras: Any = None) -> Any:
    """Load a model with one Keras API, without compiling (an .h5 must be named *.h5 for Keras 3)."""
    keras = keras or keras_module(api)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras.models.load_model(str(path), compile=False)


def keras_probabilities(keras_model: Any, bgr: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Run a single-input Keras model on float BGR 0..255 NHWC pixels (a list input suits Keras 2 and 3)."""
    x = np.ascontiguousarray(bgr, dtype=np.float32)
    parts = [np.asarray(keras_model([x[i : i + batch_size]], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, int(keras_model.output_shape[-1])), np.float32)


def _single_shape(path: Path, shape: Any, what: str) -> list[Any]:
    if isinstance(shape, list) and shape and isinstance(shape[0], tuple | list):
        if len(shape) != 1:
            raise ModelFileError(f"'{path}' has {len(shape)} {what}s; expected one")
        shape = shape[0]
    return list(shape)


class KerasPredictor(Predictor):
    """A Keras model loaded with ``api``; RGB batches are flipped to BGR before they go in."""

    backend = "keras"
    suffixes = (".h5", ".keras")

    def __init__(self, path: str | Path, class_names: Sequence[str] = CLASS_NAMES, api: str = "keras3") -> None:
        path = Path(path)
        try:
            keras = keras_module(api)
        except ImportError as exc:
            raise ModelFileError(
                f"'{path}' is a Keras model and needs TensorFlow, which is not installed ({exc.name} is missing: "
                "pip install -e '.[keras]')"
            ) from None
        try:
            self.model = load_keras_model(path, api, keras)
        except Exception as exc:  # noqa: BLE001 - keras/h5py raise many types
            raise ModelFileError(f"cannot load Keras model '{path}' with {api}: {first_line(exc)}") from None
        metadata = read_h5_metadata(path) if path.suffix.lower() == ".h5" else {}
        try:
            declared = read_metadata(metadata, f"'{path}'")
        except ValueError as exc:
            raise ModelFileError(str(exc)) from None
        size = checked_input_size(path, _single_shape(path, self.model.input_shape, "input"), 3, declared.input_size)
        names = declared.class_names or list(class_names)
        preprocess = {"crop": declared.crop, "intensity": declared.intensity}  # "none" unless declared
        super().__init__(path, names, size, declared.temperature, metadata, **preprocess)
        out = _single_shape(path, self.model.output_shape, "output")
        if len(out) != 2:
            raise ModelFileError(f"'{path}' gives {len(out)}-D output {out}; expected N x classes")
        check_outputs(path, out[1], names, declared.class_names is not None)

    @classmethod
    def from_file(cls, path: Path, device: str = "cpu", threads: int | None = None) -> KerasPredictor:
        return cls(path)

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return keras_probabilities(self.model, images[..., ::-1])
