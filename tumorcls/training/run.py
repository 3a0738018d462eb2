"""The training job behind ``train.py``, step by step: check the config, take the run folder, make sure the
dataset is there, check the resume checkpoint, build, fit, calibrate, test the best checkpoint and write the
run's artifacts. Each step lives in its own module; this one only orders them.

What it returns (and ``train.py`` hands to the sweepers as ``optimized_metric``) are the kept checkpoint's
figures: the ``val/*`` values of the epoch best.ckpt was saved at (for the checkpoint's monitor, exactly the
score ModelCheckpoint compared) and the test figures of that checkpoint, never the last epoch's."""

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
from tumorcls.models.checkpoint import read_checkpoint
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.run_layout import RunLayout
from tumorcls.training.build import build
from tumorcls.training.callbacks import EpochHistory
from tumorcls.training.config_checks import check_config
from tumorcls.training.hparams import log_hparams
from tumorcls.training.provenance import Timings, run_provenance
from tumorcls.training.resume import checked_resume_path
from tumorcls.training.run_lock import run_folder_lock
from tumorcls.training.test_stage import calibrate_best, log_test_metrics, score_test_split, write_test_artifacts

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
        results = kept_checkpoint_scores(trainer)
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


def epoch_history(trainer: L.Trainer) -> list[dict[str, float]]:
    return next((c.history for c in trainer.callbacks if isinstance(c, EpochHistory)), [])


def kept_checkpoint_scores(trainer: L.Trainer) -> dict[str, float]:
    """The figures of the checkpoint the run keeps (``trainer.checkpoint_callback``, best.ckpt): its epoch's
    row of the history, and for the monitored metric ModelCheckpoint's ``best_model_score`` itself. Without a
    kept checkpoint (no ModelCheckpoint, ``fast_dev_run``, ``train=false``) the last epoch's, said so in a line."""
    callback = trainer.checkpoint_callback
    if callback is None or callback.best_model_score is None or not callback.best_model_path:
        log.info("no checkpoint kept by a monitored ModelCheckpoint: the run returns its last epoch's figures")
        return scalar_metrics(trainer)
    epoch = read_checkpoint(callback.best_model_path).get("epoch")
    row = next((h for h in epoch_history(trainer) if h.get("epoch") == epoch), {})
    kept = {key: float(value) for key, value in row.items() if key not in ("epoch", "lr")}
    kept[str(callback.monitor)] = float(callback.best_model_score)
    return kept


def test_and_report(
    cfg: DictConfig,
    layout: RunLayout,
    datamodule: TumorDataModule,
    model: TumorClassifier,
    trainer: L.Trainer,
    timings: Timings,
) -> dict[str, float]:
    """Calibrate and test the best checkpoint; rank 0 writes the artifacts, logs the test figures and the
    hyperparameters."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    tta = bool(model.settings.runtime.tta)
    started = time.perf_counter()
    fitted = calibrate_best(trainer, datamodule, best, tta) if cfg.get("calibrate", False) and best else None
    calibrated = time.perf_counter()
    scores = score_test_split(trainer, datamodule, model, best or None)
    timings = replace(timings, calibrate_seconds=calibrated - started, test_seconds=time.perf_counter() - calibrated)
    if scores is None:  # not rank 0
        return {}
    if scores.n == 0:
        log.warning("no test images (trainer.limit_test_batches=%s): no test artifacts", trainer.limit_test_batches)
        return {}
    info = run_provenance(cfg, datamodule, model, trainer, best or None, fitted, timings)
    metrics = write_test_artifacts(layout, datamodule, scores, model.class_names, info, epoch_history(trainer))
    log_test_metrics(trainer, metrics)
    log_hparams(trainer, cfg, metrics)
    log.info(
        "test acc %.4f macro-F1 %.4f (%d images, %s inference, computed in %s); artifacts in %s",
        metrics["acc"],
        metrics["macro_f1"],
        metrics["n"],
        metrics["inference"],
        metrics["precision"],
        layout.root,
    )
    return {"test/acc": metrics["acc"], "test/macro_f1": metrics["macro_f1"]}
