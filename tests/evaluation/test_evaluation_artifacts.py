"""The one artifact writer (evaluation.artifacts.write_artifacts), torchmetrics' ECE against the reliability
bins the diagram draws, and figures made without touching matplotlib's global backend."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tumorcls.evaluation.artifacts import write_artifacts
from tumorcls.evaluation.calibration import expected_calibration_error, reliability_bins
from tumorcls.probabilities import softmax

PNG = b"\x89PNG\r\n\x1a\n"
NAMES = ["glioma_tumor", "no_tumor", "meningioma_tumor", "pituitary_tumor"]


def _ece_from_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    bins = reliability_bins(probs, labels, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled]) * bins["count"][filled]
    return float(gaps.sum() / bins["count"].sum())


@pytest.mark.parametrize("seed", range(5))
def test_torchmetrics_ece_equals_the_reliability_bins(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c, n_bins = int(rng.integers(1, 400)), int(rng.integers(2, 7)), int(rng.integers(1, 25))
    probs = softmax(rng.normal(size=(n, c)) * rng.uniform(0.2, 6.0))
    labels = rng.integers(0, c, n)
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(
        _ece_from_bins(probs, labels, n_bins), abs=1e-6
    )


def _synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 5)
    logits = rng.normal(size=(20, 4)) + 3.0 * np.eye(4)[labels]
    return labels, logits, softmax(logits, 2.0)


def test_write_artifacts_files_and_keys(tmp_path: Path) -> None:
    labels, logits, probs = _synthetic()
    paths = [Path(f"img_{i}.jpg") for i in range(20)]
    history = [{"epoch": 0, "train/acc": 0.5, "val/acc": 0.6, "train/loss": 1.2, "val/loss": 1.1}]
    metrics = write_artifacts(
        tmp_path, labels, probs, NAMES, {"protocol": "official", "n_extra": 3},
        temperature=2.0, raw_probs=softmax(logits), paths=paths, history=history, bins=10,
    )  # fmt: skip
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    predicted = probs.argmax(1)
    expected_cm = np.zeros((4, 4), dtype=int)
    np.add.at(expected_cm, (labels, predicted), 1)
    assert metrics["confusion_matrix"] == expected_cm.tolist() and metrics["n"] == 20
    assert metrics["acc"] == pytest.approx(np.mean(predicted == labels))
    assert list(metrics["per_class"]) == NAMES and metrics["protocol"] == "official" and metrics["n_extra"] == 3
    cal = metrics["calibration"]
    assert cal["temperature"] == 2.0 and cal["bins"] == 10
    assert cal["ece"] == pytest.approx(expected_calibration_error(probs, labels, 10))
    assert cal["ece_uncalibrated"] == pytest.approx(expected_calibration_error(softmax(logits), labels, 10))
    assert cal["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(20), labels])))
    assert cal["nll_uncalibrated"] == pytest.approx(-np.mean(np.log(softmax(logits)[np.arange(20), labels])))
    for png in ("confusion_matrix.png", "reliability_diagram.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG, png
    rows = list(csv.reader((tmp_path / "predictions.csv").open()))
    assert rows[0] == ["path", "true", "predicted", "confidence", *NAMES] and len(rows) == 21
    assert rows[1][:3] == ["img_0.jpg", NAMES[0], NAMES[predicted[0]]]
    assert f"{metrics['acc']:.4f}" in (tmp_path / "classification_report.txt").read_text()


def test_optional_files_and_one_meaning_per_key(tmp_path: Path) -> None:
    labels, _, probs = _synthetic(1)
    fit = {"split": "val", "temperature": 1.3, "n": 12, "ece_before": 0.2}
    with pytest.raises(ValueError, match=r"^info key\(s\) \['acc', 'calibration'\] would replace computed metrics"):
        write_artifacts(tmp_path, labels, probs, NAMES, {"calibration": fit, "acc": 1.0}, temperature=1.3)
    assert not list(tmp_path.iterdir())  # refused before anything is written
    metrics = write_artifacts(tmp_path, labels, probs, NAMES, {"temperature_fit": fit}, temperature=1.3, history=[])
    assert metrics["temperature_fit"] == fit  # training's validation fit, next to the evaluated split's block
    assert metrics["calibration"]["ece"] == pytest.approx(expected_calibration_error(probs, labels))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classification_report.txt",
        "confusion_matrix.png",
        "metrics.json",
        "reliability_diagram.png",
    ]


def test_mismatched_inputs_are_refused(tmp_path: Path) -> None:
    labels, _, probs = _synthetic()
    with pytest.raises(ValueError, match=r"need N x 3 probabilities and N labels"):
        write_artifacts(tmp_path, labels, probs, NAMES[:3])
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 4\)"):
        write_artifacts(tmp_path, labels + 1, probs, NAMES)


@pytest.mark.slow  # fresh interpreters loading the figure stack
def test_importing_the_figure_modules_keeps_the_matplotlib_backend() -> None:
    code = (
        "import matplotlib; matplotlib.use('svg');"
        "import tumorcls.evaluation.plots, tumorcls.evaluation.calibration, tumorcls.evaluation.artifacts;"
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"
