"""A killed ``train.py -m hparams_search=optuna`` sweep resumes where it stopped: run again with the same sweep
folder, it keeps the finished trials (their values and run folders), runs the killed trial's parameters again and
stops at n_trials in total. Each trial's value is its kept checkpoint's score (best.ckpt)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.paths import REPO
from tests.helpers.train_runs import small_run_args

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the sweep extra: pip install -e '.[sweep]'")

N_TRIALS = 3


def _command(root: Path, sweep: Path) -> list[str]:
    tiny = [*small_run_args(root), "data.size=32", "trainer.max_epochs=1", "logger=csv", "test=false"]
    return [sys.executable, "train.py", "hparams_search=optuna", f"hydra.sweeper.n_trials={N_TRIALS}", *tiny] + [
        f"hydra.sweep.dir={sweep}"
    ]


def _states(db: Path) -> list[str]:
    """The trials' states, read while the sweep writes (a locked database reads as 'not yet')."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return [state for (state,) in connection.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.OperationalError:
        return []


def _kill_during_the_second_trial(command: list[str], sweep: Path, log: Path) -> list[str]:
    """Start the sweep in its own process group and SIGKILL it as soon as one trial is complete and the next
    one's job has started; the states it left."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            states = _states(sweep / "optuna.db")
            # the second trial's job has started (its run folder exists): every parameter of it has been drawn
            if "COMPLETE" in states and "RUNNING" in states and (sweep / "1").is_dir():
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    return _states(sweep / "optuna.db")


def _best_score(run_dir: Path) -> float:
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint") and v.get("monitor"))
    return float(state["best_model_score"])


@pytest.mark.slow
def test_a_killed_sweep_resumes_where_it_stopped(synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    command = _command(synthetic_root, sweep)
    left = _kill_during_the_second_trial(command, sweep, tmp_path / "killed.log")
    assert left == ["COMPLETE", "RUNNING"], left
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    first = optuna.load_study(study_name="tumorcls", storage=storage).trials[0]
    first_ckpt = (sweep / "0" / "checkpoints" / "best.ckpt").read_bytes()
    killed_params = optuna.load_study(study_name="tumorcls", storage=storage).trials[1].params

    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    output = proc.stdout + proc.stderr
    assert "1 of n_trials=3 trials finished, 1 killed and queued again, 2 to run" in output
    # only the two trials left were launched, numbered after the study's trials
    assert [int(n) for n in re.findall(r"#(\d+) : ", output)] == [2, 3]

    trials = optuna.load_study(study_name="tumorcls", storage=storage).trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.user_attrs.get("killed") for t in trials] == [None, True, None, None]
    assert (trials[0].params, trials[0].value) == (first.params, first.value)  # the finished trial is kept
    assert (sweep / "0" / "checkpoints" / "best.ckpt").read_bytes() == first_ckpt  # and its folder untouched
    assert trials[2].params == killed_params  # the killed trial ran again first
    for trial in trials:
        if trial.state.name == "COMPLETE":  # folder N is trial N's; its value is its best.ckpt's score
            assert trial.value == pytest.approx(_best_score(sweep / str(trial.number)), abs=1e-7)
    results = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {max(t.value for t in trials if t.value is not None)}" in results

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "3 of n_trials=3 trials finished, 0 killed and queued again, 0 to run" in (
        again.stdout + again.stderr
    )
    assert len(optuna.load_study(study_name="tumorcls", storage=storage).trials) == 4  # nothing more ran
