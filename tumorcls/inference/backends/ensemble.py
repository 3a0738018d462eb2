"""An ensemble of models as one model: the mean of its members' probabilities.

The members are any mix of backends (checkpoints, ONNX, Keras), e.g. the seeds or folds of one recipe. Each one
gives its own calibrated probabilities (its own temperature included) and the ensemble answers their arithmetic
mean. They must share the contract a caller decodes with: the class names in the same order, the input size and
the preprocessing (``crop``, ``intensity``); a member that differs is refused in one line. The contract check is
shared with the ONNX export of an ensemble (:func:`contract_difference`), and so is the refusal of a file given twice
(:func:`repeated_member`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.errors import TumorclsError
from tumorcls.inference.backends.base import BatchOutput, ModelFileError, Predictor
from tumorcls.model_file import contract_difference, mismatch_message


def repeated_member(paths: Sequence[str | Path]) -> str | None:
    """The one line refusing a file given twice as a member (it would count twice in the mean); None when every
    path (resolved, so ``a.ckpt`` and ``./a.ckpt`` are one file) is given once."""
    seen: set[Path] = set()
    for path in paths:
        resolved = Path(path).expanduser().resolve()
        if resolved in seen:
            return f"ensemble member '{path}' is given twice; give each file once (each counts once in the mean)"
        seen.add(resolved)
    return None


class EnsemblePredictor(Predictor):
    """Two or more predictors answering as one: the arithmetic mean of each member's calibrated probabilities
    (each member applies its own temperature first). TTA views are combined by each member as it combines them
    (:meth:`Predictor.predict_views`), then averaged. Grad-CAM is the mean of the members' heatmaps."""

    backend = "ensemble"

    def __init__(self, members: Sequence[Predictor]) -> None:
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        for member in members[1:]:
            difference = contract_difference(first, member)
            if difference is not None:
                raise ModelFileError(mismatch_message(str(first.path), str(member.path), difference))
        self.members = members
        temperatures = json.dumps([m.temperature for m in members])
        metadata = {"combine": "mean of the members' calibrated probabilities", "temperatures": temperatures}
        preprocess = {"crop": first.crop, "intensity": first.intensity}
        super().__init__(None, first.class_names, first.input_size, None, metadata, **preprocess)

    @property
    def paths(self) -> list[Path | None]:
        """The members' model files, in order."""
        return [member.path for member in self.members]

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.mean([member.predict_proba(images) for member in self.members], axis=0)

    def predict_views(self, views: Sequence[np.ndarray]) -> BatchOutput:
        """Each member combines the views as it does alone; the ensemble averages the combined probabilities."""
        return BatchOutput(np.mean([member.predict_views(views).probs for member in self.members], axis=0))

    def grad_cam(self, layer: str | None = None) -> Callable[[np.ndarray, Sequence[int]], np.ndarray]:
        """The mean of the members' Grad-CAM heatmaps; refused in one line when a member has none."""
        explainers = []
        for member in self.members:
            try:
                explainers.append(member.grad_cam(layer))
            except TumorclsError as exc:
                raise TumorclsError(f"{exc} (ensemble member '{member.path}')") from None

        def explain(images: np.ndarray, class_indices: Sequence[int]) -> np.ndarray:
            return np.mean([explainer(images, class_indices) for explainer in explainers], axis=0)

        return explain

    def describe(self) -> dict[str, Any]:
        """The shared contract, backend "ensemble", and each member's path, backend and temperature."""
        members = [
            {"model": str(m.path), "backend": m.backend, "temperature": m.temperature, "metadata": dict(m.metadata)}
            for m in self.members
        ]
        return {**super().describe(), "model": [m["model"] for m in members], "members": members}


def combine(members: Sequence[Predictor]) -> Predictor:
    """One predictor for the models: the model itself when there is one, else their ensemble."""
    if len(members) == 1:
        return members[0]
    return EnsemblePredictor(members)
