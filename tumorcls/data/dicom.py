"""DICOM slices (what MRI scanners write) to display pixels, through pydicom, the optional ``dicom`` extra.

The stored values go through the file's own display chain: Rescale Slope/Intercept (the modality LUT),
then its VOI LUT or window centre/width when it has one, else a min-max window over the slice; the result
is mapped onto 0..255 and inverted for MONOCHROME1 (where the smallest value is white). Only single
slices are taken: a multi-frame file or one without pixel data is refused in one line.
"""

from __future__ import annotations

import io
import zlib
from typing import TYPE_CHECKING

import numpy as np

from tumorcls.data.formats import ImageDecodeError, ImageTooLargeError

if TYPE_CHECKING:
    from pydicom import Dataset

INSTALL_HINT = 'DICOM files need pydicom: pip install -e ".[dicom]"'
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_INFLATE_PIECE = 2**20
_PIXELS_TAG = 0x7FE00000  # the pixel data group; a header read stops there


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parse(data: bytes, stop_before_pixels: bool, deflated_head: bytes | None = None) -> Dataset:
    """The data set of DICOM bytes; or, given ``deflated_head`` (the first inflated bytes of a deflated file), the
    elements that precede the pixel data in it."""
    try:
        import pydicom
        from pydicom.filereader import read_dataset
    except ImportError:
        raise ImageDecodeError(INSTALL_HINT) from None
    try:
        if deflated_head is not None:
            return read_dataset(io.BytesIO(deflated_head), False, True, stop_when=lambda tag, *_: tag >= _PIXELS_TAG)
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # an untrusted file: whatever the parser trips on, the file is unreadable
        raise ImageDecodeError(f"not a readable DICOM file ({_first_line(exc)})") from None


def _check_one_slice(ds: Dataset) -> None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageDecodeError(f"a multi-frame DICOM ({frames} frames); only single slices are supported")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageDecodeError("DICOM file without Rows/Columns (no image size)")


def open_dicom(data: bytes) -> Dataset:
    """Parse DICOM bytes (with or without the Part 10 preamble), refusing files that are not one slice."""
    ds = _parse(data, stop_before_pixels=False)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ImageDecodeError("DICOM file without pixel data (no image in it)")
    _check_one_slice(ds)
    return ds


def _deflated_start(data: bytes) -> int | None:
    """Where the data set starts in a Part 10 file of the Deflated Explicit VR Little Endian transfer syntax (the
    whole data set zlib-deflated, which pydicom inflates at once in memory); None for any other file."""
    if len(data) < 144 or data[128:136] != b"DICM\x02\x00\x00\x00":  # (0002,0000) the file meta group length
        return None
    end = 144 + int.from_bytes(data[140:144], "little")
    return end if _DEFLATED_UID in data[144:end] else None


def _inflated_head(data: bytes, limit: int) -> bytes | None:
    """For a deflated data set, its first inflated MB; the rest is inflated in 1 MB pieces only to count them,
    refused once past ``limit`` bytes. None for any other file."""
    start = _deflated_start(data)
    if start is None:
        return None
    inflater, pending, total, head = zlib.decompressobj(-zlib.MAX_WBITS), data[start:], 0, b""
    while True:
        try:
            piece = inflater.decompress(pending, _INFLATE_PIECE)
        except zlib.error as exc:
            raise ImageDecodeError(f"not a readable DICOM file (deflated data: {_first_line(exc)})") from None
        head, total = head or piece, total + len(piece)
        if total > limit:
            raise ImageTooLargeError(f"deflated DICOM data inflates past {limit // 2**20} MB; refused")
        pending = inflater.unconsumed_tail
        if inflater.eof or not (piece or pending):
            return head


def dicom_header(data: bytes, max_inflated: int | None = None) -> tuple[int, int, int, int]:
    """(width, height, samples per pixel, bytes per sample) from the header, no pixel decoded; a deflated data set
    is first inflated, only to count it, up to ``max_inflated`` bytes (refused past it)."""
    head = _inflated_head(data, max_inflated) if max_inflated is not None else None
    ds = _parse(data, stop_before_pixels=True, deflated_head=head)
    _check_one_slice(ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return int(ds.Columns), int(ds.Rows), samples, max(1, (int(ds.get("BitsAllocated", 8) or 8) + 7) // 8)


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
