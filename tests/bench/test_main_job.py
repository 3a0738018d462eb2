"""The main-job benchmark (tumorcls.bench.main_job): the phases of a run add up to its whole command, import time is
summed from ``-X importtime``, the medians and the goal's ratio, two checkouts alternating round by round; and end
to end on synthetic data, one round of each checkout through the phase probe, this one's writing the decode cache
(tests/bench/test_gpu_session.py sees a later run of this checkout map it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.paths import REPO
from tumorcls.bench import main_job

STAMPS = {"run": [100.0, 112.0], "fit": [100.5, 110.0], "test_and_report": [110.2, 111.9]}
METRICS = {"data_seconds": 2.0, "fit_seconds": 7.0, "calibrate_seconds": 0.4, "test_seconds": 0.3}


def test_the_phases_of_a_run_add_up_to_its_whole_command() -> None:
    p = main_job.phases(96.0, 112.5, STAMPS, METRICS)
    assert p["whole"] == 16.5 and p["startup"] == 4.0 and p["build"] == 0.5 and p["exit"] == 0.5
    assert (p["decode"], p["fit"], p["calibrate"], p["test"]) == (2.0, 7.0, 0.4, 0.3)
    assert p["artifacts"] == pytest.approx(1.7 - 0.4 - 0.3)
    parts = sum(v for k, v in p.items() if k not in ("whole", "non_fit"))
    assert parts == pytest.approx(p["whole"]) and p["other"] == pytest.approx(16.5 - 4 - 0.5 - 9.0 - 1.7 - 0.5)
    assert p["non_fit"] == 9.5


def test_import_time_is_the_sum_of_the_self_times() -> None:
    text = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:    300000 |     300000 |   _io",
            "import time:   2000000 |    2300000 | torch",
            "some other line",
        ]
    )
    assert main_job.import_seconds(text) == 2.3


def row(code: str, non_fit: float, cache: str = "none", round_no: int = 1) -> dict:
    phases = dict.fromkeys(main_job.PHASES, 1.0) | {"non_fit": non_fit}
    return {"code": code, "round": round_no, "returncode": 0, "cache": cache, "phases": phases}


def test_the_goal_compares_the_cache_hit_runs_with_the_runs_before() -> None:
    runs = [row("before", 10.0), row("after", 8.0, "written"), row("before", 12.0), row("after", 4.0, "hit")]
    runs += [row("before", 11.0), row("after", 5.0, "hit")]
    summary = main_job.summarize(runs, [{"code": "before", "returncode": 0, "seconds": 7.0}])
    assert summary["runs"] == {"before": 3, "after, cache written": 1, "after, cache hit": 2}
    assert summary["medians"]["before"]["non_fit"] == 11.0 and summary["medians"]["after, cache hit"]["non_fit"] == 4.5
    assert summary["non_fit_ratio"] == pytest.approx(4.5 / 11.0, abs=1e-3) and summary["goal_met"] is False
    assert summary["help_seconds"] == {"before": 7.0, "after": None}


@pytest.mark.slow
def test_a_round_runs_each_checkout_through_the_probe_in_its_own_run_folder(
    synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    argv = ["--before", str(REPO), "--rounds", "1", "--out", str(out), "--data", str(synthetic_root)]
    tiny = ["callbacks=plain", "+trainer.enable_progress_bar=false", "trainer.max_epochs=1"]
    assert main_job.main([*argv, "--no-importtime", *tiny]) == 0
    result = json.loads((out / "main_job.json").read_text())
    runs = result["runs"]
    assert [(r["code"], r["round"], r["cache"]) for r in runs][1] == ("after", 1, "written")  # into the bench's cache
    assert [(r["code"], r["round"]) for r in runs] == [("before", 1), ("after", 1)]
    assert (out / "decode-cache").is_dir()
    for r in runs:
        assert r["returncode"] == 0 and r["phases"]["whole"] > r["phases"]["fit"] > 0 and r["phases"]["startup"] > 0
        assert (out / "runs" / f"{r['code']}-r{r['round']}" / "metrics.json").is_file()  # each its own run folder
    assert result["summary"]["runs"] == {"before": 1, "after, cache written": 1}
    assert [h["returncode"] for h in result["help"]] == [0] * 2
    assert "| after r1 |" in (out / "main_job.md").read_text()
    assert result["machine"]["cores"] >= 1 and result["command"].startswith("python train.py trainer=cpu")


def test_rounds_alternate_the_checkout_that_runs_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """So that a drifting machine load falls on both; this checkout's later runs find its first run's cache."""
    states = iter(["written", "hit", "hit"])

    def fake_train(_bench, name: str, round_no: int) -> dict:
        return row(name, 1.0, next(states) if name == "after" else "none", round_no) | {"load_1min": 0.5}

    monkeypatch.setattr(main_job.Bench, "train", fake_train)
    helped = {"returncode": 0, "seconds": 1.0}
    monkeypatch.setattr(main_job.Bench, "help", lambda _b, name, r: {"code": name, "round": r, **helped})
    argv = ["--before", str(REPO), "--rounds", "3", "--out", str(tmp_path), "--no-importtime"]
    assert main_job.main(argv) == 0
    result = json.loads((tmp_path / "main_job.json").read_text())
    order = [(r["code"], r["round"]) for r in result["runs"]]
    assert order == [("before", 1), ("after", 1), ("after", 2), ("before", 2), ("before", 3), ("after", 3)]
    assert result["summary"]["runs"] == {"before": 3, "after, cache written": 1, "after, cache hit": 2}
    assert "Whole command minus fit, after (cache hit) / before:" in (tmp_path / "main_job.md").read_text()


def test_a_checkout_without_train_py_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_job.main(["--before", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: no train.py in ['{tmp_path}']"
