"""Metrics derived from a confusion matrix, the text classification report, and metrics.json."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def per_class_metrics(confmat: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class (rows of ``confmat`` are true labels)."""
    cm = np.asarray(confmat, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }


def summary_metrics(confmat: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    cm = np.asarray(confmat)
    per_class = per_class_metrics(cm, class_names)
    total = int(cm.sum())
    return {
        "acc": float(np.trace(cm) / total) if total else 0.0,
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "n": total,
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
    }


def _row(name: str, width: int, precision: float, recall: float, f1: float, support: int, digits: int) -> str:
    return f"{name:>{width}}  {precision:>9.{digits}f}  {recall:>9.{digits}f}  {f1:>9.{digits}f}  {support:>9d}"


def classification_report(confmat: np.ndarray, class_names: Sequence[str], digits: int = 4) -> str:
    """A plain-text table in the familiar scikit-learn layout."""
    cm = np.asarray(confmat)
    per_class = per_class_metrics(cm, class_names)
    width = max(len(n) for n in list(class_names) + ["weighted avg"])
    head = f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"
    lines = [head, ""]
    for name, m in per_class.items():
        lines.append(_row(name, width, m["precision"], m["recall"], m["f1"], m["support"], digits))
    total = int(cm.sum())
    support = np.array([m["support"] for m in per_class.values()], dtype=float)
    acc = np.trace(cm) / total if total else 0.0
    lines += ["", f"{'accuracy':>{width}}  {'':>9}  {'':>9}  {acc:>9.{digits}f}  {total:>9d}"]
    for label, weights in (("macro avg", np.ones_like(support)), ("weighted avg", support)):
        w = weights / weights.sum() if weights.sum() else weights
        avg = {
            k: float(sum(w[i] * m[k] for i, m in enumerate(per_class.values()))) for k in ("precision", "recall", "f1")
        }
        lines.append(_row(label, width, avg["precision"], avg["recall"], avg["f1"], total, digits))
    return "\n".join(lines) + "\n"
