"""trainer=ddp through train.py: two CPU processes (gloo) whose reported metrics cover the whole split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from tests.helpers.synthetic import make_dataset
from tests.helpers.train_runs import compose_train as _compose
from tests.helpers.train_runs import small_run_args, train
from tumorcls.atomic_io import atomic_write_json
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.models.checkpoint import load_checkpoint

WORLD_SIZE = 2
# official protocol: 10 Training images per class, 30% of them (3 per class) for validation; 3 Testing per
# class, less one. val holds 12 images; test holds 11, not a multiple of the world size: a plain
# DistributedSampler would pad it with a repeat and count 12, the data module's unrepeated sampler counts 11.
# Classes are contiguous in the split order and each rank takes every other image, so the two ranks see
# different class mixes.
PER_CLASS = {"Training": 10, "Testing": 3}
VAL_FRACTION = 0.3


class RankMetrics(L.Callback):
    """Each rank writes what it holds in ``trainer.callback_metrics`` after the fit."""

    def __init__(self) -> None:
        self.record: dict[str, object] = {}

    def _dump(self, trainer: L.Trainer, stage: str) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.record.update(rank=trainer.global_rank, world_size=trainer.world_size, pid=os.getpid())
        self.record[stage] = metrics
        atomic_write_json(Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.json", self.record)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._dump(trainer, "fit")


def test_ddp_config_composes_without_sync_batchnorm() -> None:
    cfg = _compose(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.use_distributed_sampler
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    # Lightning's SyncBatchNorm conversion drops the activation inside timm's BatchNormAct2d
    assert cfg.trainer.sync_batchnorm is False


def _rank_predictions(model: torch.nn.Module, dataset: torch.utils.data.Dataset) -> np.ndarray:
    """Predictions for the whole split, batched as the ranks batch it (DistributedSampler without shuffling:
    rank r takes items r, r + world_size, ...; one evaluation batch each here)."""
    preds = np.empty(len(dataset), dtype=np.int64)
    for rank in range(WORLD_SIZE):
        idx = list(range(rank, len(dataset), WORLD_SIZE))
        with torch.no_grad():
            preds[idx] = model(torch.stack([dataset[i][0] for i in idx])).argmax(1).numpy()
    return preds


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_ddp_on_two_cpu_processes_reports_metrics_of_the_whole_split(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "mri", PER_CLASS, seed=5)
    (root / "Testing" / "pituitary_tumor" / "img_2.jpg").unlink()
    run_dir = tmp_path / "run"
    proc = train(
        [
            *small_run_args(root),
            "trainer=ddp",
            "trainer.accelerator=cpu",
            f"trainer.devices={WORLD_SIZE}",
            "trainer.max_epochs=1",
            f"data.val_fraction={VAL_FRACTION}",
            "+callbacks.rank_metrics._target_=tests.training.test_distributed.RankMetrics",
            f"hydra.run.dir={run_dir}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    )
    # decoded once: rank 0 writes the decode cache before the fit, rank 1 (started inside it) maps that entry
    log = proc.stdout + proc.stderr
    assert (log.count("decode cache written: 51 images"), log.count("decode cache hit: 51 images")) == (1, 1)
    assert len([p for p in (tmp_path / "cache" / "decoded").iterdir() if p.is_dir()]) == 1
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {WORLD_SIZE}
    assert ranks[0]["pid"] != ranks[1]["pid"]  # two processes really ran

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split_sizes"] == {"train": 28, "val": 12, "test": 11} and metrics["epochs"] == 1
    assert metrics["temperature_fit"]["n"] == 12  # the temperature is fitted on the whole val split, not rank 0's
    best = Path(metrics["best_checkpoint"])
    assert best == run_dir / "checkpoints" / "best.ckpt" and best.is_file()

    # what the saved model predicts on the whole val and test splits, computed here in one process
    model, _ = load_checkpoint(best)
    dm = TumorDataModule(root, size=48, batch_size=16, num_workers=0, val_fraction=VAL_FRACTION)
    dm.setup()
    val_y, test_y = dm.datasets["val"].labels, dm.datasets["test"].labels
    val_correct = _rank_predictions(model, dm.datasets["val"]) == val_y
    test_pred = _rank_predictions(model, dm.datasets["test"])
    halves = [val_correct[r::WORLD_SIZE].mean() for r in range(WORLD_SIZE)]
    assert halves[0] != halves[1], "the ranks' halves agree, so this data cannot tell a synced metric apart"

    # the reported validation accuracy is the whole split's, on both ranks, not one rank's half
    for rank in ranks:
        assert rank["fit"]["val/acc"] == pytest.approx(val_correct.mean(), abs=1e-6)
    assert metrics["best_val_acc"] == pytest.approx(val_correct.mean(), abs=1e-6)
    # the epoch's training loss is reduced too: the ranks trained on different shards
    assert ranks[0]["fit"]["train/loss"] == pytest.approx(ranks[1]["fit"]["train/loss"], rel=1e-6)

    # test metrics: every test image counted exactly once, with the saved model's predictions
    expected_cm = np.zeros((4, 4), dtype=np.int64)
    np.add.at(expected_cm, (test_y, test_pred), 1)
    assert metrics["confusion_matrix"] == expected_cm.tolist() and metrics["n"] == len(test_y) == 11
    assert metrics["acc"] == pytest.approx((test_pred == test_y).mean())

    # artifacts come from rank 0 only: every TensorBoard event file carries its process id
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and {f.name.split(".")[-2] for f in events} == {str(ranks[0]["pid"])}
    assert (run_dir / "classification_report.txt").is_file() and not list(run_dir.rglob("*.tmp"))
