"""The one writer of a test run's artifacts, shared by training's test stage and ``tumorcls evaluate``, so
that both folders hold the same files computed by the same metric code.

Files (in ``out_dir``, each written atomically):
    metrics.json               acc, macro_f1, n, per_class{precision, recall, f1, support}, confusion_matrix
                               (rows = true class), calibration{temperature, ece, nll, bins[, ece_uncalibrated,
                               nll_uncalibrated]}: how well calibrated the probabilities are on these same
                               images, then every key of ``info`` (which may not reuse a computed key: each
                               key of metrics.json has one meaning)
    classification_report.txt  the scikit-learn style table
    confusion_matrix.png       heatmap titled ``title``
    reliability_diagram.png    accuracy against confidence (and T=1 next to it when ``raw_probs`` is given)
    predictions.csv            only with ``paths``: path, true, predicted, confidence, one column per class
    curves.png                 only with a non-empty ``history``: train/val accuracy and loss per epoch
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from tumorcls.atomic_io import atomic_write_json, atomic_write_text
from tumorcls.evaluation.calibration import DEFAULT_BINS, expected_calibration_error, reliability_figure
from tumorcls.evaluation.reports import classification_report, summary_metrics


def confusion_matrix(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, argmax class), rows = true class, as int64."""
    preds = torch.as_tensor(np.asarray(probs)).argmax(dim=1)
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return multiclass_confusion_matrix(preds, target, num_classes, validate_args=False).numpy().astype(np.int64)


def _check_inputs(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> None:
    n = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != n or len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need N x {n} probabilities and N labels (N >= 1), got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= n:
        raise ValueError(f"labels must be class indices in [0, {n}), got {labels.min()}..{labels.max()}")


def calibration_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    temperature: float | None,
    raw_probs: np.ndarray | None = None,
    bins: int = DEFAULT_BINS,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """metrics.json's ``calibration`` block (ECE and NLL of these probabilities on these images, and at T = 1
    when the temperature is not 1 and the uncalibrated probabilities are known) and the named probability sets
    the reliability diagram draws."""
    block: dict[str, Any] = {
        "temperature": temperature,
        "ece": expected_calibration_error(probs, labels, bins),
        "nll": mean_nll(probs, labels),
        "bins": bins,
    }
    series = {f"model (T={temperature:.3f})" if temperature else "model": probs}
    if raw_probs is not None and temperature not in (None, 1.0):
        block["ece_uncalibrated"] = expected_calibration_error(raw_probs, labels, bins)
        block["nll_uncalibrated"] = mean_nll(raw_probs, labels)
        series = {"T=1 (uncalibrated)": raw_probs, **series}
    return block, series


def mean_nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """The mean negative log-likelihood of the true classes."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, None))))


def predictions_csv(paths: Sequence[Path], labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> str:
    """One row per image: path, true and predicted class, the confidence, and every class probability."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "true", "predicted", "confidence", *names])
    for path, y, p in zip(paths, labels, probs):
        k = int(np.argmax(p))
        writer.writerow([str(path), names[y], names[k], f"{p[k]:.6f}", *(f"{v:.6f}" for v in p)])
    return buffer.getvalue()


def write_artifacts(
    out_dir: str | Path,
    labels: np.ndarray | Sequence[int],
    probs: np.ndarray,
    class_names: Sequence[str],
    info: Mapping[str, Any] | None = None,
    *,
    title: str = "test",
    temperature: float | None = 1.0,
    raw_probs: np.ndarray | None = None,
    paths: Sequence[Path] | None = None,
    history: Sequence[Mapping[str, float]] | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Write a test run's artifacts (see the module docstring) and return the metrics written to metrics.json.

    labels: (N,) true class indices into ``class_names``; probs: (N, C) probabilities the model gives (its
    temperature applied); temperature: that temperature (None when unknown, e.g. an .h5 model);
    raw_probs: the same at T = 1, when known, for ``calibration.ece_uncalibrated`` and the diagram;
    info: extra JSON-ready keys, written after the computed ones; a key that names a computed one is refused
    (ValueError), so that no key of metrics.json means two things; paths: the image of each row, for
    predictions.csv; history: per-epoch dicts (``epoch``, ``train/acc``, ``val/loss``...) for curves.png.
    """
    out_dir = Path(out_dir)
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    names = [str(c) for c in class_names]
    _check_inputs(labels, probs, names)
    confmat = confusion_matrix(labels, probs, len(names))
    calibration, series = calibration_metrics(labels, probs, temperature, raw_probs, bins)
    computed = {**summary_metrics(confmat, names), "calibration": calibration}
    clash = sorted(set(computed) & set(info or {}))
    if clash:
        raise ValueError(f"info key(s) {clash} would replace computed metrics of the same name")
    metrics = {**computed, **(info or {})}
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "classification_report.txt", classification_report(confmat, names))
    if paths is not None:
        atomic_write_text(out_dir / "predictions.csv", predictions_csv(paths, labels, probs, names))
    from tumorcls.evaluation.plots import confusion_matrix_figure, curves_figure, save_figure  # when drawn

    save_figure(confusion_matrix_figure(confmat, names, title), out_dir / "confusion_matrix.png")
    save_figure(reliability_figure(series, labels, bins, title="Reliability"), out_dir / "reliability_diagram.png")
    if history:
        save_figure(curves_figure(list(history)), out_dir / "curves.png")
    return metrics
