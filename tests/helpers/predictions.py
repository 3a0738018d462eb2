"""Figures recomputed from a run's predictions.csv (path, true, predicted, confidence, one column per class), so a
test can hold metrics.json to the predictions it was computed from instead of to a range any number meets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def prediction_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def accuracy_of(path: Path) -> float:
    rows = prediction_rows(path)
    return sum(row["true"] == row["predicted"] for row in rows) / len(rows)


def ece_of(path: Path, bins: int) -> float:
    """Expected calibration error of the rows, written out here (equal-width confidence bins, |accuracy - mean
    confidence| weighted by the bin's share), independently of tumorcls.evaluation.calibration."""
    rows = prediction_rows(path)
    confidence = np.array([float(row["confidence"]) for row in rows])
    correct = np.array([row["true"] == row["predicted"] for row in rows], dtype=float)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(correct[index == b].mean() - confidence[index == b].mean()) * (index == b).mean()
            for b in range(bins)
            if (index == b).any()
        )
    )
