"""The training job behind ``train.py``, step by step: check the config, take the run folder, make sure the
dataset is there, check the resume checkpoint, build, fit, calibrate, test the best checkpoint and write the
run's artifacts. Each step lives in its own module; this one only orders them."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from tumorcls.data.datamodule import TumorDataModule
from tumorcls.data.download import ensure_dataset
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.run_layout import RunLayout
from tumorcls.training.build import build
from tumorcls.training.callbacks import EpochHistory
from tumorcls.training.config_checks import check_config
from tumorcls.training.hparams import log_hparams
from tumorcls.training.provenance import Timings, run_provenance
from tumorcls.training.resume import checked_resume_path
from tumorcls.training.run_lock import run_folder_lock
from tumorcls.training.test_stage import calibrate_best, write_test_artifacts

log = logging.getLogger(__name__)


def run(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Fit and test as the config says; returns the metrics (also written to ``metrics.json``)."""
    check_config(cfg)  # before anything expensive: a bad value is one line naming its key
    layout = RunLayout(Path(output_dir))
    with run_folder_lock(layout):
        ensure_dataset(cfg.data.root, cfg.data.get("download", "auto"))
        ckpt_path = checked_resume_path(cfg.get("ckpt_path"), layout, cfg.model)
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
        datamodule, model, trainer = build(cfg, layout)
        timings = fit(cfg, datamodule, model, trainer, ckpt_path)
        results = scalar_metrics(trainer)
        if cfg.get("test", True):
            results.update(test_and_report(cfg, layout, datamodule, model, trainer, timings))
        return results


def fit(
    cfg: DictConfig, datamodule: TumorDataModule, model: TumorClassifier, trainer: L.Trainer, ckpt_path: str | None
) -> Timings:
    started = time.perf_counter()
    datamodule.setup("fit")  # decode once, before the clock of the fit starts
    data_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return Timings(data_seconds, time.perf_counter() - started)


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def test_and_report(
    cfg: DictConfig,
    layout: RunLayout,
    datamodule: TumorDataModule,
    model: TumorClassifier,
    trainer: L.Trainer,
    timings: Timings,
) -> dict[str, float]:
    """Calibrate and test the best checkpoint; rank 0 writes the artifacts and logs the hyperparameters."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    started = time.perf_counter()
    calibration = calibrate_best(trainer, datamodule, best) if cfg.get("calibrate", False) and best else None
    calibrated = time.perf_counter()
    trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
    timings = replace(timings, calibrate_seconds=calibrated - started, test_seconds=time.perf_counter() - calibrated)
    results = scalar_metrics(trainer)
    if trainer.global_rank != 0:
        return results
    history = next((c.history for c in trainer.callbacks if isinstance(c, EpochHistory)), [])
    info = run_provenance(cfg, datamodule, model, trainer, best or None, calibration, timings)
    device = str(trainer.strategy.root_device)
    metrics = write_test_artifacts(layout, datamodule, model, best or None, info, history, device)
    log_hparams(trainer, cfg, metrics)
    results.update({"test/acc": metrics["acc"], "test/macro_f1": metrics["macro_f1"]})
    log.info("test acc %.4f macro-F1 %.4f; artifacts in %s", metrics["acc"], metrics["macro_f1"], layout.root)
    return results
