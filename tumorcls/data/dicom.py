"""DICOM slices (what MRI scanners write) to display pixels, through pydicom, the optional ``dicom`` extra.

The stored values go through the file's own display chain: Rescale Slope/Intercept (the modality LUT),
then its VOI LUT or window centre/width when it has one, else a min-max window over the slice; the result
is mapped onto 0..255 and inverted for MONOCHROME1 (where the smallest value is white). Only single
slices are taken: a multi-frame file or one without pixel data is refused in one line.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from tumorcls.data.formats import ImageDecodeError

if TYPE_CHECKING:
    from pydicom import Dataset

INSTALL_HINT = 'DICOM files need pydicom: pip install -e ".[dicom]"'
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_dicom(data: bytes) -> Dataset:
    """Parse DICOM bytes (with or without the Part 10 preamble), refusing files that are not one slice."""
    try:
        import pydicom
    except ImportError:
        raise ImageDecodeError(INSTALL_HINT) from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # an untrusted file: whatever the parser trips on, the file is unreadable
        raise ImageDecodeError(f"not a readable DICOM file ({_first_line(exc)})") from None
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ImageDecodeError("DICOM file without pixel data (no image in it)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageDecodeError(f"a multi-frame DICOM ({frames} frames); only single slices are supported")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageDecodeError("DICOM file without Rows/Columns (no image size)")
    return ds


def dicom_size(ds: Dataset) -> tuple[int, int]:
    """(width, height) from the header, before any pixel is decoded."""
    return int(ds.Columns), int(ds.Rows)


def _to_byte_range(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of [lo, hi] onto 0..255 (clipped, rounded); a flat range gives black."""
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _has_voi_lut(ds: Dataset) -> bool:
    """A usable VOI LUT, which apply_voi_lut prefers to the window."""
    lut = ds.get("VOILUTSequence")
    return bool(lut) and None not in (lut[0].get("LUTDescriptor"), lut[0].get("LUTData"))


def _has_window(ds: Dataset) -> bool:
    return None not in (ds.get("WindowCenter"), ds.get("WindowWidth"))


def _voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The range apply_voi_lut maps onto: the VOI LUT's own entries, or the window's output range."""
    from pydicom.pixels import apply_voi_lut

    if _has_voi_lut(ds):
        entries, first_map = ds.VOILUTSequence[0].LUTDescriptor[:2]
        lut = apply_voi_lut(np.arange(first_map, first_map + (entries or 2**16), dtype=np.int64), ds)
        return float(lut.min()), float(lut.max())
    with np.errstate(over="ignore"):  # a sigmoid window overflows to its limits, as meant
        bounds = apply_voi_lut(np.array([-1e30, 1e30]), ds)  # below and above the window: its two ends
    return float(bounds[0]), float(bounds[1])


def _grey_to_bytes(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(stored, ds)
    if _has_voi_lut(ds) or _has_window(ds):
        if _has_voi_lut(ds):  # a LUT is indexed by integers
            values = np.rint(values).astype(np.int64)
        lo, hi = _voi_output_range(ds)
        grey = _to_byte_range(apply_voi_lut(values, ds), lo, hi)
    else:
        grey = _to_byte_range(values, float(values.min()), float(values.max()))
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        grey = 255 - grey
    return grey


def dicom_pixels(ds: Dataset) -> np.ndarray:
    """The slice as display bytes: (H, W) uint8 for a greyscale slice, (H, W, 3) uint8 for a colour one."""
    try:
        stored = ds.pixel_array
    except Exception as exc:  # e.g. a compressed transfer syntax without its decoder, or a short buffer
        raise ImageDecodeError(f"cannot decode the DICOM pixel data ({_first_line(exc)})") from None
    try:
        if stored.ndim == 3:  # colour (RGB, or YBR converted to RGB by pydicom)
            if stored.dtype == np.uint8:
                return np.ascontiguousarray(stored)
            return _to_byte_range(stored, float(stored.min()), float(stored.max()))
        return _grey_to_bytes(stored, ds)
    except (ValueError, NotImplementedError, AttributeError, KeyError, TypeError) as exc:
        raise ImageDecodeError(f"unusable DICOM display settings ({_first_line(exc)})") from None
