"""The prepared GPU measurement (tumorcls.bench.gpu_session) runs every step end to end on CPU with --smoke, and
sums SimpleProfiler's report into the fit breakdown it promises."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.paths import REPO
from tumorcls.bench import gpu_session

# (action, mean s, calls, total s), as SimpleProfiler lays them out: "|  name\t|  mean\t|  calls\t|  total\t|  %\t|"
ROWS = [
    ("Action", "Mean duration (s)", "Num calls", "Total time (s)"),
    ("Total", "-", "100", "10.0"),
    ("run_training_epoch", "4.5", "2", "9.0"),
    ("[LightningModule]TumorClassifier.optimizer_step", "0.07", "100", "7.0"),
    ("[_TrainingEpochLoop].train_dataloader_next", "0.01", "100", "1.0"),
    ("save_checkpoint", "0.1", "4", "0.4"),
    ("[Callback]ConfusionMatrixLogger.on_validation_end", "0.1", "2", "0.2"),
    ("[Callback]EpochHistory.on_train_epoch_end", "0.05", "2", "0.1"),
]
PROFILE = "FIT Profiler Report\n\n" + "\n".join("|  " + "\t|  ".join(row) + "\t|  1.0\t|" for row in ROWS)


def test_the_profile_report_is_summed_into_the_fit_breakdown() -> None:
    rows = gpu_session.parse_profile(PROFILE)
    assert rows["save_checkpoint"] == {"calls": 4, "total": 0.4} and "Total" not in rows and "Action" not in rows
    parts = gpu_session.breakdown(rows, fit_seconds=10.0)
    steps = parts["train steps (forward, backward, optimizer)"]
    assert steps == {"seconds": 7.0, "percent_of_fit": 70.0}
    assert parts["checkpoint writes"]["seconds"] == 0.4
    assert parts["callbacks (figures, checkpoint bookkeeping, lr monitor, history)"]["seconds"] == 0.3
    assert parts["the rest (Lightning loop, sanity check, setup)"]["seconds"] == 10.0 - 7.0 - 1.0 - 0.4 - 0.3


def test_the_smoke_session_runs_every_step_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "session"
    argv = ["--out", str(out), "--smoke", "--variants", "no_cuda_graphs", "--seeds", "", "--bench-runs", "bf16_graphs"]
    assert gpu_session.main([*argv, "--repo", str(REPO), "--before", str(REPO)]) == 0
    result = json.loads((out / "session.json").read_text())
    before, after, variant = (
        result[k][n] for k, n in (("before", "seed42"), ("after", "default"), ("after", "no_cuda_graphs"))
    )
    assert variant["returncode"] == 0 and "model.cuda_graphs=false" in variant["command"]
    assert after["wall_seconds"] > after["fit_seconds"] > 0 and after["test_seconds"] >= 0 and 0 <= after["acc"] <= 1
    assert before["returncode"] == 0 and "model.cuda_graphs" not in before["command"]
    assert result["device"] == "CPU" and result["smoke"] is True and result["skipped"] == []
    for code in ("before", "after"):  # each profiled run's breakdown, and its report beside session.json
        breakdown = result["profile"][code]
        assert breakdown["train steps (forward, backward, optimizer)"]["seconds"] > 0
        assert breakdown["checkpoint writes"]["seconds"] > 0
        assert "FIT Profiler Report" in (out / f"profile_{code}.txt").read_text()
    bench = result["bench"]["bf16_graphs"]
    assert bench["train"] > 0 and bench["eval"] > 0 and bench["predict"] > 0
    table = (out / "session.md").read_text()
    assert (
        "| after | no_cuda_graphs |" in table
        and "| before | seed42 |" in table
        and "| train steps (forward, backward, optimizer) |" in table
    )
    assert "===== exit 0" in (out / "log.txt").read_text()


def test_a_step_that_does_not_fit_the_budget_is_skipped_and_recorded(tmp_path: Path) -> None:
    args = gpu_session.parse_args(["--out", str(tmp_path), "--budget", "100"])
    session = gpu_session.Session(args)
    assert session.affords("a", 90) and not session.affords("b", 120)
    assert session.result["skipped"] == ["b"]


def test_an_unknown_variant_is_refused(tmp_path: Path, capsys) -> None:
    assert gpu_session.main(["--out", str(tmp_path), "--variants", "turbo", "--repo", str(REPO)]) == 2
    assert "unknown --variants/--bench-runs ['turbo']" in capsys.readouterr().err
