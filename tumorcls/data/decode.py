"""Decode one image file to an RGB uint8 array, whatever its mode, or say in one line why not."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 64_000_000  # ~8000x8000; larger files are refused, never decoded

# DecodeOptions.max_pixels is the limit, checked from the header before decoding. PIL's own warning (past
# Image.MAX_IMAGE_PIXELS, ~89 Mpx) is silenced once here rather than per call: warnings.catch_warnings is
# not thread-safe and the audit decodes in threads. PIL still raises DecompressionBombError past twice
# that (~179 Mpx), also from the header alone; open_image turns it into the same "too large" error.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_INTERPOLATIONS = {
    "linear": cv2.INTER_LINEAR,  # cv2.resize's default: what the tutorial and its app use
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


class ImageDecodeError(ValueError):
    """A file that is not a usable image; the message is one line naming the reason."""


@dataclass(frozen=True)
class DecodeOptions:
    size: int = 150
    interpolation: str = "linear"
    min_side: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode to HxWx3 uint8 RGB. 16-bit and float images are rescaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))  # MRI background is black
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def open_image(data: bytes, options: DecodeOptions = DecodeOptions()) -> Image.Image:
    """Open and fully load image bytes, refusing empty, corrupt, tiny or huge images."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        width, height = img.size
        if width * height > options.max_pixels:
            raise ImageDecodeError(f"image too large ({width}x{height} > {options.max_pixels} pixels); refused")
        img.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large ({str(exc).split(',')[0]}); refused") from None
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"not a readable image ({type(exc).__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(
            f"corrupt image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if min(img.size) < options.min_side:
        raise ImageDecodeError(f"image too small ({img.size[0]}x{img.size[1]} < {options.min_side} px)")
    return img


def resize_rgb(rgb: np.ndarray, size: int, interpolation: str = "linear") -> np.ndarray:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {sorted(_INTERPOLATIONS)}")
    if rgb.shape[:2] == (size, size):
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (size, size), interpolation=_INTERPOLATIONS[interpolation])


def decode_image(data: bytes, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Bytes -> (size, size, 3) uint8 RGB."""
    return resize_rgb(_to_rgb_array(open_image(data, options)), options.size, options.interpolation)


def read_image(path: str | Path, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Path -> (size, size, 3) uint8 RGB; ImageDecodeError names the file and the reason."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return decode_image(data, options)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{path}: {exc}") from None
