"""Calibration: expected calibration error, reliability diagrams, and temperature scaling stored in a checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from tumorcls.atomic_io import atomic_write
from tumorcls.models.checkpoint import CHECKPOINT_KEY, read_checkpoint
from tumorcls.probabilities import softmax

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

DEFAULT_BINS = 15


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: count, mean confidence and accuracy (NaN where a bin is empty)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first bin
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share
    of samples (torchmetrics' l1 calibration error; the same bins as :func:`reliability_bins`)."""
    probs = np.asarray(probs, dtype=np.float64)
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    if len(probs) == 0:
        return 0.0
    error = multiclass_calibration_error(
        torch.as_tensor(probs),
        torch.as_tensor(np.asarray(labels), dtype=torch.long),
        num_classes=probs.shape[1],
        n_bins=n_bins,
        norm="l1",
    )
    return float(error)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / temperature
    return float(F.cross_entropy(z, torch.as_tensor(np.asarray(labels), dtype=torch.long)))


TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (L-BFGS on log T), clipped to
    TEMPERATURE_RANGE: a tiny or uninformative validation set can push T towards 0 or infinity."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need N x C logits and N labels, got {tuple(z.shape)} and {tuple(y.shape)}")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature) or temperature <= 0:
        raise FloatingPointError(f"temperature fitting diverged (T={temperature})")
    low, high = TEMPERATURE_RANGE
    if not low <= temperature <= high:
        log.warning("fitted temperature %.4g is outside [%g, %g]; clipped", temperature, low, high)
    return float(np.clip(temperature, low, high))


def calibration_summary(
    logits: np.ndarray, labels: np.ndarray, temperature: float, n_bins: int = DEFAULT_BINS
) -> dict[str, float]:
    """NLL and ECE before (T=1) and after temperature scaling."""
    return {
        "temperature": float(temperature),
        "nll_before": negative_log_likelihood(logits, labels, 1.0),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
        "ece_before": expected_calibration_error(softmax(logits), labels, n_bins),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels, n_bins),
        "n": int(len(labels)),
        "bins": int(n_bins),
    }


def store_temperature(ckpt_path: str | Path, temperature: float, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"temperature": T, "calibration": info}`` under the checkpoint's ``tumorcls`` key, atomically."""
    ckpt = read_checkpoint(ckpt_path)
    extra = dict(ckpt.get(CHECKPOINT_KEY) or {})
    extra["temperature"] = float(temperature)
    if info is not None:
        extra["calibration"] = {str(k): (float(v) if isinstance(v, float) else v) for k, v in info.items()}
    ckpt[CHECKPOINT_KEY] = extra
    return atomic_write(ckpt_path, lambda tmp: torch.save(ckpt, tmp))


def calibrate_checkpoint(
    ckpt_path: str | Path,
    logits: np.ndarray,
    labels: np.ndarray,
    n_bins: int = DEFAULT_BINS,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit T on held-out (validation) logits of this checkpoint's model, store it in the checkpoint, and
    return the before/after NLL and ECE on those logits, after the ``context`` keys (which split, how the
    logits were computed); the checkpoint stores the same summary."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    temperature = fit_temperature(logits, labels)
    summary = {**(context or {}), **calibration_summary(logits, labels, temperature, n_bins)}
    store_temperature(ckpt_path, temperature, summary)
    log.info(
        "temperature %.4f fitted on %d images: NLL %.4f -> %.4f, ECE %.4f -> %.4f; stored in %s",
        temperature,
        summary["n"],
        summary["nll_before"],
        summary["nll_after"],
        summary["ece_before"],
        summary["ece_after"],
        ckpt_path,
    )
    return summary


def reliability_figure(
    series: Mapping[str, np.ndarray], labels: np.ndarray, n_bins: int = DEFAULT_BINS, title: str = "Reliability"
) -> Figure:
    """Accuracy against confidence per bin for each named set of probabilities, and how many samples each
    bin holds. The diagonal is perfect calibration."""
    from matplotlib.figure import Figure  # drawing code loads when a figure is drawn, not with the metrics

    fig = Figure(figsize=(6.0, 6.4), dpi=100)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    width = 1.0 / n_bins
    for k, (name, probs) in enumerate(series.items()):
        bins = reliability_bins(probs, labels, n_bins)
        filled = bins["count"] > 0
        ece = expected_calibration_error(probs, labels, n_bins)
        ax.plot(bins["confidence"][filled], bins["accuracy"][filled], "-o", ms=4, label=f"{name} (ECE {ece:.4f})")
        offset = (k - (len(series) - 1) / 2) * width / max(1, len(series))
        centres = (bins["edges"][:-1] + bins["edges"][1:]) / 2 + offset
        hist.bar(centres, bins["count"], width=width / max(1, len(series)), alpha=0.7, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel(f"confidence ({n_bins} bins)")
    hist.set_ylabel("images")
    hist.set_yscale("symlog")
    fig.tight_layout()
    return fig
