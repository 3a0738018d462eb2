"""The main job's whole command, phase by phase: this checkout against an older one, alternating, on one machine.

    python -m tumorcls.bench.main_job --before /work/before --rounds 3 [--out DIR] [--data ROOT] [overrides...]

Each round runs the command (default: the tiny CPU job ``python train.py trainer=cpu
model.backbone=test_efficientnet model.pretrained=false model.weights=null data.size=32 trainer.max_epochs=2``)
once in each checkout, as a user runs it, in a fresh process with its own run folder; odd rounds start with the
older checkout, even rounds with this one, so that a drifting machine load falls on both. This checkout's runs share
one decode cache folder (``<out>/decode-cache``, emptied at the start): the first run writes it, the later ones map
it, as a user's second run (or a sweep's next trial) does; the older checkout decodes every time (it has no cache, or
its own setting). Then ``train.py --help`` of each, once per round.

Each run is started through tumorcls/bench/phase_probe.py, which times the phases the same way in both checkouts
(wall clock, from outside their code): start-up (interpreter, imports, Hydra: up to ``run()``), build (config
checks, run folder, data module, model, trainer: up to ``fit()``), decode and fit (metrics.json's
``data_seconds``/``fit_seconds``), calibration and test (``calibrate_seconds``/``test_seconds``), artifacts (the
rest of the test-and-report stage: metrics.json, figures, predictions, loggers), exit (after ``run()`` returns:
Hydra's wrap-up and the interpreter's exit); "other" is what the phases leave of the whole command (metrics.json's
0.1 s rounding, the probe's own start). ``--importtime`` adds one ``python -X importtime`` run of ``--help`` and
of the command per checkout (not timed: importtime slows imports down), reporting the summed import time.

Writes ``<out>/main_job.json`` (every run) and ``<out>/main_job.md`` (the table, medians, the machine, the date);
prints the table. The goal line compares medians of the whole command minus ``fit_seconds``: this checkout's
cache-hit runs against the older checkout's runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

THIS_CHECKOUT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("phase_probe.py")
COMMAND = (
    "trainer=cpu",
    "model.backbone=test_efficientnet",
    "model.pretrained=false",
    "model.weights=null",
    "data.size=32",
    "trainer.max_epochs=2",
)
PHASES = ("whole", "startup", "build", "decode", "fit", "calibrate", "test", "artifacts", "exit", "other", "non_fit")
HEADINGS = {
    "whole": "whole command",
    "startup": "start-up (imports, Hydra)",
    "build": "build",
    "decode": "decode",
    "fit": "fit",
    "calibrate": "calibration",
    "test": "test",
    "artifacts": "artifacts",
    "exit": "exit",
    "other": "other",
    "non_fit": "whole minus fit",
}
GOAL_RATIO = 0.40  # this checkout's whole-minus-fit at most this share of the older checkout's


def phases(start: float, end: float, stamps: dict[str, Any], metrics: dict[str, Any]) -> dict[str, float]:
    """The phases of one run, in seconds, from its wall-clock ``start``/``end``, the probe's stamps and metrics.json."""
    run_start, run_end = stamps["run"]
    fit_start, fit_end = stamps["fit"]
    report_start, report_end = stamps.get("test_and_report") or (fit_end, fit_end)
    calibrate, test = metrics.get("calibrate_seconds") or 0.0, metrics.get("test_seconds") or 0.0
    out = {
        "whole": end - start,
        "startup": run_start - start,
        "build": fit_start - run_start,
        "decode": float(metrics["data_seconds"]),
        "fit": float(metrics["fit_seconds"]),
        "calibrate": float(calibrate),
        "test": float(test),
        "artifacts": (report_end - report_start) - calibrate - test,
        "exit": end - run_end,
    }
    out["other"] = out["whole"] - sum(value for key, value in out.items() if key != "whole")
    out["non_fit"] = out["whole"] - out["fit"]
    return {key: round(value, 3) for key, value in out.items()}


def import_seconds(importtime_stderr: str) -> float:
    """The summed self time of every import in ``python -X importtime`` output, in seconds."""
    total = 0
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            field = line.split("|", 1)[0].split(":", 1)[1].strip()
            if field.isdigit():
                total += int(field)
    return round(total / 1e6, 3)


