"""Lightning callbacks of this project: epoch history (resumable), TensorBoard figures and sample grids.

The figure callbacks import their drawing code (tumorcls.evaluation.plots, torchvision's grid) when they first
draw, and only with a TensorBoard logger to draw for: a run without one loads no figure code until its artifacts."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from tumorcls.data.transforms import denormalize

log = logging.getLogger(__name__)

HISTORY_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/f1")


def _tensorboard(trainer: L.Trainer) -> Any | None:
    """The SummaryWriter of the first TensorBoard logger, if any (rank zero only)."""
    if trainer.global_rank != 0:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class EpochHistory(L.Callback):
    """Per-epoch train/val metrics and learning rate, kept in checkpoints so resumed runs keep their curves."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row: dict[str, float] = {"epoch": trainer.current_epoch}
        for key in HISTORY_KEYS:
            if key in metrics:
                row[key] = float(metrics[key])
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[-1]["lr"])  # the head's: model.lr
        self.history = [h for h in self.history if h["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(h) for h in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]


class ConfusionMatrixLogger(L.Callback):
    """Log the validation confusion matrix as a TensorBoard figure every validation epoch."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _tensorboard(trainer)
        confmat = getattr(pl_module, "last_confmat", {}).get("val")
        if writer is None or confmat is None or trainer.sanity_checking:
            return
        from tumorcls.evaluation.plots import confusion_matrix_figure  # matplotlib's drawing: only when used

        fig = confusion_matrix_figure(confmat.numpy(), pl_module.class_names, f"val, epoch {trainer.current_epoch + 1}")
        writer.add_figure("val/confusion_matrix", fig, global_step=trainer.global_step)


class AugmentedSampleGrid(L.Callback):
    """At fit start, log a grid of augmented training images, one row per class."""

    def __init__(self, per_class: int = 8, seed: int = 0) -> None:
        self.per_class = per_class
        self.seed = seed

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _tensorboard(trainer)
        datamodule = trainer.datamodule
        if writer is None or datamodule is None or "train" not in getattr(datamodule, "datasets", {}):
            return
        dataset = datamodule.datasets["train"]
        sample = getattr(datamodule, "train_sample", lambda i: dataset[i][0])
        generator = torch.Generator().manual_seed(self.seed)
        rows = []
        for c in range(len(datamodule.class_names)):
            idx = torch.nonzero(torch.as_tensor(dataset.labels) == c).flatten()
            if len(idx) == 0:
                continue
            pick = idx[torch.randperm(len(idx), generator=generator)[: self.per_class]]
            images = [denormalize(sample(int(i)).float(), datamodule.mean, datamodule.std) for i in pick]
            images += [torch.zeros_like(images[0])] * (self.per_class - len(images))
            rows.extend(images)
        if rows:
            from torchvision.utils import make_grid

            grid = make_grid(torch.stack(rows), nrow=self.per_class, padding=2)
            writer.add_image("train/augmented_samples", grid, global_step=0)
            writer.add_text("train/augmented_samples_rows", " | ".join(datamodule.class_names), global_step=0)
