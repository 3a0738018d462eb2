"""An ensemble of models is one model: `tumorcls predict --model a --model b` answers the mean of the members'
calibrated probabilities (any mix of backends, TTA and Grad-CAM included), members that disagree on the contract
and a file given twice are refused in one line, and --out never replaces a member."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.export_fixtures import make_checkpoint
from tests.helpers.synthetic import make_dataset
from tumorcls.cli.main import main
from tumorcls.data.decode import DecodeOptions, read_image
from tumorcls.errors import TumorclsError
from tumorcls.evaluation.calibration import store_temperature
from tumorcls.inference import EnsemblePredictor, load_model, load_predictor
from tumorcls.inference.backends import TorchPredictor
from tumorcls.inference.batching import predict_batch
from tumorcls.labels import CLASS_NAMES

RULE = "members must share class names (same order), input size and preprocessing (crop, intensity)"


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny checkpoints of different seeds; the second calibrated with temperature 1.7."""
    root = tmp_path_factory.mktemp("ensemble_runs")
    first, second = make_checkpoint(root / "seed0", seed=0), make_checkpoint(root / "seed1", seed=1)
    return [first, store_temperature(second, 1.7)]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = make_dataset(tmp_path_factory.mktemp("ensemble_images"), {"Testing": 2}, side=64, seed=3)
    return sorted((root / "Testing").rglob("*.jpg"))


@pytest.fixture(scope="module")
def onnx_member(members: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second member exported to ONNX (its temperature in the graph)."""
    from tumorcls.export.spec import spec_for
    from tumorcls.export.to_onnx import export_onnx
    from tumorcls.models.checkpoint import load_checkpoint

    model, info = load_checkpoint(members[1])
    path = tmp_path_factory.mktemp("ensemble_onnx") / "seed1.onnx"
    return export_onnx(model, path, spec_for(model, members[1], info))


def _pixels(paths: list[Path], size: int = 64) -> np.ndarray:
    return np.stack([read_image(p, DecodeOptions(size=size)) for p in paths])


def _member_probabilities(models: list[Path], pixels: np.ndarray) -> list[np.ndarray]:
    return [load_predictor(m).predict_proba(pixels) for m in models]


def test_predict_json_gives_the_mean_of_the_members_probabilities(members, images, capsys) -> None:
    args = ["predict", *map(str, images), "--model", str(members[0]), "--model", str(members[1]), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    got = np.array([[row["probabilities"][n] for n in CLASS_NAMES] for row in doc["predictions"]])
    first, second = _member_probabilities(members, _pixels([Path(r["path"]) for r in doc["predictions"]]))
    np.testing.assert_allclose(got, (first + second) / 2, rtol=0, atol=1e-6)
    assert np.abs(got - first).max() > 0.05 and np.abs(got - second).max() > 0.05  # neither member alone
    assert [r["predicted"] for r in doc["predictions"]] == [CLASS_NAMES[i] for i in got.argmax(1)]
    assert doc["backend"] == "ensemble" and doc["model"] == [str(m) for m in members]
    assert doc["temperature"] is None and json.loads(doc["metadata"]["temperatures"]) == [1.0, 1.7]
    assert [(m["model"], m["backend"], m["temperature"]) for m in doc["members"]] == [
        (str(members[0]), "checkpoint", 1.0),
        (str(members[1]), "checkpoint", 1.7),
    ]
    assert doc["class_names"] == list(CLASS_NAMES) and doc["input_size"] == 64


def test_one_model_is_that_model_and_its_output_is_unchanged(members, images, capsys) -> None:
    assert type(load_model(members[0])) is TorchPredictor and type(load_model([members[0]])) is TorchPredictor
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsemblePredictor([load_predictor(members[0])])
    assert main(["predict", str(images[0]), "--model", str(members[0]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == str(members[0]) and doc["backend"] == "checkpoint" and "members" not in doc


def test_members_of_any_backend_mix_and_tta_averages_each_members_combined_views(members, onnx_member) -> None:
    mixed = load_model([members[0], onnx_member])
    pixels = np.random.default_rng(5).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    first, second = load_predictor(members[0]), load_predictor(onnx_member)
    want = (first.predict_proba(pixels) + second.predict_proba(pixels)) / 2
    np.testing.assert_allclose(mixed.predict_proba(pixels), want, rtol=0, atol=1e-12)
    assert [m["backend"] for m in mixed.describe()["members"]] == ["checkpoint", "onnx"]
    tta = predict_batch(mixed, pixels, tta=True).probs
    want_tta = (predict_batch(first, pixels, tta=True).probs + predict_batch(second, pixels, tta=True).probs) / 2
    np.testing.assert_allclose(tta, want_tta, rtol=0, atol=1e-12)
    assert np.abs(tta - want).max() > 1e-4  # the flip changes the answer, so the views were really combined


def test_grad_cam_is_the_mean_of_the_members_heatmaps_or_a_one_line_refusal(members, onnx_member) -> None:
    pixels = np.random.default_rng(6).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    classes = [0, 3]
    maps = [load_predictor(m).grad_cam()(pixels, classes) for m in members]
    np.testing.assert_allclose(load_model(members).grad_cam()(pixels, classes), np.mean(maps, axis=0), atol=1e-6)
    with pytest.raises(TumorclsError) as refused:
        load_model([members[0], onnx_member]).grad_cam()
    assert str(refused.value) == (
        f"--cam needs a checkpoint (.ckpt) model; this one is onnx (ensemble member '{onnx_member}')"
    )


@pytest.mark.parametrize(
    ("hparams", "difference"),
    [
        ({"class_names": list(CLASS_NAMES)[::-1]}, f"class names {list(CLASS_NAMES)[::-1]}, not {list(CLASS_NAMES)}"),
        ({"size": 32}, "input size 32, not 64"),
        ({"crop": "head"}, "crop head, not none"),
        ({"intensity": "equalize"}, "intensity equalize, not none"),
    ],
    ids=["class_names", "input_size", "crop", "intensity"],
)
def test_a_member_with_another_contract_is_refused_in_one_line(
    members, images, tmp_path: Path, capsys, hparams: dict, difference: str
) -> None:
    other = make_checkpoint(tmp_path / "other", seed=2, **hparams)
    args = ["predict", str(images[0]), "--model", str(members[0]), "--model", str(members[1]), "--model", str(other)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: ensemble member '{other}' differs from '{members[0]}': {difference} ({RULE})"]


def test_out_never_replaces_any_member(members, images, tmp_path: Path, capsys) -> None:
    before = [m.read_bytes() for m in members]
    for target in members:
        for extra in ([], ["--overwrite"]):
            args = ["predict", str(images[0]), "--model", str(members[0]), "--model", str(members[1])]
            assert main([*args, "--csv", "--out", str(target), *extra]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err == [f"error: --out '{target}' is a member of the ensemble; refusing to overwrite it"]
    assert [m.read_bytes() for m in members] == before
    out = tmp_path / "predictions.csv"
    args = ["predict", str(images[0]), "--model", str(members[0]), "--model", str(members[1]), "--csv"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0 and out.read_text().startswith("path,predicted")


def test_a_file_given_twice_is_refused_in_one_line(members, images, monkeypatch, capsys) -> None:
    monkeypatch.chdir(members[0].parent)
    same = f"./{members[0].name}"  # the same file by another spelling
    args = ["predict", str(images[0]), "--model", str(members[0]), "--model", str(members[1]), "--model", same]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    reason = "is given twice; give each file once (each counts once in the mean)"
    assert err == [f"error: ensemble member '{members[0].name}' {reason}"]  # ./ is dropped, as Path drops it