def checkout_env(root: Path, cache: Path | None) -> dict[str, str]:
    """The environment of a run in ``root``: its own code first on the path; this checkout's decode cache folder."""
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    if cache is not None:
        env["TUMORCLS_CACHE"] = str(cache)
    return env


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
        return (out.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty.strip() else "")
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln]
        model = names[0] if names else model
    return {"platform": platform.platform(), "cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


class Bench:
    """The options, the two checkouts, the log and the result (rewritten after every run)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.cache = self.out / "decode-cache"
        self.roots = {"before": Path(args.before).resolve(), "after": Path(args.repo).resolve()}
        self.command = [*COMMAND, *args.overrides, *([f"data.root={args.data}"] if args.data else [])]
        self.result: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "command": "python train.py " + " ".join(self.command),
            "checkouts": {name: {"path": str(p), "commit": git_commit(p)} for name, p in self.roots.items()},
            "runs": [],
            "help": [],
            "imports": {},
        }

    def cache_for(self, name: str) -> Path | None:
        return self.cache if name == "after" else None

    def execute(self, name: str, cmd: list[str]) -> tuple[subprocess.CompletedProcess | None, float, float]:
        """``cmd`` in checkout ``name``; (the process or None on timeout, start, end), its output in log.txt."""
        start = time.time()
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.roots[name],
                env=checkout_env(self.roots[name], self.cache_for(name)),
                capture_output=True,
                text=True,
                timeout=self.args.timeout,
            )
        except subprocess.TimeoutExpired:
            proc = None
        end = time.time()
        with (self.out / "log.txt").open("a") as log:
            status = "timeout" if proc is None else proc.returncode
            log.write(f"\n===== {name}: {' '.join(cmd)}\n===== exit {status}, {end - start:.2f} s\n")
            if proc is not None:
                log.write((proc.stdout + proc.stderr)[-20000:])
        return proc, start, end

    def train(self, name: str, round_no: int) -> dict[str, Any]:
        """One run of the command in checkout ``name``, through the phase probe."""
        run_dir = self.out / "runs" / f"{name}-r{round_no}"
        shutil.rmtree(run_dir, ignore_errors=True)
        stamps_file = self.out / "runs" / f"{name}-r{round_no}.phases.json"
        cmd = [sys.executable, str(PROBE), str(stamps_file), "train.py", *self.command, f"hydra.run.dir={run_dir}"]
        load = round(os.getloadavg()[0], 2)
        proc, start, end = self.execute(name, cmd)
        row: dict[str, Any] = {"code": name, "round": round_no, "load_1min": load, "returncode": "timeout"}
        if proc is not None:
            row["returncode"] = proc.returncode
        metrics_file = run_dir / "metrics.json"
        if row["returncode"] == 0 and metrics_file.is_file() and stamps_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            row["cache"] = (metrics.get("data_cache") or {}).get("state", "none")
            row["phases"] = phases(start, end, json.loads(stamps_file.read_text()), metrics)
        return row

    def help(self, name: str, round_no: int) -> dict[str, Any]:
        proc, start, end = self.execute(name, [sys.executable, "train.py", "--help"])
        ok = proc is not None and proc.returncode == 0
        return {"code": name, "round": round_no, "returncode": 0 if ok else 1, "seconds": round(end - start, 3)}

    def imports(self, name: str) -> dict[str, Any]:
        """Summed import time of ``--help`` and of the command under ``-X importtime`` (one untimed run each)."""
        run_dir = self.out / "runs" / f"{name}-importtime"
        shutil.rmtree(run_dir, ignore_errors=True)
        out: dict[str, Any] = {}
        for what, extra in (("help", ["--help"]), ("run", [*self.command, f"hydra.run.dir={run_dir}"])):
            proc, _, _ = self.execute(name, [sys.executable, "-X", "importtime", "train.py", *extra])
            out[what] = import_seconds(proc.stderr) if proc is not None and proc.returncode == 0 else None
        return out

    def save(self) -> None:
        self.result["summary"] = summarize(self.result["runs"], self.result["help"])
        (self.out / "main_job.json").write_text(json.dumps(self.result, indent=2))
        (self.out / "main_job.md").write_text(markdown(self.result))


def group_of(row: dict[str, Any]) -> str:
    if row["code"] == "before":
        return "before"
    return "after, cache hit" if row.get("cache") == "hit" else f"after, cache {row.get('cache', 'none')}"


def summarize(runs: list[dict[str, Any]], helps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median phases per group (before; after with the cache hit; after's other runs) and the goal's ratio."""
    groups: dict[str, list[dict[str, float]]] = {}
    for row in runs:
        if "phases" in row:
            groups.setdefault(group_of(row), []).append(row["phases"])
    medians = {g: {k: round(statistics.median(p[k] for p in rows), 3) for k in PHASES} for g, rows in groups.items()}
    counts = {g: len(rows) for g, rows in groups.items()}
    help_seconds = {}
    for code in ("before", "after"):
        values = [h["seconds"] for h in helps if h["code"] == code and h["returncode"] == 0]
        help_seconds[code] = round(statistics.median(values), 3) if values else None
    summary: dict[str, Any] = {"medians": medians, "runs": counts, "help_seconds": help_seconds}
    if "before" in medians and "after, cache hit" in medians:
        ratio = medians["after, cache hit"]["non_fit"] / medians["before"]["non_fit"]
        summary["non_fit_ratio"] = round(ratio, 3)
        summary["goal_met"] = ratio <= GOAL_RATIO
    return summary


def _row(label: str, values: dict[str, float], extra: str = "") -> str:
    return f"| {label} | " + " | ".join(f"{values[k]:.2f}" for k in PHASES) + f" | {extra} |"


def markdown(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["summary"]
    lines = [f"# The main job, phase by phase: {result['date']}", ""]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}.", ""]
    lines += [f"Command: `{result['command']}`", ""]
    for name, c in result["checkouts"].items():
        lines.append(f"- {name}: {c['path']} ({c['commit']})")
    lines += ["", "Seconds; each row one run (load = the 1-minute load average when it started).", ""]
    lines += ["| run | " + " | ".join(HEADINGS[k] for k in PHASES) + " | load, cache |"]
    lines += ["|---" * (len(PHASES) + 2) + "|"]
    for row in result["runs"]:
        label = f"{row['code']} r{row['round']}"
        if "phases" in row:
            lines.append(_row(label, row["phases"], f"{row['load_1min']}, {row.get('cache', '-')}"))
        else:
            lines.append(f"| {label} | failed ({row['returncode']}) |" + " |" * len(PHASES))
    lines += ["", "Medians:", "", "| group | " + " | ".join(HEADINGS[k] for k in PHASES) + " | runs |"]
    lines += ["|---" * (len(PHASES) + 2) + "|"]
    lines += [_row(g, v, str(s["runs"][g])) for g, v in s["medians"].items()]
    helps = s["help_seconds"]
    lines += ["", f"`train.py --help`, median seconds: before {helps['before']}, after {helps['after']}.", ""]
    for code, figures in result["imports"].items():
        summed = f"--help {figures['help']} s, the command {figures['run']} s"
        lines.append(f"Imports (-X importtime, summed), {code}: {summed}.")
    if "non_fit_ratio" in s:
        verdict = "met" if s["goal_met"] else "NOT met"
        lines += ["", f"Whole command minus fit, after (cache hit) / before: {s['non_fit_ratio']:.1%} "]
        lines[-1] += f"(goal <= {GOAL_RATIO:.0%}: {verdict})."
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tumorcls.bench.main_job", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--before", required=True, help="a checkout of the code to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (one run of each checkout per round)")
    parser.add_argument("--out", default=None, help="folder for main_job.json/.md, log.txt, runs (default: ./main_job)")
    parser.add_argument("--data", default=None, help="dataset root (default: TUMORCLS_DATA / the config's)")
    parser.add_argument("--repo", default=str(THIS_CHECKOUT), help="this checkout (default: the one this file is in)")
    parser.add_argument("--no-importtime", dest="importtime", action="store_false", help="skip the -X importtime runs")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run at most")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [p for p in (args.repo, args.before) if not (Path(p) / "train.py").is_file()]
    if missing or args.rounds < 1:
        print(f"error: no train.py in {missing}" if missing else "error: --rounds must be >= 1", file=sys.stderr)
        return 2
    out = Path(args.out or "main_job").resolve()
    shutil.rmtree(out / "decode-cache", ignore_errors=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    bench = Bench(args)
    for round_no in range(1, args.rounds + 1):
        order = ("before", "after") if round_no % 2 else ("after", "before")
        for name in order:
            bench.result["runs"].append(bench.train(name, round_no))
            bench.save()
        bench.result["help"] += [bench.help(name, round_no) for name in order]
        bench.save()
    if args.importtime:
        bench.result["imports"] = {name: bench.imports(name) for name in ("before", "after")}
    bench.save()
    print((out / "main_job.md").read_text())
    failed = [r for r in [*bench.result["runs"], *bench.result["help"]] if r["returncode"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
