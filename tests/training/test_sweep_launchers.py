"""Sweeps on a cluster: ``hydra/launcher=slurm`` (SLURM through hydra-submitit-launcher) composes to submitit's
SLURM launcher with our defaults, and ``hydra/launcher=local`` (the same launcher's local executor) runs two trials
of a tiny sweep as real subprocesses, each in its own run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers.paths import CONF, REPO
from tests.helpers.predictions import accuracy_of, prediction_rows
from tests.helpers.train_runs import small_run_args

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra (hydra-submitit-launcher)")


def _launcher(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={name}", *overrides], return_hydra_config=True)
    return cfg.hydra.launcher


def test_the_slurm_launcher_composes_with_our_defaults_and_takes_overrides() -> None:
    launcher = _launcher("slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4")
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 4, 1)
    assert (launcher.timeout_min, launcher.max_num_timeout) == (240, 0)
    assert launcher.submitit_folder.endswith("/.submitit/%j")  # in the sweep folder


def test_the_local_launcher_is_submitits_local_executor() -> None:
    launcher = _launcher("local")
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert launcher.gpus_per_node == 0


@pytest.mark.slow
def test_two_trials_run_as_subprocesses_each_in_its_own_run_folder(synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [*small_run_args(synthetic_root), "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", "seed=1,2"]
    proc = subprocess.Popen(
        [sys.executable, "train.py", "-m", "hydra/launcher=local", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "Submitit 'local' sweep output dir" in out
    metrics = {job: json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1")}
    assert [metrics[job]["seed"] for job in ("0", "1")] == [1, 2]
    for job, found in metrics.items():
        predictions = sweep / job / "predictions.csv"
        assert found["n"] == len(prediction_rows(predictions)) == 16  # the synthetic Testing split
        assert found["acc"] == pytest.approx(accuracy_of(predictions))  # the figure is the job's predictions'
        assert (sweep / job / "checkpoints" / "best.ckpt").is_file()
    # submitit's local executor names each job by the process id it ran in: two processes, neither this one
    jobs = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit())
    assert len(jobs) == 2 and str(os.getpid()) not in jobs and str(proc.pid) not in jobs
    for job in jobs:
        assert (sweep / ".submitit" / job / f"{job}_0_result.pkl").is_file()
