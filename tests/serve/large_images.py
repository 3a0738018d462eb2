"""Small files that decode to many pixels (decompression bombs, scaled down to the limits a test server is given):
one per accepted format, written by the test, plus the server's own view of a file (its header)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("png", "jpeg", "tiff", "webp", "gif", "dicom-deflated", "dicom")


def _pil_bytes(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "GIF":
        image = image.convert("P")
    options = {"TIFF": {"compression": "tiff_deflate"}, "WEBP": {"lossless": True}, "JPEG": {"quality": 30}}
    image.save(buffer, format=fmt, **options.get(fmt, {}))
    return buffer.getvalue()


def dicom_bytes(grey16: np.ndarray, deflated: bool) -> bytes:
    """A single-slice 16-bit MONOCHROME2 MR DICOM, its data set deflated or not."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflated else ExplicitVRLittleEndian
    ds = FileDataset("slice.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = grey16.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = grey16.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def large_image(fmt: str, side: int) -> tuple[str, bytes]:
    """(file name, bytes) of a ``side`` x ``side`` image in ``fmt`` (one of FORMATS), mostly black."""
    grey = np.zeros((side, side), np.uint8)
    grey[side // 3 : side // 2, side // 4 : side // 2] = 200
    if fmt.startswith("dicom"):
        return "slice.dcm", dicom_bytes(grey.astype(np.uint16) * 16, deflated=fmt == "dicom-deflated")
    pil = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP", "gif": "GIF"}[fmt]
    suffix = {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)
    return f"big.{suffix}", _pil_bytes(grey, pil)


def grey16_png(side: int) -> bytes:
    """A smooth 16-bit greyscale PNG (PIL mode I;16: decoding it holds float64 copies of every pixel)."""
    yy, xx = np.mgrid[0:side, 0:side]
    pixels = ((np.sin(xx / 40.0) * np.cos(yy / 30.0) + 1) * 2000).astype(np.uint16)
    return _pil_bytes(pixels, "PNG")


def float_tiff(side: int) -> bytes:
    return _pil_bytes(np.zeros((side, side), np.float32), "TIFF")


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path
