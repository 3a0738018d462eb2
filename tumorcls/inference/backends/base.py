"""The one predictor interface every runtime implements: RGB uint8 images in, class probabilities out.

A backend subclasses :class:`Predictor`, fills in its description (class names, input size, temperature,
metadata) and implements ``_probabilities``; how views of an image (test-time augmentation) are combined is
a method here too, so callers never ask which runtime they hold. So is how a file becomes the model's input
(:meth:`Predictor.decode_options`: its size and the preprocessing it was trained with, ``crop`` and
``intensity``), which `predict`, `evaluate` and `serve` decode with. The checks a model file must pass on load
(:func:`checked_input_size`, :func:`check_outputs`, :func:`checked_preprocess`) are shared by the runtimes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tumorcls.data.decode import DecodeOptions
from tumorcls.data.preprocess import check_preprocess
from tumorcls.errors import TumorclsError
from tumorcls.probabilities import softmax  # the one softmax (serving, calibration, evaluation)

DEFAULT_INPUT_SIZE = 150


class ModelFileError(TumorclsError):
    """A model file that is missing, of an unknown kind, that its backend cannot run, or that does not take
    RGB images and give one probability per class."""


@dataclass
class BatchOutput:
    probs: np.ndarray  # what the model says, temperature included
    raw_probs: np.ndarray | None = None  # at temperature 1, where the backend exposes logits


def check_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected an N x H x W x 3 RGB batch, got shape {images.shape}")
    return images


class Predictor:
    """A loaded model: ``predict_proba`` maps (N, H, W, 3) uint8 RGB at ``input_size`` to (N, C) probabilities."""

    backend: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    crop: str = "none"  # tumorcls.data.preprocess.CROPS: what the model was trained on
    intensity: str = "none"  # tumorcls.data.preprocess.INTENSITIES

    def __init__(
        self,
        path: Path | None,
        class_names: Sequence[str],
        input_size: int,
        temperature: float | None,
        metadata: dict[str, str] | None = None,
        crop: str = "none",
        intensity: str = "none",
    ) -> None:
        self.path = path
        self.class_names = [str(c) for c in class_names]
        self.input_size = int(input_size)
        self.temperature = temperature  # the temperature its probabilities include, when known
        self.metadata = dict(metadata or {})
        self.crop, self.intensity = checked_preprocess(path, crop, intensity)

    def decode_options(self) -> DecodeOptions:
        """How a file becomes this model's input: its size, then its own crop and intensity normalisation."""
        return DecodeOptions(size=self.input_size, crop=self.crop, intensity=self.intensity)

    @classmethod
    def from_file(cls, path: Path, device: str = "cpu", threads: int | None = None) -> Predictor:
        raise NotImplementedError

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB at ``input_size`` -> (N, C) float64 probabilities."""
        images = check_batch(images)
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)))
        return np.asarray(self._probabilities(images), dtype=np.float64)

    def predict_views(self, views: Sequence[np.ndarray]) -> BatchOutput:
        """Probabilities of views of the same images (e.g. an image and its mirror), combined as training's TTA
        does (mean of the logits). From probabilities alone that is the renormalised geometric mean, which is
        the same thing: log-softmax differs from the logits by one constant per image."""
        if len(views) == 1:
            return BatchOutput(self.predict_proba(views[0]))
        log_probs = np.mean([np.log(np.clip(self.predict_proba(v), 1e-30, None)) for v in views], axis=0)
        return BatchOutput(softmax(log_probs))

    def grad_cam(self, layer: str | None = None) -> Callable[[np.ndarray, Sequence[int]], np.ndarray]:
        """A Grad-CAM explainer (images, class indices) -> heatmaps; only runtimes with gradients have one."""
        raise TumorclsError(f"--cam needs a checkpoint (.ckpt) model; this one is {self.backend}")

    def describe(self) -> dict[str, Any]:
        """What predict --json and the web server report about the model."""
        return {
            "model": str(self.path) if self.path is not None else None,
            "backend": self.backend,
            "class_names": list(self.class_names),
            "input_size": self.input_size,
            "crop": self.crop,
            "intensity": self.intensity,
            "temperature": self.temperature,
            "metadata": dict(self.metadata),
        }


def checked_preprocess(path: Path | None, crop: Any, intensity: Any) -> tuple[str, str]:
    """The model's (crop, intensity), or ModelFileError in one line naming the file when either is unknown
    (a newer tumorcls, or another tool, wrote a step this version cannot apply)."""
    try:
        check_preprocess(crop, intensity)
    except ValueError as exc:
        where = f"'{path}'" if path is not None else "the model"
        raise ModelFileError(f"{where} asks for preprocessing this version cannot apply: {exc}") from None
    return str(crop), str(intensity)


def _is_size(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def checked_input_size(
    path: Path, shape: Sequence[Any], channels_axis: int, declared: int | None, layout: str = "N x H x W x 3"
) -> int:
    """The square spatial size of a model input of ``shape`` (batch first, None or a name where dynamic) with
    3 channels on ``channels_axis``; what the metadata ``declared`` must agree with a static size."""
    shape = list(shape)
    if len(shape) != 4:
        raise ModelFileError(f"'{path}' takes {len(shape)}-D input {shape}; expected a batch of images ({layout})")
    if shape[channels_axis] != 3:
        raise ModelFileError(f"'{path}' takes input {shape}; expected 3 colour channels ({layout})")
    spatial = [d for i, d in enumerate(shape[1:], start=1) if i != channels_axis % 4]
    static = [d for d in spatial if _is_size(d)]
    if len(static) == 2 and static[0] != static[1]:
        raise ModelFileError(f"'{path}' takes {static[0]} x {static[1]} images; only square inputs are supported")
    if static and declared is not None and static[0] != declared:
        raise ModelFileError(f"'{path}' takes {static[0]} x {static[0]} images, but its metadata says {declared}")
    return int(static[0] if static else declared or DEFAULT_INPUT_SIZE)


def check_outputs(path: Path, n_outputs: int | None, class_names: Sequence[str], declared: bool) -> None:
    """One probability per class, or a one-line refusal; ``declared``: the names come from the file's metadata."""
    if n_outputs == len(class_names):
        return
    names = ", ".join(class_names)
    said = "its metadata names" if declared else "tumorcls expects"
    raise ModelFileError(
        f"'{path}' gives {n_outputs} outputs per image, but {said} {len(class_names)} classes ({names})"
    )
