"""Each run's key hyperparameters next to its final metrics in the loggers: TensorBoard's HPARAMS tab
compares the runs of a sweep; other loggers (CSV) get one flat row."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig


def key_hparams(cfg: DictConfig) -> dict[str, Any]:
    return {
        "model": cfg.model.get("backbone"),
        "protocol": cfg.data.get("protocol"),
        "lr": cfg.model.get("lr"),
        "batch_size": cfg.data.get("batch_size"),
        "scheduler": cfg.model.get("scheduler"),
        "max_epochs": cfg.trainer.get("max_epochs"),
        "seed": cfg.get("seed"),
        "drop_rate": cfg.model.get("drop_rate"),
        "label_smoothing": cfg.model.get("label_smoothing"),
    }


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        "hparams/test_acc": metrics["acc"],
        "hparams/test_macro_f1": metrics["macro_f1"],
        "hparams/best_val_acc": metrics.get("best_val_acc") or 0.0,
    }


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Log the key hyperparameters with the test metrics to every logger of the trainer."""
    flat, final = key_hparams(cfg), final_metrics(metrics)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(flat, final)  # the HPARAMS tab: each run with its final metrics
            logger.experiment.flush()  # fit and test are over: write it now, not at the writer's next timed flush
        else:
            logger.log_hyperparams({**flat, **final})
            logger.save()
