"""The debug config group through train.py: fast_dev_run runs every stage on one batch; overfit learns one
batch by heart (what a healthy model and loss must manage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.train_runs import small_run_args, train


@pytest.mark.slow
def test_fast_dev_run_runs_every_stage_once_and_writes_the_test_artifacts(synthetic_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "debug"
    proc = train([*small_run_args(synthetic_root), "debug=fast_dev_run", f"hydra.run.dir={run_dir}"])
    assert "Running in `fast_dev_run` mode" in proc.stdout + proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config"]["task_name"] == "debug" and metrics["config"]["trainer"]["fast_dev_run"] is True
    assert metrics["best_checkpoint"] is None and metrics["temperature_fit"] is None  # fast_dev_run saves nothing
    assert metrics["n"] == 16 and sum(map(sum, metrics["confusion_matrix"])) == 16
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "tensorboard").exists()


@pytest.mark.slow
def test_overfit_learns_one_batch_by_heart(synthetic_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "overfit"
    train([*small_run_args(synthetic_root), "debug=overfit", "logger=csv", f"hydra.run.dir={run_dir}"])
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    history = next(v for k, v in ckpt["callbacks"].items() if "EpochHistory" in k)["history"]
    assert len(history) == 30 and not (run_dir / "metrics.json").exists()  # test: false
    assert history[-1]["train/acc"] == 1.0
    assert history[-1]["train/loss"] < history[0]["train/loss"] / 2
