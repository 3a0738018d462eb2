"""Fixtures of the server tests: a tiny trained checkpoint and its ONNX export, image files of every accepted
kind (written by the test), and what `tumorcls predict`'s code path says about each file."""

from __future__ import annotations

import importlib.util
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import synthetic_image
from tests.tiny_model import tiny_checkpoint
from tumorcls.inference import load_predictor
from tumorcls.inference.predict import run_predictions

SERVE_EXTRA = ("gradio", "fastapi", "uvicorn", "multipart")
MISSING = [name for name in SERVE_EXTRA if importlib.util.find_spec(name) is None]
if MISSING:  # the server tests need the serve extra (pip install -e ".[serve]"); without it they are not collected
    collect_ignore_glob = ["test_*.py"]


TEMPERATURE = 40.0  # the tiny model is sure of everything; at this temperature its probabilities say something


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny checkpoint, copied into a run folder and calibrated with TEMPERATURE."""
    from tumorcls.evaluation.calibration import store_temperature

    path = tmp_path_factory.mktemp("serve_run") / "checkpoints" / "best.ckpt"
    path.parent.mkdir()
    shutil.copyfile(tiny_checkpoint(tmp_path_factory), path)
    return store_temperature(path, TEMPERATURE)


@pytest.fixture(scope="session")
def onnx_model(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tumorcls.export.spec import spec_for
    from tumorcls.export.to_onnx import export_onnx
    from tumorcls.models.checkpoint import load_classifier

    model = load_classifier(ckpt)
    return export_onnx(model, tmp_path_factory.mktemp("serve_onnx") / "tiny.onnx", spec_for(model, ckpt))


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


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per kind: JPEG and PNG scans of different classes, and junk."""
    folder = tmp_path_factory.mktemp("serve_images")
    files = {
        "jpeg": write_image(folder / "scan_mening.jpg", scan_like(2, 0, seed=1)),
        "png": write_image(folder / "scan_glioma.png", scan_like(0, 2, seed=2)),
        "png2": write_image(folder / "scan_pituitary.png", scan_like(3, 0, seed=3)),
    }
    junk = folder / "junk.jpg"
    junk.write_bytes(b"this is not an image\n" * 10)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(files["jpeg"].read_bytes()[:400])
    return {**files, "junk": junk, "truncated": truncated}


def encoded(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def predict_path_probabilities(model: Path, files: list[Path], tta: bool = False) -> dict[str, np.ndarray]:
    """What `tumorcls predict` computes for these files (its run_predictions), by file name."""
    run = run_predictions(load_predictor(model), files, tta=tta)
    assert not run.errors, run.errors
    return {p.path.name: p.probabilities for p in run.predictions}
