"""Deterministic per-image preprocessing that belongs to a model's input contract: crop to the head, and
normalise the intensities inside it.

In Training/ the look of an image is a class cue that does not carry over to other scanners: the mean
head brightness is 71 of 255 for gliomas and 97 for images without a tumour, and the head fills 48% of a
glioma image against 64% of a pituitary one (``tumorcls audit``). ``crop="head"`` removes the scale cue
(the head fills the input, whatever the field of view), ``intensity="equalize"`` or ``"stretch"`` the
brightness cue. Both run on every
path that turns a file into model input (:func:`tumorcls.data.decode.prepare_rgb`): the training cache,
predict, evaluate, serve, export parity and calibration; checkpoints and exported files record them.
"""

from __future__ import annotations

import cv2
import numpy as np

from tumorcls.config.data import CROPS, INTENSITIES  # the schema's choices, offered here

__all__ = [
    "CROPS",
    "INTENSITIES",
    "check_preprocess",
    "crop_to_head",
    "head_look",
    "head_mask",
    "normalise_intensity",
]

_MASK_SIDE = 256  # the head is found on a copy this large at most; the crop is taken from the full image
_MIN_HEAD_FRACTION = 0.05  # a largest bright region smaller than this is not a head: the image is kept whole
_MARGIN = 0.02  # of the crop's side, added around the head


def check_preprocess(crop: str, intensity: str) -> None:
    """ValueError with one line when either setting is unknown: for what a model file or a checkpoint declares (its
    contract); the training config's ``data.crop`` / ``data.intensity`` are checked by the schema's rules."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose one of {list(CROPS)}")
    if intensity not in INTENSITIES:
        raise ValueError(f"unknown intensity {intensity!r}; choose one of {list(INTENSITIES)}")


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def head_mask(grey: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest bright region (the head) of a uint8 grey image; all False when there is none.

    The threshold is 10% of the 99th percentile (at least 8), so it follows the image's own scale: dark T1 and
    bright FLAIR slices are both cut from their black background; a morphological opening drops JPEG noise and
    burnt-in text before the largest connected region is kept.
    """
    level = max(8.0, 0.1 * float(np.percentile(grey, 99)))
    binary = cv2.morphologyEx((grey > level).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count < 2:
        return np.zeros(grey.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def head_look(rgb: np.ndarray) -> tuple[float, float]:
    """(mean grey level of the head, share of the image the head covers), measured on a copy of at most
    256 px: what the audit reports per class, since a class that differs in look is a shortcut to learn."""
    grey = _grey(_small(rgb)[0])
    mask = head_mask(grey)
    return (float(grey[mask].mean()) if mask.any() else 0.0), float(mask.mean())


def _small(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy of at most ``_MASK_SIDE`` px (the head is found there) and its scale."""
    height, width = rgb.shape[:2]
    scale = min(1.0, _MASK_SIDE / max(height, width))
    if scale == 1.0:
        return rgb, scale
    return cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_LINEAR), scale


def _head_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the head in full-image pixels, or None when no head-sized region is found."""
    height, width = rgb.shape[:2]
    small, scale = _small(rgb)
    mask = head_mask(_grey(small))
    if mask.mean() < _MIN_HEAD_FRACTION:
        return None
    ys, xs = np.nonzero(mask)
    return (
        int(xs.min() / scale),
        int(ys.min() / scale),
        min(width, int(np.ceil((xs.max() + 1) / scale))),
        min(height, int(np.ceil((ys.max() + 1) / scale))),
    )


def crop_to_head(rgb: np.ndarray) -> np.ndarray:
    """The smallest square around the head (plus a 2% margin), padded with black where it leaves the image, so
    the later resize keeps the head's aspect ratio; the image unchanged when no head is found."""
    box = _head_box(rgb)
    if box is None:
        return rgb
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    side += max(2, round(_MARGIN * side))
    left, top = (x0 + x1 - side) // 2, (y0 + y1 - side) // 2
    height, width = rgb.shape[:2]
    pad = (max(0, -top), max(0, top + side - height), max(0, -left), max(0, left + side - width))
    if any(pad):
        rgb = cv2.copyMakeBorder(rgb, *pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        top, left = top + pad[0], left + pad[2]
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


def _lookup(rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The same 256-entry table applied to every channel, so a grey image stays grey."""
    return cv2.LUT(np.ascontiguousarray(rgb), np.clip(np.rint(table), 0, 255).astype(np.uint8))


def normalise_intensity(rgb: np.ndarray, mode: str) -> np.ndarray:
    """``stretch``: the head's 1st..99th percentile to 0..255; ``equalize``: histogram equalisation of the head
    (the black background, most of the pixels, is left out of the histogram); both monotonic, from the grey
    image, applied as one table to the three channels. Unchanged for ``none`` or an image without a head."""
    if mode == "none":
        return rgb
    grey = _grey(rgb)
    mask = head_mask(grey)
    if mask.mean() < _MIN_HEAD_FRACTION:
        return rgb
    values = grey[mask]
    levels = np.arange(256, dtype=np.float64)
    if mode == "stretch":
        lo, hi = np.percentile(values, (1, 99))
        return _lookup(rgb, (levels - lo) * 255.0 / max(hi - lo, 1.0))
    if mode == "equalize":
        cdf = np.cumsum(np.bincount(values, minlength=256)) / values.size
        return _lookup(rgb, 255.0 * cdf)
    raise ValueError(f"unknown intensity {mode!r}; choose one of {list(INTENSITIES)}")
