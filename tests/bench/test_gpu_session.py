"""The prepared GPU measurement (tumorcls.bench.gpu_session) runs every step end to end on CPU with --smoke (the
code before, the defaults, a lever, a variant, further seeds, bench rates), times each command phase by phase,
sums SimpleProfiler's report into the fit breakdown it promises, and gives the further seeds to the fastest lever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.paths import REPO
from tests.helpers.predictions import accuracy_of
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


@pytest.mark.slow  # train.py subprocesses
def test_the_smoke_session_runs_every_step_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "session"
    # no variants or further seeds here: the runs they add are test_the_further_seeds_and_the_variants_go_...
    argv = ["--out", str(out), "--smoke", "--variants", "", "--levers", "step", "--seeds", ""]
    argv += ["--bench-runs", "bf16_graphs"]  # one bench run: train, eval and predict rates
    assert gpu_session.main([*argv, "--repo", str(REPO), "--before", str(REPO)]) == 0
    result = json.loads((out / "session.json").read_text())
    before, after, lever = (result[k][n] for k, n in (("before", "seed42"), ("after", "default"), ("after", "step")))
    assert set(result["after"]) == {"default", "step"}
    assert lever["returncode"] == 0 and "model.cuda_graphs=step" in lever["command"]
    assert before["returncode"] == 0 and "model.cuda_graphs" not in before["command"]
    for run in (before, after, lever):  # the whole command phase by phase, through the probe
        p = run["phases"]
        assert p["whole"] > p["fit"] > 0 and p["startup"] > 0 and p["artifacts"] > 0
        assert run["acc"] == pytest.approx(accuracy_of(run_dir_of(run["command"]) / "predictions.csv"), abs=1e-6)
        assert abs(p["whole"] - run["wall_seconds"]) < 0.05 and p["fit"] == run["fit_seconds"]
    assert after["cache"] == "written" and lever["cache"] == "hit"  # this checkout's runs share one decode cache
    assert result["device"] == "CPU" and result["smoke"] is True and result["skipped"] == []
    tests = result["gpu_tests"]  # the levers' GPU-only parity tests: collected and run, skipped without a GPU
    assert tests["returncode"] == 0 and "skipped" in tests["summary"] and "failed" not in tests["summary"]
    for code in ("before", "after", "step"):  # each profiled run's breakdown, and its report beside session.json
        breakdown = result["profile"][code]
        assert breakdown["train steps (forward, backward, optimizer)"]["seconds"] > 0
        assert breakdown["checkpoint writes"]["seconds"] > 0
        assert "FIT Profiler Report" in (out / f"profile_{code}.txt").read_text()
    bench = result["bench"]
    assert (
        bench["bf16_graphs"]["train"] > 0 and bench["bf16_graphs"]["eval"] > 0 and bench["bf16_graphs"]["predict"] > 0
    )
    table = (out / "session.md").read_text()
    assert "| after | default |" in table and "| before | seed42 |" in table and "| after | step |" in table
    assert "| train steps (forward, backward, optimizer) |" in table
    assert "===== exit 0" in (out / "log.txt").read_text()


def run_dir_of(command: str) -> Path:
    return Path(next(a for a in command.split() if a.startswith("hydra.run.dir=")).split("=", 1)[1])


def run(fit: float, acc: float = 0.8) -> dict:
    phases = dict.fromkeys(gpu_session.PHASE_COLUMNS, 1.0) | {"whole": fit + 10, "fit": fit}
    return {"returncode": 0, "phases": phases, "acc": acc}


def test_seeds_go_to_the_fastest_lever_only_when_it_beats_the_defaults() -> None:
    result = {"before": {}, "after": {"default": run(30), "step": run(20), "step+eval_graphs": run(18), "fp32": run(5)}}
    assert gpu_session.fastest_lever(result) == "step+eval_graphs"  # a variant (fp32) is no lever
    result["after"] = {"default": run(30), "step": run(31)}
    assert gpu_session.fastest_lever(result) is None


def test_the_seed_summary_groups_a_configuration_s_seeds() -> None:
    result = {
        "before": {"seed42": run(60, 0.79)},
        "after": {"default": run(30, 0.78), "default/seed2": run(34, 0.76), "step": run(20), "fp32": run(40)},
    }
    (row,) = gpu_session.seed_summary(result)  # one seed alone is no summary
    assert (row["code"], row["config"], row["seeds"], row["fit"]) == ("after", "default", 2, 32.0)
    assert row["acc_mean"] == pytest.approx(0.77) and row["acc_sd"] == pytest.approx(0.01414, abs=1e-4)


def test_the_further_seeds_and_the_variants_go_to_the_defaults_the_fastest_lever_and_the_code_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = gpu_session.parse_args(["--out", str(tmp_path), "--before", str(REPO), "--repo", str(REPO)])
    args.seeds, args.runs = [2, 3], str(tmp_path / "runs")
    session = gpu_session.Session(args)
    session.result["after"] = {"default": run(30), "step": run(20), "fp32": run(5)}
    calls = []

    def fake_train_run(_session, repo: Path, name: str, overrides: list[str], profile: str | None = None) -> dict:
        calls.append((repo, name, overrides, profile))
        return run(1)

    monkeypatch.setattr(gpu_session, "train_run", fake_train_run)
    gpu_session.run_seeds(session)
    gpu_session.run_before(session, args.seeds)
    gpu_session.run_variants(session, ["eval_graphs"])
    names = ["default-s2", "default-s3", "step-s2", "step-s3", "before-seed2", "before-seed3", "eval_graphs"]
    assert [c[1] for c in calls] == names
    assert calls[-1][2] == gpu_session.VARIANTS["eval_graphs"] == ["model.cuda_graphs_eval=true"]
    assert calls[2][2] == [*gpu_session.LEVERS["step"], "seed=2"] and calls[0][2] == ["seed=2"]
    assert all(c[3] is None for c in calls) and calls[-2][0] == Path(REPO)  # unprofiled; before: --before's code
    assert {"default/seed2", "step/seed3", "eval_graphs"} <= set(session.result["after"])
    assert "seed3" in session.result["before"]
    summary = {(r["code"], r["config"]): r["seeds"] for r in gpu_session.seed_summary(session.result)}
    assert summary == {("after", "default"): 3, ("after", "step"): 3, ("before", "default"): 2}


def test_the_gpu_tests_summary_is_pytest_s_line_not_a_plugin_s_last_words() -> None:
    output = "sss\n========== 5 skipped, 2 deselected in 3.20s ==========\n  warner(SomePluginWarning(text))\n"
    assert gpu_session.pytest_summary(output) == "5 skipped, 2 deselected in 3.20s"
    assert gpu_session.pytest_summary("Traceback (most recent call last):\nImportError: x\n") == ""


def test_a_step_that_does_not_fit_the_budget_is_skipped_and_recorded(tmp_path: Path) -> None:
    args = gpu_session.parse_args(["--out", str(tmp_path), "--budget", "100"])
    session = gpu_session.Session(args)
    assert session.affords("a", 90) and not session.affords("b", 120)
    assert session.result["skipped"] == ["b"]


def test_an_unknown_variant_is_refused(tmp_path: Path, capsys) -> None:
    assert gpu_session.main(["--out", str(tmp_path), "--variants", "turbo", "--repo", str(REPO)]) == 2
    assert "unknown --variants/--levers/--bench-runs ['turbo']" in capsys.readouterr().err
