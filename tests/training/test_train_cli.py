"""train.py through Hydra, in subprocesses as a user runs it: artifacts, TensorBoard, multirun, resume."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.train_runs import compose_train, small_run_args, train


class TensorFlowProbe(L.Callback):
    """Notes, when the training process exits (after the test stage and its artifacts), whether TensorFlow got
    imported (it must not be)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        where = Path(trainer.default_root_dir, "tensorflow_imported.json")
        atexit.register(lambda: where.write_text(json.dumps("tensorflow" in sys.modules)))


class OpenMPProbe(L.Callback):
    """Notes the OpenMP wait policy the training process runs under (train.py sets PASSIVE before torch loads)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path(trainer.default_root_dir, "omp_wait_policy.json").write_text(json.dumps(os.environ.get("OMP_WAIT_POLICY")))


def _scalars_and_texts(run_dir: Path) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Every scalar's values and every text summary of the run's TensorBoard event files."""
    scalars: dict[str, list[float]] = {}
    texts: dict[str, list[str]] = {}
    for f in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
        for tag in acc.Tags()["tensors"]:
            for event in acc.Tensors(tag):
                texts.setdefault(tag, []).extend(v.decode() for v in event.tensor_proto.string_val)
    return scalars, texts


def _events(run_dir: Path) -> dict[str, set[str]]:
    tags: dict[str, set] = {"scalars": set(), "images": set(), "hparams": set()}
    for f in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        tags["scalars"] |= set(acc.Tags()["scalars"])
        tags["images"] |= set(acc.Tags()["images"])
        with contextlib.suppress(KeyError):  # an event file without an hparams summary
            tags["hparams"] |= set(acc.PluginTagToContent("hparams").values())
    return tags


@pytest.mark.slow
def test_train_writes_every_artifact_and_tensorboard_tags(synthetic_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    probe = "+callbacks.tensorflow_probe._target_=tests.training.test_train_cli.TensorFlowProbe"
    omp = "+callbacks.omp_probe._target_=tests.training.test_train_cli.OpenMPProbe"
    train([*small_run_args(synthetic_root), "trainer.max_epochs=2", probe, omp, f"hydra.run.dir={run_dir}"])
    assert json.loads((run_dir / "tensorflow_imported.json").read_text()) is False  # TensorBoard without TF
    assert json.loads((run_dir / "omp_wait_policy.json").read_text()) == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    for name in (
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "curves.png",
        "reliability_diagram.png",
        "predictions.csv",
        "splits.csv",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (run_dir / name).is_file(), name
    for png in ("confusion_matrix.png", "curves.png", "reliability_diagram.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["protocol"] == "official" and metrics["epochs"] == 2 and metrics["n"] == 16
    assert sum(map(sum, metrics["confusion_matrix"])) == 16
    assert set(metrics["per_class"]) == {"glioma_tumor", "no_tumor", "meningioma_tumor", "pituitary_tumor"}
    assert metrics["weights_source"] == "random-init"
    assert metrics["git_commit"] and metrics["model"] == "test_efficientnet"
    rows = (run_dir / "predictions.csv").read_text().splitlines()
    assert len(rows) == 17 and rows[0].startswith("path,true,predicted,confidence")
    correct = [row.split(",")[1] == row.split(",")[2] for row in rows[1:]]
    assert metrics["acc"] == sum(correct) / 16  # the figure is the predictions' own
    report = (run_dir / "classification_report.txt").read_text()
    assert "macro avg" in report and f"{metrics['acc']:.4f}" in report
    tags = _events(run_dir)
    assert {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/f1",
        "test/acc",
        "lr-Adam/backbone",
        "lr-Adam/head",
    } <= tags["scalars"]
    assert {"val/recall/glioma_tumor", "val/precision/pituitary_tumor"} <= tags["scalars"]
    assert {"train/augmented_samples", "val/confusion_matrix"} <= tags["images"]
    # the HPARAMS tab: an experiment that names the final metrics next to the hyperparameters
    assert any(b"hparams/test_acc" in content and b"max_epochs" in content for content in tags["hparams"])
    assert {"hparams/test_acc", "hparams/test_macro_f1"} <= tags["scalars"]


@pytest.mark.slow
def test_one_computation_feeds_tensorboard_and_metrics_json_within_the_limits(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """With TTA on and one batch of val and of test: metrics.json and TensorBoard's test/* are the same numbers,
    from the same 8 test images the trainer's limit allows, with the precision they were computed in."""
    run_dir = tmp_path / "run"
    limits = ["+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "data.eval_batch_size=8"]
    args = [
        *small_run_args(synthetic_root),
        "data.val_fraction=0.25",
        "model.tta=true",
        "trainer.precision=bf16-mixed",
        *limits,
    ]
    proc = train([*args, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == 8 and metrics["split_sizes"]["test"] == 16  # one test batch, not the whole split
    fit = metrics["temperature_fit"]
    assert (fit["split"], fit["n"], fit["inference"]) == ("val", 8, "tta")  # one val batch of 12 images
    assert len((run_dir / "predictions.csv").read_text().splitlines()) == 9
    assert metrics["precision"] == fit["precision"] == "float32" and metrics["training_precision"] == "bf16-mixed"
    assert metrics["inference"] == "tta" and metrics["acc"] == metrics["tta"]["acc"] and "plain" in metrics
    scalars, texts = _scalars_and_texts(run_dir)
    # TensorBoard keeps float32: the exact float32 value of metrics.json's figure
    assert scalars["test/acc"] == [np.float32(metrics["acc"])]
    assert scalars["test/macro_f1"] == [np.float32(metrics["macro_f1"])]
    assert scalars["test/plain/acc"] == [np.float32(metrics["plain"]["acc"])]
    assert scalars["test/ece"] == [np.float32(metrics["calibration"]["ece"])]
    assert scalars["test/recall/no_tumor"] == [np.float32(metrics["per_class"]["no_tumor"]["recall"])]
    assert texts["test/dtype/text_summary"] == ["8 test images, tta inference, computed in float32"]
    assert "(8 images, tta inference, computed in float32)" in proc.stdout + proc.stderr


def test_default_config_follows_the_tutorial_recipe() -> None:
    cfg = compose_train([])
    assert cfg.model.backbone == "tf_efficientnet_b0.aa_in1k" and cfg.model.drop_rate == 0.5
    assert (cfg.model.optimizer, cfg.model.lr, cfg.model.scheduler) == ("adam", 1e-3, "plateau")
    assert (cfg.model.plateau_factor, cfg.model.plateau_patience) == (0.3, 2)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.data.size) == (32, 12, 150)
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc"


def test_experiment_tutorial_uses_the_pooled_seed_split_without_augmentation() -> None:
    cfg = compose_train(["experiment=tutorial"])
    assert cfg.data.protocol == "seed" and cfg.data.split_seed == 101
    assert list(cfg.data.train_augmentations) == []


@pytest.mark.parametrize("choice", ["effnet_b0", "effnet_b0_timm"])
def test_model_configs_select_keras_or_timm_effnet(choice: str) -> None:
    cfg = compose_train([f"model={choice}"])
    expected = {"effnet_b0": "tf_efficientnet_b0.aa_in1k", "effnet_b0_timm": "efficientnet_b0"}[choice]
    assert cfg.model.backbone == expected


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp"])
def test_trainer_configscompose_train(trainer: str) -> None:
    cfg = compose_train([f"trainer={trainer}"])
    assert cfg.trainer._target_.endswith("Trainer")
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp"
