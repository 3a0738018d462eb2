"""Fixtures of the server tests: a tiny trained checkpoint and its ONNX export, image files of every accepted
kind (written by the test), and what `tumorcls predict`'s code path says about each file."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from tests.helpers.serve_inputs import TEMPERATURE, scan_like, write_image
from tests.helpers.tiny_model import tiny_checkpoint

SERVE_EXTRA = ("gradio", "fastapi", "uvicorn", "multipart", "prometheus_client")
MISSING = [name for name in SERVE_EXTRA if importlib.util.find_spec(name) is None]
if MISSING:  # without the serve extra the server tests are not collected; test_serve_extra.py says so, once
    collect_ignore = [p.name for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_serve_extra.py"]
LOCAL = "http://localhost"  # the base URL of in-process clients: a Host the server answers


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
    from tumorcls.models.checkpoint import load_checkpoint

    model, info = load_checkpoint(ckpt)
    return export_onnx(model, tmp_path_factory.mktemp("serve_onnx") / "tiny.onnx", spec_for(model, ckpt, info))


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
