"""``tumorcls evaluate`` with several ``--model``: the ensemble is evaluated as one model, so its metrics are those
of the mean of the members' probabilities, and its default output folder names the ensemble."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.export_fixtures import make_checkpoint
from tests.helpers.synthetic import make_dataset
from tests.helpers.tiny_model import tiny_checkpoint
from tumorcls.cli.evaluate import default_out
from tumorcls.cli.main import main
from tumorcls.data.class_folders import class_index_map
from tumorcls.data.decode import DecodeOptions, read_image
from tumorcls.evaluation.artifacts import confusion_matrix
from tumorcls.evaluation.calibration import expected_calibration_error, store_temperature
from tumorcls.evaluation.evaluate import dataset_files
from tumorcls.evaluation.reports import summary_metrics
from tumorcls.inference.backends import load_predictor
from tumorcls.labels import CLASS_NAMES


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny trained checkpoint and an untrained one of another seed (temperature 1.5): their mean is as right
    as the first, far less confident, and unlike the second."""
    other = make_checkpoint(tmp_path_factory.mktemp("ensemble_run") / "seed1", seed=1)
    return [tiny_checkpoint(tmp_path_factory), store_temperature(other, 1.5)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ensemble_eval"), {"Testing": 6}, side=64, seed=4)


def _mean_probabilities(members: list[Path], files: list[Path]) -> np.ndarray:
    pixels = np.stack([read_image(p, DecodeOptions(size=64)) for p in files])
    return np.mean([load_predictor(m).predict_proba(pixels) for m in members], axis=0)


def test_metrics_are_those_of_the_averaged_probabilities(members: list[Path], data: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(members[0]), "--model", str(members[1]), "--data", str(data)]
    assert main([*args, "--split", "Testing", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    files, names, _ = dataset_files(data, "Testing")
    index = class_index_map(CLASS_NAMES)
    labels = np.array([index[n] for n in names])
    probs = _mean_probabilities(members, files)
    want = summary_metrics(confusion_matrix(labels, probs, len(CLASS_NAMES)), CLASS_NAMES)
    assert metrics["confusion_matrix"] == want["confusion_matrix"] and metrics["n"] == 24
    assert metrics["acc"] == pytest.approx(want["acc"], abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(want["macro_f1"], abs=1e-12)
    for name, block in want["per_class"].items():
        assert metrics["per_class"][name] == pytest.approx(block, abs=1e-12)
    assert metrics["calibration"]["ece"] == pytest.approx(expected_calibration_error(probs, labels), abs=1e-9)
    assert metrics["calibration"]["temperature"] is None and "ece_uncalibrated" not in metrics["calibration"]
    assert metrics["model"] == [str(m) for m in members] and metrics["backend"] == "ensemble"
    with open(out / "predictions.csv", newline="") as fh:
        rows = {Path(r["path"]): [float(r[n]) for n in CLASS_NAMES] for r in csv.DictReader(fh)}
    np.testing.assert_allclose([rows[f] for f in files], probs, rtol=0, atol=1e-6)  # the CSV's 6 decimals
    singles = [_mean_probabilities([m], files) for m in members]
    assert all(np.abs(probs - single).max() > 0.05 for single in singles)  # neither member alone
    single_ece = [expected_calibration_error(single, labels) for single in singles]
    assert all(abs(metrics["calibration"]["ece"] - ece) > 0.05 for ece in single_ece)


def test_default_output_folder_names_the_ensemble(members: list[Path], tmp_path: Path) -> None:
    assert default_out([str(members[1])]) == Path("eval_best")  # one model: as before
    name = default_out([str(m) for m in members]).name
    assert name.startswith("eval_ensemble2_") and len(name) == len("eval_ensemble2_") + 8
    assert default_out([str(m) for m in members[::-1]]) != default_out([str(m) for m in members])
    # the same members spelled otherwise (relative to the working folder) are the same ensemble, the same folder
    assert default_out([os.path.relpath(m) for m in members]) == default_out([str(m) for m in members])
