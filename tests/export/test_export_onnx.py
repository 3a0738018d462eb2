"""ONNX export: in-graph preprocessing, dynamic batch, metadata, parity with PyTorch (or no file at
all), atomic replace-only-when-asked, one-line errors, and export.py run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.helpers.export_fixtures import REPO, export_cli, export_run_dir
from tumorcls.config.rules import ConfigError
from tumorcls.errors import CheckpointError, ExportError
from tumorcls.export import run as export_run
from tumorcls.export.run import export_checkpoint, torch_probabilities
from tumorcls.inference.backends import load_predictor
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    return export_run_dir(tmp_path_factory.mktemp("run"), synthetic_root)


@pytest.fixture(scope="module")
def exported(run_dir: Path, synthetic_root: Path) -> export_run.ExportResult:
    (result,) = export_checkpoint(run_dir / "checkpoints/best.ckpt", "onnx", data_root=synthetic_root, n_check=8)
    return result


def _pixels(n: int, size: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_default_path_checker_opset_and_metadata(run_dir: Path, exported: export_run.ExportResult) -> None:
    path = run_dir / "export" / "model.onnx"
    assert Path(exported.path) == path and exported.size_bytes == path.stat().st_size > 0
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == list(CLASS_NAMES)
    assert json.loads(meta["preprocess"]) == {"crop": "none", "intensity": "none"}
    spec = json.loads(meta["input_spec"])
    assert spec["shape"] == ["batch", 3, 64, 64] and spec["channel_order"] == "RGB" and spec["value_range"] == [0, 255]
    run = json.loads(meta["training_run"])
    assert run["checkpoint"] == str((run_dir / "checkpoints/best.ckpt").resolve()) and len(run["sha256"]) == 64
    assert run["run_dir"] == str(run_dir.resolve()) and run["global_step"] == 1
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 64, 64]


def test_parity_was_checked_on_the_runs_splits(exported: export_run.ExportResult) -> None:
    assert exported.image_source == "splits.csv of the run (8 images)" and exported.n_images == 8
    assert set(exported.details) == {"batch_n", "batch_1"}
    assert exported.max_abs_diff <= 1e-4


@pytest.mark.parametrize("batch", [1, 7])
def test_dynamic_batch_matches_pytorch(run_dir: Path, exported: export_run.ExportResult, batch: int) -> None:
    model = load_checkpoint(run_dir / "checkpoints/best.ckpt")[0]
    pixels = _pixels(batch)
    p_onnx = load_predictor(exported.path).predict_proba(pixels)
    p_torch = torch_probabilities(model, pixels)
    assert p_onnx.shape == (batch, 4)
    np.testing.assert_allclose(p_onnx.sum(1), 1.0, atol=1e-5)
    assert np.abs(p_onnx - p_torch).max() <= 1e-4
    # the outputs are not near-uniform, so the parity above is a real check
    assert p_torch.max() - p_torch.min() > 0.2


def test_preprocessing_is_in_the_graph(run_dir: Path, exported: export_run.ExportResult) -> None:
    """Raw 0..255 pixels in == the PyTorch net on (x/255 - mean)/std, softmaxed."""
    model = load_checkpoint(run_dir / "checkpoints/best.ckpt")[0]
    pixels = _pixels(3, seed=5)
    mean = torch.tensor(model.hparams.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.hparams.std).view(1, 3, 1, 1)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        expected = torch.softmax(model.net((x / 255 - mean) / std), 1).numpy()
    got = load_predictor(exported.path).predict_proba(pixels)
    assert np.abs(got - expected).max() <= 1e-4


def test_onnx_predictor_reads_the_export(exported: export_run.ExportResult, run_dir: Path) -> None:
    predictor = load_predictor(exported.path)
    assert predictor.class_names == list(CLASS_NAMES) and predictor.input_size == 64
    assert predictor.temperature == 1.0
    pixels = _pixels(2, seed=9)
    expected = torch_probabilities(load_checkpoint(run_dir / "checkpoints/best.ckpt")[0], pixels)
    assert np.abs(predictor.predict_proba(pixels) - expected).max() <= 1e-4


def test_existing_file_is_kept_unless_overwrite(run_dir: Path, tmp_path: Path, synthetic_root: Path) -> None:
    ckpt = run_dir / "checkpoints/best.ckpt"
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    with pytest.raises(ExportError, match=r"exists; pass overwrite=true to replace it"):
        export_checkpoint(ckpt, "onnx", out=out, n_check=2)
    assert out.read_bytes() == b"old"
    (result,) = export_checkpoint(ckpt, "onnx", out=out, overwrite=True, n_check=2, data_root=synthetic_root)
    assert result.image_source == "splits.csv of the run (2 images)"
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others, unlike mkstemp's 0600
    assert onnx.load(str(out)).graph.input[0].name == "image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left behind


def test_failed_parity_writes_nothing(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = export_run.torch_probabilities
    monkeypatch.setattr(export_run, "torch_probabilities", lambda *args: real(*args) + np.float32(1e-3))
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"the ONNX file does not reproduce the PyTorch model: max \|dp\| 1\.0+e-03"):
        export_checkpoint(run_dir / "checkpoints/best.ckpt", "onnx", out=out, n_check=2)
    assert list(tmp_path.iterdir()) == []


def test_synthetic_pixels_when_the_run_has_no_images(tmp_path: Path, run_dir: Path) -> None:
    lone = tmp_path / "lone.ckpt"  # not inside a run folder: no splits.csv beside it
    lone.write_bytes((run_dir / "checkpoints/best.ckpt").read_bytes())
    (result,) = export_checkpoint(lone, "onnx", n_check=3)
    assert result.image_source == "synthetic pixels (3 images)" and result.max_abs_diff <= 1e-4
    assert Path(result.path) == tmp_path / "export" / "model.onnx"


def test_given_images_are_used(run_dir: Path, synthetic_root: Path, tmp_path: Path) -> None:
    folder = synthetic_root / "Testing" / "no_tumor"
    out = tmp_path / "given.onnx"
    (result,) = export_checkpoint(run_dir / "checkpoints/best.ckpt", "onnx", out=out, images=[folder], n_check=3)
    assert result.image_source == "given images (3 images)"
    with pytest.raises(ExportError, match="parity image '.*nothing.jpg' not found"):
        export_checkpoint(
            run_dir / "checkpoints/best.ckpt", "onnx", out=tmp_path / "b.onnx", images=[tmp_path / "nothing.jpg"]
        )


def test_bad_inputs_are_one_line_errors(tmp_path: Path, run_dir: Path) -> None:
    ckpt = run_dir / "checkpoints/best.ckpt"
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        export_checkpoint(tmp_path / "missing.ckpt", "onnx")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 1.0}}, foreign)
    with pytest.raises(CheckpointError, match="is not a tumorcls checkpoint"):
        export_checkpoint(foreign, "onnx")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .* safely"):
        export_checkpoint(text, "onnx")
    with pytest.raises(ConfigError, match=r"^config: format must be one of \['onnx', 'keras', 'onnx_int8', 'all'\]"):
        export_checkpoint(ckpt, "tflite")
    with pytest.raises(ExportError, match=r"must end in \.onnx for format=onnx"):
        export_checkpoint(ckpt, "onnx", out=tmp_path / "m.h5")
    with pytest.raises(ConfigError, match=r"^config: opset must be an integer >= 17, got 13$"):
        export_checkpoint(ckpt, "onnx", opset=13)
    with pytest.raises(ExportError, match="no checkpoint given"):
        export_checkpoint(None, "onnx")
    assert not (tmp_path / "export").exists()


def test_keras_without_tensorflow_is_one_line(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes "import tensorflow" raise ImportError
    with pytest.raises(ExportError, match=r"needs TensorFlow and tf_keras \(tensorflow is missing\)"):
        export_checkpoint(run_dir / "checkpoints/best.ckpt", "keras", out=run_dir / "never.h5")
    assert not (run_dir / "never.h5").exists()


@pytest.mark.slow  # a fresh interpreter loading the training and export stack
def test_training_and_export_code_do_not_import_tensorflow() -> None:
    code = (
        "import sys, tumorcls.training.run, tumorcls.export.run, tumorcls.export.to_keras, tumorcls.inference.backends;"
        "sys.exit(int('tensorflow' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 0


@pytest.mark.slow  # export.py subprocesses
def test_export_py_cli(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    ok = export_cli(f"ckpt={run_dir / 'checkpoints/best.ckpt'}", "format=onnx", f"out={out}", "n_check=2")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.splitlines()[-1].startswith(f"onnx\t{out}\t") and out.is_file()
    assert not (REPO / "outputs").exists()  # Hydra writes no run folder of its own
    again = export_cli(f"ckpt={run_dir / 'checkpoints/best.ckpt'}", "format=onnx", f"out={out}")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines() == [f"error: '{out}' exists; pass overwrite=true to replace it"]
