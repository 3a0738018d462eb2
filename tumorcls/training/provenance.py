"""Where a run's numbers came from, recorded next to them in metrics.json: data protocol and split, model
and weights, checkpoint, timings, machine, library versions, code commit and the full config."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from tumorcls.data.datamodule import TumorDataModule
from tumorcls.models.lit_module import TumorClassifier


@dataclass(frozen=True)
class Timings:
    data_seconds: float  # decoding the dataset
    fit_seconds: float
    calibrate_seconds: float | None = None  # the temperature fit on the val split
    test_seconds: float | None = None  # the test pass over the best checkpoint (artifacts not included)


def git_commit() -> str:
    """The short commit of the code that ran, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpus": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def best_val_acc(trainer: L.Trainer) -> float | None:
    callback = trainer.checkpoint_callback
    score = callback.best_model_score if callback else None
    return float(score) if score is not None else None


def run_provenance(
    cfg: DictConfig,
    datamodule: TumorDataModule,
    model: TumorClassifier,
    trainer: L.Trainer,
    best: str | None,
    temperature_fit: dict[str, Any] | None,
    timings: Timings,
) -> dict[str, Any]:
    """The keys metrics.json carries besides the test metrics; ``temperature_fit`` is the validation temperature
    fit of best.ckpt (None when none ran)."""
    return {
        "protocol": datamodule.protocol,
        "split_seed": datamodule.split_seed,
        "seed": cfg.get("seed"),
        "model": model.hparams.backbone,
        "weights_source": model.weights_source,
        "best_checkpoint": best,
        "best_val_acc": best_val_acc(trainer),
        "epochs": trainer.current_epoch,
        "split_sizes": datamodule.split_sizes(),
        "skipped_files": datamodule.skipped_files,
        "temperature_fit": temperature_fit,
        "training_precision": str(trainer.precision),
        "data_seconds": round(timings.data_seconds, 1),
        "data_cache": datamodule.cache_status or None,  # hit | written | off | memory, and the entry's folder
        "fit_seconds": round(timings.fit_seconds, 1),
        **{
            key: round(value, 1)
            for key, value in (("calibrate_seconds", timings.calibrate_seconds), ("test_seconds", timings.test_seconds))
            if value is not None
        },
        "machine": machine(),
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "config": OmegaConf.to_container(cfg, resolve=False),
    }
