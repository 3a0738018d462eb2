"""Inputs of the server tests: synthetic scans the tiny model is unsure about, image and DICOM files written by
the test, and what `tumorcls predict`'s code path says about each file (the reference the server must match)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.synthetic import synthetic_image
from tumorcls.inference import load_predictor
from tumorcls.inference.predict import run_predictions

TEMPERATURE = 40.0  # the tiny model is sure of everything; at this temperature its probabilities say something


def scan_like(label: int, other: int, seed: int, side: int = 200) -> np.ndarray:
    """A synthetic slice larger than the model's input (resized as a real scan is) bearing the marks of two
    classes, so that the tiny model is unsure and parity is checked on probabilities that are not 0 or 1."""
    rng = np.random.default_rng(seed)
    mixed = 0.6 * synthetic_image(label, rng, side).astype(np.float64) + 0.4 * synthetic_image(other, rng, side)
    return mixed.astype(np.uint8)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")
    return path


def write_dicom(path: Path, grey16: np.ndarray, pixels: bool = True) -> Path:
    """A single-slice 16-bit MONOCHROME2 MR DICOM file with a window (or without pixel data)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = grey16.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = 1200, 2000
    if pixels:
        ds.PixelData = grey16.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def encoded(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def predict_path_probabilities(model: Path, files: list[Path], tta: bool = False) -> dict[str, np.ndarray]:
    """What `tumorcls predict` computes for these files (its run_predictions), by file name."""
    run = run_predictions(load_predictor(model), files, tta=tta)
    assert not run.errors, run.errors
    return {p.path.name: p.probabilities for p in run.predictions}
