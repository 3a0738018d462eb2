"""The stages after the fit, through the one evaluation loop that ``tumorcls evaluate`` runs too
(tumorcls.evaluation.loop): the temperature fit of the best checkpoint on the validation split (stored in
best.ckpt), then its test, written by the same artifact writer; the loggers' ``test/*`` scalars are read from the
metrics written, so TensorBoard and metrics.json hold one computation's numbers.

Both passes cover the images the trainer itself would: ``trainer.limit_val_batches`` / ``limit_test_batches``
(and ``fast_dev_run``) limit them batch for batch, counted as Lightning counts them, over each rank's share of
the split under DDP. Rank 0 runs them on the whole of that (the others wait): metrics need every image once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

from tumorcls.data.datamodule import TumorDataModule
from tumorcls.evaluation.loop import PLAIN, TTA, LabelledBatch, Scores, checkpoint_predictor, score, write_report
from tumorcls.evaluation.temperature_fit import fit_checkpoint_temperature
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.run_layout import RunLayout

log = logging.getLogger(__name__)


def limited_batches(n_batches: int, limit: int | float) -> int:
    """How many of a loader's ``n_batches`` the trainer runs under ``limit_<stage>_batches`` (an int: that many
    at most; a float: that fraction, rounded down), as Lightning counts them."""
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(n_batches, limit)
    return n_batches if float(limit) == 1.0 else int(n_batches * float(limit))


def trainer_items(n_items: int, batch_size: int, limit: int | float, world_size: int = 1) -> np.ndarray:
    """The items of a split of ``n_items`` the trainer's (unshuffled) val/test loaders cover under ``limit``:
    each rank's first batches of its share (the data module's unrepeated sampler under DDP), in split order."""
    picked: list[int] = []
    for rank in range(world_size):
        share = list(UnrepeatedDistributedSampler(range(n_items), num_replicas=world_size, rank=rank, shuffle=False))
        n_batches = -(-len(share) // batch_size)
        picked.extend(share[: limited_batches(n_batches, limit) * batch_size])
    return np.asarray(sorted(picked), dtype=np.int64)


def split_paths(datamodule: TumorDataModule, split: str) -> list[Path]:
    """The image file of each item of ``datamodule.datasets[split]``, in the same order."""
    return [record.path for record, s in zip(datamodule.decoded.records, datamodule.split) if s == split]


def split_batches(datamodule: TumorDataModule, split: str, items: np.ndarray) -> Iterator[LabelledBatch]:
    """The decoded uint8 pixels (crop and intensity already applied), labels and files of ``items`` of the
    split, in batches of the evaluation batch size."""
    dataset, paths, size = datamodule.datasets[split], split_paths(datamodule, split), datamodule.eval_batch_size
    for start in range(0, len(items), size):
        rows = items[start : start + size]
        images = np.stack([dataset.image(int(i)) for i in rows])
        yield LabelledBatch(images, dataset.labels[rows], [paths[int(i)] for i in rows])


def covered_items(trainer: L.Trainer, datamodule: TumorDataModule, split: str) -> np.ndarray:
    limit = trainer.limit_val_batches if split == "val" else trainer.limit_test_batches
    n_items = len(datamodule.datasets[split])
    items = trainer_items(n_items, datamodule.eval_batch_size, limit, trainer.world_size)
    if len(items) < n_items:
        stage = "val" if split == "val" else "test"
        log.info("%s split: %d of %d images, as trainer.limit_%s_batches=%s", split, len(items), n_items, stage, limit)
    return items


def calibrate_best(
    trainer: L.Trainer, datamodule: TumorDataModule, best: str | None, tta: bool = False
) -> dict[str, Any] | None:
    """Temperature scaling of ``best`` on the val images the trainer validates on (rank 0; the others wait), in
    the model's configured inference (``tta`` or not); metrics.json's ``temperature_fit`` block."""
    summary = None
    if best and trainer.global_rank == 0:
        device = str(trainer.strategy.root_device)
        batches = split_batches(datamodule, "val", covered_items(trainer, datamodule, "val"))
        summary = fit_checkpoint_temperature(best, batches, device=device, tta=tta, split="val")
    trainer.strategy.barrier("calibrate")
    return summary


def score_test_split(
    trainer: L.Trainer, datamodule: TumorDataModule, model: TumorClassifier, best: str | None
) -> Scores | None:
    """``best`` (the in-memory model when there is none) on the test images the trainer would test, plain and,
    when the model is configured with TTA, flip-averaged; rank 0 only (None on the others, who wait)."""
    scores = None
    if trainer.global_rank == 0:
        predictor = checkpoint_predictor(best, model, str(trainer.strategy.root_device))
        batches = split_batches(datamodule, "test", covered_items(trainer, datamodule, "test"))
        scores = score(predictor, batches, tta=bool(model.settings.runtime.tta))
    trainer.strategy.barrier("test")
    return scores


def write_test_artifacts(
    layout: RunLayout,
    datamodule: TumorDataModule,
    scores: Scores,
    class_names: list[str],
    info: dict[str, Any],
    history: list[dict[str, float]],
) -> dict[str, Any]:
    """metrics.json, the report, figures and predictions.csv of the test scores; the top-level figures are
    the model's configured inference (TTA when ``model.tta``)."""
    reported = TTA if TTA in scores.probs else PLAIN
    title = f"test ({datamodule.protocol})"
    return write_report(layout.root, scores, class_names, info, reported=reported, title=title, history=history)


def test_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The loggers' ``test/*`` scalars, read from metrics.json's figures (not computed again)."""
    scalars = {
        "test/acc": metrics["acc"],
        "test/macro_f1": metrics["macro_f1"],
        "test/nll": metrics["calibration"]["nll"],
        "test/ece": metrics["calibration"]["ece"],
    }
    for name, m in metrics["per_class"].items():
        scalars.update({f"test/recall/{name}": m["recall"], f"test/precision/{name}": m["precision"]})
    for mode in (PLAIN, TTA):
        if mode in metrics:
            scalars.update(
                {f"test/{mode}/acc": metrics[mode]["acc"], f"test/{mode}/macro_f1": metrics[mode]["macro_f1"]}
            )
    return {key: float(value) for key, value in scalars.items()}


def log_test_metrics(trainer: L.Trainer, metrics: dict[str, Any]) -> None:
    """The test figures and the precision they were computed in, to every logger of the trainer (rank 0)."""
    scalars = test_scalars(metrics)
    note = f"{metrics['n']} test images, {metrics['inference']} inference, computed in {metrics['precision']}"
    for logger in trainer.loggers:
        logger.log_metrics(scalars, step=trainer.global_step)
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_text"):  # TensorBoard's TEXT tab
            experiment.add_text("test/dtype", note, global_step=trainer.global_step)
