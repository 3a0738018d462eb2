"""Probabilities from a classifier's logits, in numpy: the one softmax that serving (inference), calibration
and evaluation share, kept here at the bottom of the import graph so that none of them imports another."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def uncalibrated(probs: np.ndarray, temperature: float | None) -> np.ndarray | None:
    """softmax(logits) from softmax(logits / T): log p is logits / T up to a per-row constant. None when the
    temperature is unknown."""
    if temperature is None:
        return None
    if temperature == 1.0:
        return probs
    return softmax(np.log(np.clip(probs, 1e-300, None)) * temperature)
