"""The one image decoder: file bytes -> upright RGB uint8 at full size -> resized, or one line saying why not.

Every command decodes through here (the training cache, predict/evaluate batches, export parity and
calibration, the audit, the web server), so a file gives the same pixels everywhere. PIL opens the
formats in ``formats.PIL_FORMATS`` (the EXIF orientation applied, as cv2.imread and photo viewers do);
DICOM slices, recognised by their preamble or a ``.dcm`` name, go through ``tumorcls.data.dicom``.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tumorcls.data import dicom, preprocess
from tumorcls.data.formats import (
    PIL_FORMATS,
    ImageDecodeError,
    ImageTooLargeError,
    has_dicom_preamble,
    is_dicom_name,
    is_image_path,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodeOptions",
    "ImageDecodeError",
    "ImageHeader",
    "SourceImage",
    "decode_image",
    "is_image_path",
    "load_image",
    "read_file_bytes",
    "read_header",
    "read_image",
    "prepare_rgb",
    "resize_rgb",
]

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000x8000; larger files are refused, never decoded

# DecodeOptions.max_pixels is the limit, checked from the header before decoding. PIL's own warning (past
# Image.MAX_IMAGE_PIXELS, ~89 Mpx) is silenced once here rather than per call: warnings.catch_warnings is
# not thread-safe and the audit decodes in threads. PIL still raises DecompressionBombError past twice
# that (~179 Mpx), also from the header alone; _open_pil turns it into the same "too large" error.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_INTERPOLATIONS = {
    "linear": cv2.INTER_LINEAR,  # cv2.resize's default: what the tutorial and its app use
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


@dataclass(frozen=True)
class DecodeOptions:
    size: int = 150
    interpolation: str = "linear"
    min_side: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    crop: str = "none"  # tumorcls.data.preprocess.CROPS
    intensity: str = "none"  # tumorcls.data.preprocess.INTENSITIES

    def __post_init__(self) -> None:
        preprocess.check_preprocess(self.crop, self.intensity)


@dataclass(frozen=True)
class SourceImage:
    """One decoded file at its own size, upright."""

    rgb: np.ndarray  # (H, W, 3) uint8
    format: str  # PIL's format name ("JPEG", "PNG", ...) or "DICOM"
    mode: str  # the file's PIL mode ("RGB", "L", "I;16", ...) or its DICOM photometric interpretation

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL gives it."""
        return self.rgb.shape[1], self.rgb.shape[0]


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


def _grey_to_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels


def _check_too_large(width: int, height: int, options: DecodeOptions) -> None:
    if width * height > options.max_pixels:
        raise ImageTooLargeError(f"image too large ({width}x{height} > {options.max_pixels} pixels); refused")


def _check_too_small(width: int, height: int, options: DecodeOptions) -> None:
    if min(width, height) < options.min_side:
        raise ImageDecodeError(f"image too small ({width}x{height} < {options.min_side} px)")


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (a phone photo of a film, a rotated export); a broken EXIF block is
    ignored, as by cv2.imread, rather than making the pixels unreadable."""
    with contextlib.suppress(OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):
        ImageOps.exif_transpose(img, in_place=True)
    return img


@contextlib.contextmanager
def _pil_errors() -> Iterator[None]:
    """PIL's exceptions on untrusted bytes, as one-line ImageDecodeErrors."""
    try:
        yield
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image too large ({str(exc).split(',')[0]}); refused") from None
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"not a readable image ({type(exc).__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(
            f"corrupt image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None


def _open_pil(data: bytes, options: DecodeOptions) -> Image.Image:
    """Open and fully load image bytes with the allowed PIL plugins, refusing corrupt or huge images."""
    with _pil_errors():
        img = Image.open(io.BytesIO(data), formats=PIL_FORMATS)  # reads the header only
        _check_too_large(*img.size, options)
        img.load()
    _check_too_small(*img.size, options)
    return img


def _load_pil(data: bytes, options: DecodeOptions) -> SourceImage:
    img = _open_pil(data, options)
    try:
        rgb = _to_rgb_array(_upright(img))
    except (OSError, ValueError) as exc:  # a decoder failing on conversion, after the load
        raise ImageDecodeError(f"corrupt image ({type(exc).__name__})") from None
    return SourceImage(rgb, img.format or "", img.mode)


def _load_dicom(data: bytes, options: DecodeOptions) -> SourceImage:
    ds = dicom.open_dicom(data)
    width, height = dicom.dicom_size(ds)
    _check_too_large(width, height, options)
    _check_too_small(width, height, options)
    rgb = _grey_to_rgb(dicom.dicom_pixels(ds))
    return SourceImage(np.ascontiguousarray(rgb), "DICOM", str(ds.get("PhotometricInterpretation", "")))


def load_image(data: bytes, options: DecodeOptions = DecodeOptions(), name: str | Path = "") -> SourceImage:
    """Bytes -> the upright full-size image. ``name`` (the file's name, if any) only tells a DICOM file
    without its preamble by its ``.dcm`` suffix; the bytes decide otherwise."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    if has_dicom_preamble(data) or is_dicom_name(name):
        return _load_dicom(data, options)
    return _load_pil(data, options)


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says of its pixels, read without decoding any (what a server budgets decoding by)."""

    width: int
    height: int
    channels: int  # samples per pixel as stored (1 grey or palette, 3 RGB, 4 RGBA)
    bytes_per_sample: int  # 1 for 8-bit, 2 for 16-bit, 4 for 32-bit integer or float
    format: str


_SAMPLE_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}


def read_header(data: bytes, name: str | Path = "", max_inflated: int | None = None) -> ImageHeader:
    """The size and sample layout of image bytes, from the header alone. A deflated DICOM data set is inflated
    (and thrown away) only up to ``max_inflated`` bytes to learn its size: past that it is refused."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    if has_dicom_preamble(data) or is_dicom_name(name):
        return ImageHeader(*dicom.dicom_header(data, max_inflated), "DICOM")
    with _pil_errors(), Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
        bands = len(img.getbands())
        return ImageHeader(img.width, img.height, bands, _SAMPLE_BYTES.get(img.mode, 1), img.format or "")


def resize_rgb(rgb: np.ndarray, size: int, interpolation: str = "linear") -> np.ndarray:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {sorted(_INTERPOLATIONS)}")
    if rgb.shape[:2] == (size, size):
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (size, size), interpolation=_INTERPOLATIONS[interpolation])


def prepare_rgb(rgb: np.ndarray, options: DecodeOptions) -> np.ndarray:
    """A full-size upright image -> model input: the head crop (if any), the resize, then the intensity
    normalisation (if any), so every command turns a file into the same pixels."""
    if options.crop == "head":
        rgb = preprocess.crop_to_head(rgb)
    resized = resize_rgb(rgb, options.size, options.interpolation)
    return preprocess.normalise_intensity(resized, options.intensity)


def decode_image(data: bytes, options: DecodeOptions = DecodeOptions(), name: str | Path = "") -> np.ndarray:
    """Bytes -> (size, size, 3) uint8 RGB, prepared as ``options`` say."""
    return prepare_rgb(load_image(data, options, name).rgb, options)


def read_file_bytes(path: Path) -> bytes:
    """A file's bytes; ImageDecodeError("cannot read (...)") when the system refuses them."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read ({exc.strerror or exc})") from None


def read_image(path: str | Path, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Path -> (size, size, 3) uint8 RGB; ImageDecodeError names the file and the reason."""
    path = Path(path)
    try:
        return decode_image(read_file_bytes(path), options, path.name)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{path}: {exc}") from None
