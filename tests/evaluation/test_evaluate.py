"""``tumorcls evaluate``: artifacts on a Kaggle-layout split and on an alias-named folder-per-class dataset,
calibration numbers, and one-line errors for unknown class folders and a missing --split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.head_images import PREPROCESS, head_files, preprocessed_checkpoint
from tests.helpers.predictions import accuracy_of, ece_of
from tests.helpers.synthetic import make_dataset
from tests.helpers.tiny_model import tiny_checkpoint
from tumorcls.cli.main import main
from tumorcls.data.decode import DecodeOptions, read_image
from tumorcls.evaluation.evaluate import evaluate
from tumorcls.inference.backends import load_predictor
from tumorcls.labels import CLASS_NAMES

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("eval_data"), {"Training": 1, "Testing": 5}, side=64, seed=11)


def test_evaluate_kaggle_split_writes_every_artifact(ckpt: Path, kaggle_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(ckpt), "--data", str(kaggle_root), "--split", "Testing", "--out", str(out)])
    assert rc == 0
    for name in ("metrics.json", "classification_report.txt", "predictions.csv"):
        assert (out / name).is_file(), name
    for png in ("confusion_matrix.png", "reliability_diagram.png"):
        assert (out / png).read_bytes()[:8] == PNG
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 20 and sum(map(sum, metrics["confusion_matrix"])) == 20
    assert [row and sum(row) for row in metrics["confusion_matrix"]] == [5, 5, 5, 5]
    assert metrics["acc"] >= 0.9 and set(metrics["per_class"]) == set(CLASS_NAMES)
    cal = metrics["calibration"]
    assert cal["temperature"] == 1.0 and cal["bins"] == 15
    assert cal["ece"] == pytest.approx(ece_of(out / "predictions.csv", bins=15), abs=1e-4)  # the rows' own ECE
    assert metrics["acc"] == pytest.approx(accuracy_of(out / "predictions.csv"))
    assert "ece_uncalibrated" not in cal  # T = 1: nothing to compare
    assert metrics["data"] == str(kaggle_root / "Testing") and metrics["failed_files"] == []
    assert f"{metrics['acc']:.4f}" in (out / "classification_report.txt").read_text()
    summary = capsys.readouterr().out
    assert f"20 images: accuracy {metrics['acc']:.4f}" in summary


def test_alias_folder_names_and_unreadable_files(ckpt: Path, kaggle_root: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "other_dataset"
    for ours, theirs in zip(CLASS_NAMES, ("glioma", "notumor", "Meningioma", "pituitary")):
        shutil.copytree(kaggle_root / "Testing" / ours, data / theirs)
    (data / "glioma" / "broken.jpg").write_bytes(b"garbage")
    (data / "glioma" / "README.txt").write_text("not an image")
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(ckpt), "--data", str(data), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {data / 'glioma' / 'broken.jpg'}: not a readable image" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 20 and metrics["failed_files"] == [str(data / "glioma" / "broken.jpg")]
    # rows follow the model's label order whatever the folders are called
    assert np.diag(metrics["confusion_matrix"]).sum() == round(metrics["acc"] * 20)
    assert [sum(r) for r in metrics["confusion_matrix"]] == [5, 5, 5, 5]


def test_temperature_is_used_and_the_uncalibrated_ece_reported(ckpt: Path, kaggle_root: Path, tmp_path: Path) -> None:
    from tumorcls.evaluation.calibration import store_temperature
    from tumorcls.export.spec import spec_for
    from tumorcls.export.to_onnx import export_onnx
    from tumorcls.models.checkpoint import load_checkpoint

    hot = tmp_path / "hot.ckpt"
    shutil.copy(ckpt, hot)
    store_temperature(hot, 100.0)  # the tiny model is very sure: a large T shows
    model, info = load_checkpoint(hot)
    onnx_path = export_onnx(model, tmp_path / "hot.onnx", spec_for(model, hot, info))
    results = {}
    for name, model_file in (("ckpt", hot), ("onnx", onnx_path), ("plain", ckpt)):
        out = tmp_path / name
        args = ["evaluate", "--model", str(model_file), "--data", str(kaggle_root), "--split", "Testing"]
        assert main([*args, "--out", str(out)]) == 0
        results[name] = json.loads((out / "metrics.json").read_text())["calibration"]
    assert results["ckpt"]["temperature"] == 100.0 and results["onnx"]["temperature"] == 100.0
    # at T = 1 the checkpoint with T = 3 is the plain model; ONNX (softmax already applied) recovers it too
    assert results["ckpt"]["ece_uncalibrated"] == pytest.approx(results["plain"]["ece"], abs=1e-6)
    assert results["onnx"]["ece_uncalibrated"] == pytest.approx(results["plain"]["ece"], abs=1e-3)
    assert results["onnx"]["ece"] == pytest.approx(results["ckpt"]["ece"], abs=1e-3)
    assert results["ckpt"]["ece"] > results["plain"]["ece"] + 0.05  # softened probabilities, same accuracy
    # softened, the confidences fall in several bins: the ECE is that of the rows written, recomputed here
    assert results["ckpt"]["ece"] == pytest.approx(ece_of(tmp_path / "ckpt" / "predictions.csv", bins=15), abs=1e-4)


def test_unknown_class_folder_is_one_clear_line(ckpt: Path, kaggle_root: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "zoo"
    shutil.copytree(kaggle_root / "Testing" / "glioma_tumor", data / "glioma")
    shutil.copytree(kaggle_root / "Testing" / "no_tumor", data / "cats")
    rc = main(["evaluate", "--model", str(ckpt), "--data", str(data), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: unknown class folder(s) ['cats']; each folder must name one class:")
    assert not (tmp_path / "o").exists()


def test_kaggle_root_without_split_and_bad_split(ckpt: Path, kaggle_root: Path, tmp_path: Path, capsys) -> None:
    rc = main(["evaluate", "--model", str(ckpt), "--data", str(kaggle_root), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (
        f"error: '{kaggle_root}' holds ['Testing', 'Training'], not class folders; pick a split with --split Testing"
    )
    rc = main(["evaluate", "--model", str(ckpt), "--data", str(kaggle_root), "--split", "Validation"])
    assert rc == 2 and "split folder" in capsys.readouterr().err


def test_missing_model_file_exits_2(kaggle_root: Path, tmp_path: Path, capsys) -> None:
    rc = main(["evaluate", "--model", str(tmp_path / "x.onnx"), "--data", str(kaggle_root), "--split", "Testing"])
    assert rc == 2 and capsys.readouterr().err.strip() == f"error: model file not found: '{tmp_path / 'x.onnx'}'"


def test_evaluate_decodes_with_the_models_preprocessing(tmp_path: Path) -> None:
    predictor = load_predictor(preprocessed_checkpoint(tmp_path / "run", size=64))
    files = head_files(tmp_path / "heads", n=4)
    result = evaluate(predictor, files, list(CLASS_NAMES), batch_size=3)
    options = DecodeOptions(size=64, **PREPROCESS)
    images = np.stack([read_image(p, options) for p in files])
    # the same batches as evaluate's (3 + 1): a batch's size changes the convolutions' rounding by ~1e-6
    expected = np.concatenate([predictor.predict_proba(images[:3]), predictor.predict_proba(images[3:])])
    np.testing.assert_allclose(result["probs"], expected, atol=1e-6)
    raw = predictor.predict_proba(np.stack([read_image(p, DecodeOptions(size=64)) for p in files]))
    assert np.abs(result["probs"] - raw).max() > 1e-2  # the raw resize would have given other answers
