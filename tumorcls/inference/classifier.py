"""The Python API behind ``tumorcls.load``: a loaded model (one file or an ensemble) that classifies image files,
folders and in-memory arrays the way ``tumorcls predict`` does (the same decoder, preprocessing, batching, TTA and
temperature), and explains them with Grad-CAM where the backend has gradients (checkpoints).

    import tumorcls
    model = tumorcls.load("model.onnx")                  # or best.ckpt, model.h5, or several files (an ensemble)
    for result in model.predict(["scan1.jpg", "scans/"]):
        print(result.source, result.label, result.confidence)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.data.decode import ImageDecodeError, prepare_rgb, read_image
from tumorcls.data.files import find_images
from tumorcls.errors import TumorclsError
from tumorcls.inference.backends import Predictor, load_model
from tumorcls.inference.backends.loader import ModelPaths
from tumorcls.inference.batching import predict_batch

Source = str | Path | np.ndarray  # a file, a folder (searched recursively), a glob, or an H x W x 3 uint8 RGB image


@dataclass(frozen=True)
class Result:
    """One image's answer: where it came from (its path, or its index among the arrays given), the predicted
    class, its calibrated confidence and every class's probability."""

    source: str | int
    label: str
    confidence: float
    probabilities: dict[str, float]


class Classifier:
    """A loaded model; see the module docstring. ``predictor`` is the backend (:class:`Predictor`)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    @classmethod
    def load(cls, model: ModelPaths, device: str = "cpu", threads: int | None = None) -> Classifier:
        return cls(load_model(model, device=device, threads=threads))

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    @property
    def backend(self) -> str:
        return self.predictor.backend

    def describe(self) -> dict[str, Any]:
        """What the model file says about itself (class names, input size, preprocessing, temperature...)."""
        return self.predictor.describe()

    def prepare(self, images: Source | Sequence[Source]) -> tuple[list[str | int], np.ndarray]:
        """The model's input for ``images``: each decoded (files) or taken as RGB (arrays), cropped, resized and
        normalised in intensity as the model was trained; (sources, N x size x size x 3 uint8)."""
        options = self.predictor.decode_options()
        sources: list[str | int] = []
        pixels: list[np.ndarray] = []
        for i, item in enumerate(_as_list(images)):
            if isinstance(item, np.ndarray):
                sources.append(i)
                pixels.append(prepare_rgb(_checked_rgb(item, i), options))
                continue
            files, missing = find_images([str(item)])
            if missing:
                path, reason = missing[0]
                raise ImageDecodeError(f"{path}: {reason}")
            for path in files:
                sources.append(str(path))
                pixels.append(read_image(path, options))
        if not pixels:
            raise TumorclsError(f"no images in {images!r}")
        return sources, np.stack(pixels)

    def predict_proba(self, images: Source | Sequence[Source], tta: bool = False) -> np.ndarray:
        """(N, classes) calibrated probabilities, in the order of the images (folders in sorted order)."""
        return predict_batch(self.predictor, self.prepare(images)[1], tta).probs

    def predict(self, images: Source | Sequence[Source], tta: bool = False) -> list[Result]:
        """One :class:`Result` per image; ``tta`` averages each image with its mirror image as training's TTA."""
        sources, pixels = self.prepare(images)
        probs = predict_batch(self.predictor, pixels, tta).probs
        names = self.class_names
        results = []
        for source, p in zip(sources, probs):
            best = int(np.argmax(p))
            results.append(Result(source, names[best], float(p[best]), {n: float(v) for n, v in zip(names, p)}))
        return results

    def explain(
        self, images: Source | Sequence[Source], classes: Sequence[int] | None = None, layer: str | None = None
    ) -> np.ndarray:
        """Grad-CAM heatmaps (N, size, size) in [0, 1] for ``classes`` (default: each image's predicted class);
        a checkpoint model only (other backends have no gradients: one-line TumorclsError)."""
        explainer = self.predictor.grad_cam(layer)
        _, pixels = self.prepare(images)
        if classes is None:
            classes = predict_batch(self.predictor, pixels).probs.argmax(axis=1).tolist()
        if len(classes) != len(pixels):
            raise TumorclsError(f"explain: {len(classes)} class indices for {len(pixels)} images")
        return explainer(pixels, classes)


def _as_list(images: Source | Sequence[Source]) -> list[Source]:
    """One source or several: a 4-D array is a batch of images, a 3-D array or a path one image."""
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, str | Path):
        return [images]
    if isinstance(images, Iterable):
        return list(images)
    raise TumorclsError(f"expected image paths or H x W x 3 uint8 arrays, got {type(images).__name__}")


def _checked_rgb(image: np.ndarray, index: int) -> np.ndarray:
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise TumorclsError(f"image {index}: expected an H x W x 3 uint8 RGB array, got {image.dtype} {image.shape}")
    return image
