"""The stages after the fit: the temperature fit on the validation split (stored in best.ckpt), and the test
of the best checkpoint on the whole test split, written by the same artifact writer as ``tumorcls evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from tumorcls.data.datamodule import TumorDataModule, collate
from tumorcls.evaluation.artifacts import write_artifacts
from tumorcls.evaluation.calibration import calibrate_checkpoint_on_loader, collect_logits
from tumorcls.models.checkpoint import load_checkpoint
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.probabilities import softmax
from tumorcls.run_layout import RunLayout


def whole_split_loader(datamodule: TumorDataModule, split: str) -> DataLoader:
    """The whole split in its order: under DDP the data module's own loaders hold one rank's share only."""
    return DataLoader(datamodule.datasets[split], batch_size=datamodule.eval_batch_size, collate_fn=collate)


def split_paths(datamodule: TumorDataModule, split: str) -> list[Path]:
    """The image file of each item of ``datamodule.datasets[split]``, in the same order."""
    return [record.path for record, s in zip(datamodule.decoded.records, datamodule.split) if s == split]


def calibrate_best(trainer: L.Trainer, datamodule: TumorDataModule, best: str | None) -> dict[str, Any] | None:
    """Temperature scaling of ``best`` on the whole val split (rank 0; the others wait); its summary."""
    calibration = None
    if best and trainer.global_rank == 0:
        device = str(trainer.strategy.root_device)
        calibration = calibrate_checkpoint_on_loader(best, whole_split_loader(datamodule, "val"), device=device)
    trainer.strategy.barrier("calibrate")
    return calibration


def write_test_artifacts(
    layout: RunLayout,
    datamodule: TumorDataModule,
    model: TumorClassifier,
    best: str | None,
    info: dict[str, Any],
    history: list[dict[str, float]],
    device: str = "cpu",
) -> dict[str, Any]:
    """Score ``best`` (the in-memory model when there is none) on the whole test split in float32, with its
    calibration temperature, and write metrics.json, the report, figures and predictions.csv."""
    temperature = 1.0
    if best:
        model, checkpoint = load_checkpoint(best, expected_classes=None, map_location=device)
        temperature = checkpoint.temperature
    logits, labels = collect_logits(model, whole_split_loader(datamodule, "test"), device)
    return write_artifacts(
        layout.root,
        labels,
        softmax(logits, temperature),
        model.class_names,
        info,
        title=f"test ({datamodule.protocol})",
        temperature=temperature,
        raw_probs=softmax(logits) if temperature != 1.0 else None,
        paths=split_paths(datamodule, "test"),
        history=history,
    )
