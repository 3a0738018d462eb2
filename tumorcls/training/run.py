"""The training job behind ``train.py``: build everything from the Hydra config, fit, test the best
checkpoint, and write the run's artifacts (metrics.json, classification report, figures)."""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from tumorcls.atomic_io import atomic_write_json, atomic_write_text
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.errors import CheckpointError
from tumorcls.evaluation.plots import confusion_matrix_figure, curves_figure, save_figure
from tumorcls.evaluation.reports import classification_report, summary_metrics
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.training.callbacks import EpochHistory
from tumorcls.training.checkpoint_io import AtomicCheckpointIO

log = logging.getLogger(__name__)


def uses_cuda(trainer_cfg: DictConfig) -> bool:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def git_commit() -> str:
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


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means this run directory's checkpoints/last.ckpt, if it exists (else a fresh start)."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        log.info("ckpt_path=last but %s does not exist: starting a fresh run", last)
        return None
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: '{path}'")
    return str(path)


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def build(cfg: DictConfig, output_dir: Path) -> tuple[TumorDataModule, TumorClassifier, L.Trainer]:
    cuda = uses_cuda(cfg.trainer)
    datamodule: TumorDataModule = instantiate(cfg.data, manifest_path=str(output_dir / "splits.csv"), _convert_="all")
    model: TumorClassifier = instantiate(
        cfg.model,
        input_size=datamodule.size,
        mean=list(datamodule.mean),
        std=list(datamodule.std),
        _convert_="all",
    )
    callbacks = _instantiate_group(cfg.get("callbacks"))
    if not any(isinstance(c, EpochHistory) for c in callbacks):
        callbacks.append(EpochHistory())
    loggers = _instantiate_group(cfg.get("logger"))
    precision = cfg.trainer.get("precision", "auto")
    if precision in (None, "auto"):
        precision = "bf16-mixed" if cuda else "32-true"
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        plugins=[AtomicCheckpointIO()],
    )
    return datamodule, model, trainer


def write_artifacts(
    output_dir: Path,
    test_confmat: torch.Tensor,
    class_names: list[str],
    history: list[dict[str, float]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    cm = test_confmat.numpy()
    metrics = {**summary_metrics(cm, class_names), **extra}
    atomic_write_json(output_dir / "metrics.json", metrics)
    atomic_write_text(output_dir / "classification_report.txt", classification_report(cm, class_names))
    save_figure(
        confusion_matrix_figure(cm, class_names, f"test ({extra.get('protocol', '')})"),
        output_dir / "confusion_matrix.png",
    )
    if history:
        save_figure(curves_figure(history), output_dir / "curves.png")
    return metrics


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    flat = {
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
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(flat, metrics)  # the HPARAMS tab: each run with its final metrics
            logger.experiment.flush()  # fit and test are over: write it now, not at the writer's next timed flush
        else:
            logger.log_hyperparams({**flat, **metrics})
            logger.save()


def run(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Fit and test as the config says; returns the metrics (also written to ``metrics.json``)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg, output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    started = time.perf_counter()
    datamodule.setup("fit")  # decode once, before the clock of the fit starts
    data_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - started
    results: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if not cfg.get("test", True):
        return results
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    calibration = None
    if cfg.get("calibrate", False) and best:  # temperature scaling on the val split, stored in best.ckpt
        if trainer.global_rank == 0:
            from tumorcls.evaluation.calibration import calibrate_checkpoint_on_loader

            # the whole val split: under DDP val_dataloader() would hold this rank's share only
            whole_val = DataLoader(datamodule.datasets["val"], batch_size=datamodule.eval_batch_size)
            calibration = calibrate_checkpoint_on_loader(best, whole_val, device=str(trainer.strategy.root_device))
        trainer.strategy.barrier("calibrate")
    trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
    results.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
    if trainer.global_rank != 0:
        return results
    history = next((c.history for c in trainer.callbacks if isinstance(c, EpochHistory)), [])
    extra = {
        "protocol": datamodule.protocol,
        "split_seed": datamodule.split_seed,
        "seed": cfg.get("seed"),
        "model": model.hparams.backbone,
        "weights_source": model.weights_source,
        "best_checkpoint": best or None,
        "best_val_acc": float(trainer.checkpoint_callback.best_model_score)
        if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None
        else None,
        "epochs": trainer.current_epoch,
        "split_sizes": datamodule.split_sizes(),
        "skipped_files": datamodule.skipped_files,
        "calibration": calibration,
        "data_seconds": round(data_seconds, 1),
        "fit_seconds": round(fit_seconds, 1),
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "config": OmegaConf.to_container(cfg, resolve=False),
    }
    metrics = write_artifacts(output_dir, model.last_confmat["test"], model.class_names, history, extra)
    _log_hparams(
        trainer,
        cfg,
        {
            "hparams/test_acc": metrics["acc"],
            "hparams/test_macro_f1": metrics["macro_f1"],
            "hparams/best_val_acc": extra["best_val_acc"] or 0.0,
        },
    )
    results.update({"test/acc": metrics["acc"], "test/macro_f1": metrics["macro_f1"]})
    log.info("test acc %.4f macro-F1 %.4f; artifacts in %s", metrics["acc"], metrics["macro_f1"], output_dir)
    return results
