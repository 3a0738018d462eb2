"""``python export.py ckpt=[a.ckpt,b.ckpt] format=onnx out=...``: one ONNX file whose graph averages the members'
probabilities (each at its own temperature), checked against the mean of their PyTorch probabilities, with every
member in its metadata; it loads as an ordinary ONNX model; format=all (the default) is that one file. Other
formats, a missing out=, a member given twice and members that disagree on the contract are refused in one line,
before anything is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers.export_fixtures import export_cli, export_run_dir, make_checkpoint
from tumorcls.errors import ExportError
from tumorcls.evaluation.calibration import store_temperature
from tumorcls.export.run import ExportResult, export_checkpoint, torch_probabilities
from tumorcls.inference.backends import OnnxPredictor, load_model, load_predictor
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.checkpoint import load_checkpoint

RULE = "members must share class names (same order), input size and preprocessing (crop, intensity)"


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> list[Path]:
    """Two runs of different seeds (with splits.csv); the second calibrated with temperature 1.7."""
    runs = [export_run_dir(tmp_path_factory.mktemp(f"seed{seed}"), synthetic_root, seed=seed) for seed in (0, 1)]
    first, second = (run / "checkpoints" / "best.ckpt" for run in runs)
    return [first, store_temperature(second, 1.7)]


@pytest.fixture(scope="module")
def exported(members: list[Path], synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    out = tmp_path_factory.mktemp("ensemble_export") / "ensemble.onnx"
    (result,) = export_checkpoint(members, "onnx", out=out, data_root=synthetic_root, n_check=8)
    return result


def _pixels(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def _members_torch(members: list[Path], pixels: np.ndarray) -> list[np.ndarray]:
    loaded = [load_checkpoint(m) for m in members]
    return [torch_probabilities(model, pixels, info.temperature) for model, info in loaded]


def test_the_file_gives_the_mean_of_the_members_pytorch_probabilities(exported: ExportResult, members) -> None:
    pixels = _pixels(16)
    first, second = _members_torch(members, pixels)
    predictor = load_predictor(exported.path)
    assert isinstance(predictor, OnnxPredictor) and predictor.temperature is None
    got = predictor.predict_proba(pixels)
    np.testing.assert_allclose(got, (first + second) / 2, rtol=0, atol=1e-4)
    assert np.abs(got - first).max() > 0.05 and np.abs(got - second).max() > 0.05  # neither member alone
    assert exported.max_abs_diff <= 1e-4 and exported.image_source == "splits.csv of the run (8 images)"
    # the same answer as the members run as an ensemble by `tumorcls predict`
    np.testing.assert_allclose(got, load_model(members).predict_proba(pixels), rtol=0, atol=1e-4)


def test_the_metadata_names_every_member_and_the_shared_contract(exported: ExportResult, members) -> None:
    meta = {p.key: p.value for p in onnx.load(exported.path).metadata_props}
    assert json.loads(meta["class_names"]) == list(CLASS_NAMES)
    assert json.loads(meta["preprocess"]) == {"crop": "none", "intensity": "none"}
    assert json.loads(meta["input_spec"])["shape"] == ["batch", 3, 64, 64]
    assert "temperature" not in meta and "source_checkpoint" not in meta  # each member has its own
    ensemble = json.loads(meta["ensemble"])
    listed = [(m["checkpoint"], m["sha256"], m["temperature"]) for m in ensemble["members"]]
    assert listed == [
        (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest(), temperature)
        for path, temperature in zip(members, (1.0, 1.7))
    ]
    assert [m["run_dir"] for m in ensemble["members"]] == [str(p.parent.parent.resolve()) for p in members]


def test_format_all_of_an_ensemble_is_its_one_onnx_file(members: list[Path], synthetic_root: Path, tmp_path: Path):
    out = tmp_path / "all.onnx"
    (result,) = export_checkpoint(members, "all", out=out, data_root=synthetic_root, n_check=4)
    assert (result.format, result.path) == ("onnx", str(out)) and sorted(tmp_path.iterdir()) == [out]


@pytest.mark.slow  # an export.py subprocess
def test_export_py_takes_the_hydra_list_syntax(members: list[Path], synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    ckpt = f"ckpt=[{members[0]},{members[1]}]"
    done = export_cli(ckpt, "format=onnx", f"out={out}", "n_check=4", f"data_root={synthetic_root}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(f"onnx\t{out}\t")
    assert done.stdout.splitlines()[-1].endswith("\tsplits.csv of the run (4 images)")
    first, second = _members_torch(members, _pixels(4, seed=2))
    np.testing.assert_allclose(load_predictor(out).predict_proba(_pixels(4, seed=2)), (first + second) / 2, atol=1e-4)


@pytest.mark.parametrize(
    ("fmt", "out", "message"),
    [
        ("keras", "e.h5", "an ensemble of 2 checkpoints exports to ONNX only: format=onnx, not keras"),
        ("onnx_int8", "e.onnx", "an ensemble of 2 checkpoints exports to ONNX only: format=onnx, not onnx_int8"),
        ("onnx", None, "an ensemble has no run folder of its own: give the file to write, out=<name>.onnx"),
        ("all", None, "an ensemble has no run folder of its own: give the file to write, out=<name>.onnx"),
        (
            "twice",
            "e.onnx",
            "ensemble member '{0}' is given twice; give each file once (each counts once in the mean)",
        ),
    ],
    ids=["keras", "onnx_int8", "no_out", "all_no_out", "twice"],
)
def test_what_an_ensemble_cannot_export_is_refused_in_one_line(
    members: list[Path], tmp_path: Path, fmt: str, out: str | None, message: str
) -> None:
    ckpts = [*members, members[0]] if fmt == "twice" else members
    with pytest.raises(ExportError) as refused:
        export_checkpoint(ckpts, "onnx" if fmt == "twice" else fmt, out=tmp_path / out if out else None)
    assert str(refused.value) == message.format(members[0])
    assert list(tmp_path.iterdir()) == [] and not (members[0].parent.parent / "export").exists()


@pytest.mark.parametrize(
    ("hparams", "difference"),
    [({"size": 32}, "input size 32, not 64"), ({"crop": "head"}, "crop head, not none")],
    ids=["input_size", "crop"],
)
def test_a_member_with_another_contract_is_refused_in_one_line(
    members: list[Path], tmp_path: Path, hparams: dict, difference: str
) -> None:
    # in-process: export.py prints any refusal as `error: <this line>` with exit status 2
    # (tests/test_bad_input_catalogue.py runs export.py's refusals as subprocesses)
    other = make_checkpoint(tmp_path / "other", seed=2, **hparams)
    with pytest.raises(ExportError) as refused:
        export_checkpoint([members[0], other], "onnx", out=tmp_path / "e.onnx")
    assert str(refused.value) == f"ensemble member '{other}' differs from '{members[0]}': {difference} ({RULE})"
    assert not (tmp_path / "e.onnx").exists()
