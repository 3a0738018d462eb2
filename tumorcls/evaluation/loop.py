"""The one evaluation loop, shared by training's test stage and ``tumorcls evaluate`` (detectron2's
``inference_on_dataset`` idea): labelled batches of uint8 RGB images go through a :class:`Predictor` (the runtime
users deploy: the checkpoint backend for a ``.ckpt``), as the plain model and, when asked, with flip TTA; the
artifact writer turns the result into metrics.json. Training's TensorBoard ``test/*`` scalars are read back from
those metrics, so every reported test figure has one source, computed at the precision metrics.json records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.evaluation.artifacts import confusion_matrix, write_artifacts
from tumorcls.evaluation.calibration import DEFAULT_BINS
from tumorcls.evaluation.reports import summary_metrics
from tumorcls.inference.backends import Predictor, TorchPredictor
from tumorcls.inference.batching import predict_batch
from tumorcls.models.checkpoint import CheckpointInfo, load_checkpoint
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.probabilities import uncalibrated

PLAIN, TTA = "plain", "tta"  # the inference modes: the model alone; the mean of the image and its mirror image


@dataclass(frozen=True)
class LabelledBatch:
    images: np.ndarray  # (n, size, size, 3) uint8 RGB, prepared as the model's users prepare them
    labels: np.ndarray  # (n,) class indices into the predictor's class names
    paths: Sequence[Path] = ()  # the image file of each row, when known (predictions.csv)


@dataclass
class Scores:
    """One pass over labelled images: per inference mode, the probabilities the model gives (its temperature
    applied) and the same at T = 1 (None where the backend cannot tell)."""

    labels: np.ndarray
    probs: dict[str, np.ndarray]
    raw_probs: dict[str, np.ndarray | None]
    paths: list[Path] = field(default_factory=list)
    precision: str = "float32"
    temperature: float | None = 1.0

    @property
    def n(self) -> int:
        return len(self.labels)


def precision_of(predictor: Predictor) -> str:
    """The arithmetic the predictor's network runs in, as metrics.json records it: a backend that declares
    ``precision`` is believed; a checkpoint runs in its parameters' dtype (on CUDA, convolutions may use TF32);
    an int8 ONNX file says so in its metadata; everything else runs in float32."""
    declared = getattr(predictor, "precision", None)
    if declared:
        return str(declared)
    if isinstance(predictor, TorchPredictor):
        import torch

        dtype = str(next(predictor.model.parameters()).dtype).removeprefix("torch.")
        tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
        return f"{dtype} (TF32 allowed on CUDA)" if predictor.device.type == "cuda" and tf32 else dtype
    if "quantization" in predictor.metadata:
        return "int8 weights, uint8 activations (ONNX Runtime QDQ)"
    return "float32"


def checkpoint_predictor(
    ckpt: str | Path | None, model: TumorClassifier | None = None, device: str = "cpu"
) -> TorchPredictor:
    """The checkpoint backend on ``ckpt`` (its stored temperature included), or on the in-memory ``model`` at
    T = 1 when there is no checkpoint (e.g. ``fast_dev_run``)."""
    if ckpt:
        loaded, info = load_checkpoint(ckpt, expected_classes=None, map_location=device)
        return TorchPredictor(loaded, device, info, Path(ckpt))
    if model is None:
        raise ValueError("checkpoint_predictor needs a checkpoint or a model")
    return TorchPredictor(model, device, CheckpointInfo(temperature=1.0))


def score(predictor: Predictor, batches: Iterable[LabelledBatch], tta: bool = False) -> Scores:
    """Run every batch through the predictor (``predict_batch``: what ``tumorcls predict`` runs): the plain
    model, and with ``tta`` also the flip-averaged one."""
    modes = (PLAIN, TTA) if tta else (PLAIN,)
    probs: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    raw: dict[str, list[np.ndarray | None]] = {m: [] for m in modes}
    labels: list[np.ndarray] = []
    paths: list[Path] = []
    for batch in batches:
        if len(batch.images) == 0:
            continue
        for mode in modes:
            out = predict_batch(predictor, batch.images, tta=mode == TTA)
            probs[mode].append(out.probs)
            raw[mode].append(
                out.raw_probs if out.raw_probs is not None else uncalibrated(out.probs, predictor.temperature)
            )
        labels.append(np.asarray(batch.labels, dtype=np.int64))
        paths.extend(Path(p) for p in batch.paths)
    width = len(predictor.class_names)
    return Scores(
        labels=np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
        probs={m: np.concatenate(p) if p else np.zeros((0, width)) for m, p in probs.items()},
        raw_probs={m: None if not r or any(x is None for x in r) else np.concatenate(r) for m, r in raw.items()},
        paths=paths,
        precision=precision_of(predictor),
        temperature=predictor.temperature,
    )


def mode_figures(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """metrics.json's ``plain`` / ``tta`` blocks: accuracy, macro-F1 and per-class recall of one mode."""
    summary = summary_metrics(confusion_matrix(labels, probs, len(class_names)), class_names)
    recall = {name: m["recall"] for name, m in summary["per_class"].items()}
    return {"acc": summary["acc"], "macro_f1": summary["macro_f1"], "recall": recall}


def write_report(
    out_dir: str | Path,
    scores: Scores,
    class_names: Sequence[str],
    info: dict[str, Any],
    *,
    reported: str = PLAIN,
    title: str = "test",
    history: Sequence[dict[str, float]] | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The artifacts of ``scores``: the top-level figures are the ``reported`` mode's (what the model's
    configured inference does); with both modes scored, ``plain`` and ``tta`` hold each mode's figures."""
    extra: dict[str, Any] = {"inference": reported, "precision": scores.precision}
    if len(scores.probs) > 1:
        extra.update({mode: mode_figures(scores.labels, p, class_names) for mode, p in scores.probs.items()})
    clash = sorted(set(extra) & set(info))
    if clash:
        raise ValueError(f"info key(s) {clash} would replace the report's keys of the same name")
    return write_artifacts(
        out_dir,
        scores.labels,
        scores.probs[reported],
        class_names,
        {**extra, **info},
        title=title,
        temperature=scores.temperature,
        raw_probs=scores.raw_probs[reported],
        paths=scores.paths or None,
        history=history,
        bins=bins,
    )
