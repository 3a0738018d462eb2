"""Temperature scaling of a checkpoint on held-out labelled images (training's validation split), through the one
evaluation loop: the logits are those the checkpoint backend computes, in the inference the model is configured
for (flip TTA or not), so the temperature is fitted on the very numbers it will later divide. The summary is
metrics.json's ``temperature_fit`` block and is stored in the checkpoint next to the temperature."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.evaluation.calibration import DEFAULT_BINS, calibrate_checkpoint
from tumorcls.evaluation.loop import PLAIN, TTA, LabelledBatch, checkpoint_predictor, score

log = logging.getLogger(__name__)


def fit_checkpoint_temperature(
    ckpt_path: str | Path,
    batches: Iterable[LabelledBatch],
    device: str = "cpu",
    tta: bool = False,
    split: str = "val",
    n_bins: int = DEFAULT_BINS,
) -> dict[str, Any] | None:
    """Fit and store the temperature of ``ckpt_path`` on ``batches``; its summary (``split``, ``inference``,
    ``precision``, then temperature, NLL/ECE before and after, n, bins), or None when there are no images."""
    scores = score(checkpoint_predictor(ckpt_path, None, device), batches, tta)
    if scores.n == 0:
        log.warning("no %s images to fit a temperature on: the checkpoint keeps its temperature", split)
        return None
    mode = TTA if tta else PLAIN
    # log-probabilities at T = 1 are the logits up to one constant per image, which no temperature sees
    logits = np.log(np.clip(scores.raw_probs[mode], 1e-300, None))
    context = {"split": split, "inference": mode, "precision": scores.precision}
    return calibrate_checkpoint(ckpt_path, logits, scores.labels, n_bins, context)
