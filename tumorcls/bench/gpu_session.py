"""One-shot measurement of the main job for a session that has a GPU: the job before and after the speed work, where
the fit's time goes, and the step, evaluation and predict rates, in one command that writes one JSON and one table.

    bash .gpu/env.sh python3 -m tumorcls.bench.gpu_session --out $OUT --before .gpu/before   # on the GPU machine
    python -m tumorcls.bench.gpu_session --out /tmp/gs --smoke                              # the same steps, tiny, CPU

From the repository root (``train.py`` is run as a user runs it, one subprocess per run), in this order of
importance, each step skipped when what is left of ``--budget`` seconds would not cover it (session.json and
session.md are rewritten after every step, log.txt collects every command's output):

1. ``python train.py model=effnet_b0`` of the code before (``--before``: a checkout of it) under Lightning's
   SimpleProfiler: the whole command phase by phase (start-up, build, decode, fit, calibration, test, artifacts,
   exit: tumorcls/bench/phase_probe.py, as tumorcls.bench.main_job times them), the accuracy, the fit's breakdown;
2. the same command of this checkout with its defaults, under the profiler too (the breakdown after);
3. the levers of the issue at seed 42, profiled (``--levers``): the whole step as one CUDA graph
   (``model.cuda_graphs=step``), with validation replayed from graphs too (``+ cuda_graphs_eval``); then the
   levers' GPU-only parity tests (pytest ``-k gpu``; they skip on CPU);
4. ``--seeds`` (the accuracy check) of the defaults and of the lever whose fit was fastest at seed 42;
5. ``python -m tumorcls.bench`` (``--bench-runs``, the first three here): predict in bf16 and graphed evaluation
   (the levers outside training), then the trainer's step at batch 32, evaluation and float32 predict rates;
6. each ``--variants`` entry (what each setting is worth, cuDNN autotuning first), the code before with
   ``--seeds``, and the remaining bench runs (the step's floor, fp32, eager, batch 128).

Each code's runs share one decode cache folder (``<runs>/decode-cache-after``, ``-before``): the first run writes it,
the others map it (each row says which); code from before the cache existed decodes every run, as it always did.

``--smoke`` swaps in a tiny model, a tiny synthetic dataset (written under ``--out`` unless ``--data`` is given),
one epoch and CPU, so that a test can run every step end to end. Nothing here is imported by product code.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tumorcls.bench.main_job import PROBE, checkout_env, phases

# train.py overrides per variant of this checkout (the defaults run first); LEVERS run right after the defaults
LEVERS: dict[str, list[str]] = {
    "step": ["model.cuda_graphs=step"],  # forward, loss, backward and Adam as one graph; manual optimisation
    "step+eval_graphs": ["model.cuda_graphs=step", "model.cuda_graphs_eval=true"],  # and validation from graphs
}
VARIANTS: dict[str, list[str]] = {
    **LEVERS,
    "eval_graphs": ["model.cuda_graphs_eval=true"],
    "step_fp32": ["model.cuda_graphs=step", "trainer.precision=32-true"],
    "fp32": ["trainer.precision=32-true"],
    "no_cuda_graphs": ["model.cuda_graphs=false"],
    "augment_on_cpu": ["data.augment_on=cpu"],
    "fp32+augment_on_cpu": ["trainer.precision=32-true", "data.augment_on=cpu"],
    "no_progress_bar": ["callbacks=plain"],
    "cudnn_benchmark": ["trainer.benchmark=true"],
    "before_settings": ["data.augment_on=cpu", "model.cuda_graphs=false"],  # the old defaults on this code
}
DEFAULT_VARIANTS = ["cudnn_benchmark", "eval_graphs", "step_fp32", "fp32", "no_cuda_graphs", "augment_on_cpu"]
ESTIMATE_S = {
    "before": 110,
    "after": 75,
    "bench": 45,
    "tests": 60,
}  # what a step may take at most, to plan within --budget
SMOKE_OVERRIDES = [
    "data.size=32",
    "data.batch_size=8",
    "model.backbone=test_efficientnet",
    "model.pretrained=false",
    "model.weights=null",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
]
STAGES = ("data_seconds", "fit_seconds", "calibrate_seconds", "test_seconds")  # metrics.json's timings
PHASE_COLUMNS = ("whole", "startup", "decode", "fit", "calibrate", "test", "artifacts", "exit")
# bench runs: name -> arguments of python -m tumorcls.bench (after the common ones)
BENCH_RUNS: dict[str, list[str]] = {
    # the levers outside training first: TorchPredictor in bf16 and validation's forward from graphs (batch 512)
    "predict_bf16": ["--parts", "predict", "--predict-bf16", "--eval-batch-size", "512"],
    "bf16_eval_graphs": ["--parts", "eval", "--eval-graphs", "--eval-batch-size", "512"],
    # the trainer's CUDA settings: bf16 autocast, CUDA graphs, batch 32; evaluation (bf16) and predict (float32,
    # as TorchPredictor runs by default) on batches of 512 in-memory images
    "bf16_graphs": ["--parts", "train,eval,predict", "--cuda-graphs", "--eval-batch-size", "512"],
    "bf16_eval_graphs_batch64": ["--parts", "eval", "--eval-graphs", "--eval-batch-size", "64"],
    # the step's floor: forward, backward and Adam as one graph (outside Lightning)
    "bf16_whole_step_graph": ["--parts", "train", "--whole-step-graph"],
    "fp32_graphs": ["--parts", "train,eval", "--cuda-graphs", "--precision", "32", "--eval-batch-size", "512"],
    "bf16_eager": ["--parts", "train,eval", "--eval-batch-size", "64"],
    "fp32_whole_step_graph": ["--parts", "train", "--whole-step-graph", "--precision", "32"],
    "bf16_graphs_batch128": ["--parts", "train", "--cuda-graphs", "--batch-size", "128"],
}
FIRST_BENCH_RUNS = 3  # run right after the further seeds; the others after the variants
BENCH_FULL = ["--device", "cuda", "--steps", "50", "--warmup", "10", "--images", "1024"]
BENCH_SMOKE = ["--device", "cpu", "--model", "test_efficientnet", "--size", "32"]
BENCH_SMOKE += ["--steps", "2", "--warmup", "1", "--repeats", "1", "--images", "8"]
# profile breakdown: category -> SimpleProfiler actions summed into it (exact names, or a prefix ending in '*')
CATEGORIES: dict[str, list[str]] = {
    # automatic optimisation times the step as optimizer_step (training_step inside it); manual optimisation
    # (model.cuda_graphs=step) as the strategy's training_step (the update inside it): the first one present counts
    "train steps (forward, backward, optimizer)": [
        "[LightningModule]TumorClassifier.optimizer_step|[Strategy]SingleDeviceStrategy.training_step"
    ],
    "train data (next batch: augmentation, collation, workers)": ["[_TrainingEpochLoop].train_dataloader_next"],
    "batch transfer to the device (and device augmentation)": ["[Strategy]SingleDeviceStrategy.batch_to_device"],
    "validation steps": ["[Strategy]SingleDeviceStrategy.validation_step"],
    "validation data": ["[_EvaluationLoop].val_next"],
    "checkpoint writes": ["save_checkpoint"],
    "callbacks (figures, checkpoint bookkeeping, lr monitor, history)": ["[Callback]*"],
}
_NUMBER = r"\s*([-\d.e+]+)\s*\|"
_PROFILE_ROW = re.compile(r"^\|\s*(?P<name>.+?)\s*\|" + _NUMBER + r"\s*(?P<calls>\d+)\s*\|\s*(?P<total>[-\d.e+]+)")


def write_smoke_dataset(root: Path, per_class: int = 6, side: int = 48) -> Path:
    """A tiny Kaggle-layout dataset of synthetic PNGs (4 classes; Training and Testing)."""
    import cv2

    from tumorcls.bench.inputs import synthetic_images
    from tumorcls.labels import CLASS_NAMES

    images, _ = synthetic_images(per_class * len(CLASS_NAMES) * 2, side, seed=3)
    for i, image in enumerate(images):
        split = "Training" if i % 2 == 0 else "Testing"
        folder = root / split / CLASS_NAMES[(i // 2) % len(CLASS_NAMES)]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img_{i}.png"), image)
    return root


class Session:
    """The options, the clock of the budget and the result, rewritten to session.json/.md after every step."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.started = time.perf_counter()
        self.result: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "smoke": args.smoke,
            "device": "unknown",
            "before": {},
            "after": {},
            "profile": {},
            "bench": {},
            "skipped": [],
            "gpu_tests": None,
        }

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.started)

    def affords(self, what: str, estimate: float) -> bool:
        """Whether ``estimate`` seconds fit in what is left of the budget; a step that does not is recorded."""
        if self.left() >= estimate:
            return True
        self.result["skipped"].append(what)
        return False

    def timeout(self) -> int:
        return max(10, int(min(self.args.timeout, self.left())))

    def save(self) -> None:
        (self.out / "session.json").write_text(json.dumps(self.result, indent=2, default=str))
        (self.out / "session.md").write_text(markdown(self.result))


def run_command(
    cmd: list[str], cwd: Path, timeout: int, log: Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd``; its wall time (and wall-clock start/end), exit status and the tail of its output (all of it
    appended to ``log``)."""
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        status, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        status, out = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
    end = time.time()
    text = out if isinstance(out, str) else out.decode(errors="replace")
    wall = round(end - start, 2)
    if log is not None:
        with log.open("a") as f:
            f.write(f"\n===== {' '.join(cmd)}\n===== exit {status}, {wall} s\n{text[-20000:]}\n")
    result = {"command": " ".join(cmd), "returncode": status, "wall_seconds": wall, "tail": text[-1500:]}
    return {**result, "started": start, "ended": end}


def train_run(session: Session, repo: Path, name: str, overrides: list[str], profile: str | None = None) -> dict:
    """One ``python train.py model=effnet_b0`` in ``repo`` through the phase probe: the whole command phase by
    phase, metrics.json's timings and accuracy; under SimpleProfiler when ``profile`` names the report
    (profile_<name>.txt in --out)."""
    args = session.args
    run_dir = Path(args.runs) / name
    stamps = Path(args.runs) / f"{name}.phases.json"
    cmd = [sys.executable, str(PROBE), str(stamps), "train.py", "model=effnet_b0", *args.base_overrides, *overrides]
    cmd.append(f"hydra.run.dir={run_dir}")
    if profile:
        cmd += ["+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler"]
        cmd += [f"+trainer.profiler.dirpath={run_dir}/profile", "+trainer.profiler.filename=profile"]
    code = "before" if name.startswith("before-") else "after"
    env = checkout_env(repo, Path(args.runs) / f"decode-cache-{code}")  # each code its own (if it has a cache)
    result = run_command(cmd, repo, session.timeout(), session.out / "log.txt", env)
    metrics_file = run_dir / "metrics.json"
    if result["returncode"] == 0 and metrics_file.is_file() and stamps.is_file():
        metrics = json.loads(metrics_file.read_text())
        result.update({k: metrics.get(k) for k in STAGES})
        result.update(acc=metrics.get("acc"), epochs=metrics.get("epochs"), machine=metrics.get("machine"))
        result["phases"] = phases(result["started"], result["ended"], json.loads(stamps.read_text()), metrics)
        result["cache"] = (metrics.get("data_cache") or {}).get("state", "none")
        staged = sum(result.get(k) or 0.0 for k in STAGES)
        result["rest_seconds"] = round(result["wall_seconds"] - staged, 2)  # imports, artifacts, start-up
        machine = metrics.get("machine") or {}
        session.result["device"] = machine.get("cuda") or "CPU"
        if profile:
            result["breakdown"] = profile_breakdown(run_dir / "profile", result, session.out / f"profile_{profile}.txt")
    return result


def profile_breakdown(folder: Path, run: dict[str, Any], copy_to: Path) -> dict[str, Any] | None:
    reports = sorted(folder.glob("fit-*.txt"))
    if not reports or not run.get("fit_seconds"):
        return None
    text = reports[0].read_text()
    copy_to.write_text(text)
    return breakdown(parse_profile(text), run["fit_seconds"])


def parse_profile(text: str) -> dict[str, dict[str, float]]:
    """SimpleProfiler's report -> {action: {"calls", "total"}}."""
    rows: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        found = _PROFILE_ROW.match(line.replace("\t", " "))
        if found and found["name"] not in ("Action", "Total"):
            rows[found["name"]] = {"calls": int(found["calls"]), "total": float(found["total"])}
    return rows


def breakdown(rows: dict[str, dict[str, float]], fit_seconds: float) -> dict[str, Any]:
    """The fit's seconds per category, and the percentage of ``fit_seconds`` each takes."""
    out: dict[str, Any] = {}
    for category, actions in CATEGORIES.items():
        total = 0.0
        for action in actions:
            present = [a for a in action.split("|") if a in rows or a.endswith("*")]  # alternatives: the first present
            for name, row in rows.items():
                a = present[0] if present else action
                if name == a or (a.endswith("*") and name.startswith(a[:-1])):
                    total += row["total"]
        out[category] = {"seconds": round(total, 3), "percent_of_fit": round(100 * total / fit_seconds, 1)}
    counted = sum(v["seconds"] for v in out.values())
    out["the rest (Lightning loop, sanity check, setup)"] = {
        "seconds": round(fit_seconds - counted, 3),
        "percent_of_fit": round(100 * (fit_seconds - counted) / fit_seconds, 1),
    }
    return out


def bench_rates(session: Session, names: Sequence[str]) -> None:
    """images/s of ``python -m tumorcls.bench`` per BENCH_RUNS entry named (train, eval or predict part)."""
    args, out = session.args, session.result["bench"]
    for name in names:
        extra = BENCH_RUNS[name]
        if not session.affords(f"bench {name}", ESTIMATE_S["bench"]):
            continue
        target = Path(args.runs) / f"bench_{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        common = BENCH_SMOKE if args.smoke else BENCH_FULL
        cmd = [sys.executable, "-m", "tumorcls.bench", *common, *extra, "--json", str(target)]
        result = run_command(cmd, Path(args.repo), session.timeout(), session.out / "log.txt")
        if result["returncode"] == 0 and target.is_file():
            figures = json.loads(target.read_text())
            result.update({p: figures[p]["images_per_s"] for p in ("train", "eval", "predict") if p in figures})
        out[name] = result
        session.save()


def _cells(r: dict[str, Any]) -> str:
    if r["returncode"] != 0 or "phases" not in r:
        return f"failed ({r['returncode']}) |" + " |" * (len(PHASE_COLUMNS) + 1)
    cells = [f"{r['phases'][k]:.2f}" for k in PHASE_COLUMNS] + [f"{r.get('acc') or 0.0:.4f}", r.get("cache", "-")]
    return " | ".join(cells) + " |"


def seed_summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per configuration measured with more than one seed (``name`` and ``name/seed<k>`` runs): the seeds, the
    median whole command and fit, the mean and standard deviation of the test accuracy."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for code in ("before", "after"):
        for name, run in result[code].items():
            if "phases" in run:
                base = "default" if code == "before" else name.split("/")[0]
                groups.setdefault((code, base), []).append(run)
    rows = []
    for (code, name), runs in groups.items():
        if len(runs) > 1:
            accs = [r["acc"] for r in runs]
            rows.append(
                {
                    "code": code,
                    "config": name,
                    "seeds": len(runs),
                    "whole": statistics.median(r["phases"]["whole"] for r in runs),
                    "fit": statistics.median(r["phases"]["fit"] for r in runs),
                    "acc_mean": statistics.mean(accs),
                    "acc_sd": statistics.stdev(accs),
                }
            )
    return rows


def markdown(result: dict[str, Any]) -> str:
    kind = "smoke run, tiny settings" if result["smoke"] else "python train.py model=effnet_b0"
    lines = [f"# tumorcls GPU session: {result['date']}, {result['device']} ({kind})", ""]
    lines += ["| code | run | whole command s | start-up s | decode s | fit s | calibrate s | test s | artifacts s "]
    lines[-1] += "| exit s | test acc | decode cache |"
    lines += ["|---" * (len(PHASE_COLUMNS) + 4) + "|"]
    for code in ("before", "after"):
        lines += [f"| {code} | {name} | {_cells(r)}" for name, r in result[code].items()]
    summary = seed_summary(result)
    if summary:
        lines += [
            "",
            "| code | config | seeds | median whole s | median fit s | test acc (mean +- sd) |",
            "|---" * 6 + "|",
        ]
        for row in summary:
            acc = f"{100 * row['acc_mean']:.2f} +- {100 * row['acc_sd']:.2f}%"
            lines.append(
                f"| {row['code']} | {row['config']} | {row['seeds']} | {row['whole']:.1f} | {row['fit']:.1f} | {acc} |"
            )
    tests = result.get("gpu_tests")
    lines += [
        "",
        f"GPU parity tests: {tests['summary']} (exit {tests['returncode']})" if tests else "GPU parity tests: not run",
    ]
    lines += ["", f"skipped for time: {result['skipped'] or 'nothing'}"]
    lines += ["", "| bench | train images/s | eval images/s | predict images/s |", "|---|---|---|---|"]
    for name, r in result["bench"].items():
        lines.append(f"| {name} | {r.get('train', '-')} | {r.get('eval', '-')} | {r.get('predict', '-')} |")
    for code, parts in result["profile"].items():
        if parts:
            lines += ["", f"Fit breakdown, {code} (SimpleProfiler):", "", "| part of the fit | seconds | % of fit |"]
            lines += ["|---|---|---|", *(f"| {k} | {v['seconds']} | {v['percent_of_fit']} |" for k, v in parts.items())]
    return "\n".join(lines) + "\n"


def run_after(session: Session) -> None:
    """This checkout's defaults, seed 42, under the profiler (the breakdown after)."""
    if session.affords("after default seed 42", ESTIMATE_S["after"]):
        run = train_run(
            session, Path(session.args.repo), "after-default", [], profile="after" if session.args.profile else None
        )
        session.result["after"]["default"] = run
        session.result["profile"]["after"] = run.get("breakdown")
        session.save()


def run_levers(session: Session) -> None:
    """Each lever (LEVERS) of this checkout, seed 42, under the profiler (where its fit goes)."""
    for name in session.args.levers:
        if session.affords(f"after {name}", ESTIMATE_S["after"]):
            profile = name if session.args.profile else None
            run = train_run(session, Path(session.args.repo), name, LEVERS[name], profile=profile)
            session.result["after"][name] = run
            if profile:
                session.result["profile"][name] = run.get("breakdown")
            session.save()


GPU_TESTS = [
    "tests/models/test_cuda_graphs.py",
    "tests/models/test_whole_step.py",
    "tests/inference/test_torch_bf16.py",
]


def run_gpu_tests(session: Session) -> None:
    """The GPU-only parity tests of the levers (a recorded whole step trains as the eager one, graphed evaluation
    and bf16 predict match their float32/eager results): they skip on CPU, so only a GPU session runs them."""
    if not session.args.gpu_tests or not session.affords("gpu parity tests", ESTIMATE_S["tests"]):
        return
    cmd = [sys.executable, "-m", "pytest", *GPU_TESTS, "-q", "-p", "no:cacheprovider", "-k", "gpu"]
    result = run_command(cmd, Path(session.args.repo), session.timeout(), session.out / "log.txt")
    session.result["gpu_tests"] = {"returncode": result["returncode"], "summary": pytest_summary(result["tail"])}
    session.save()


PYTEST_SUMMARY = re.compile(r"\b\d+ (passed|failed|skipped|deselected|errors?)\b|no tests ran")


def pytest_summary(output: str) -> str:
    """pytest's last summary line (``3 passed, 2 skipped in 4.1s``), not whatever a plugin printed after it."""
    lines = [ln.strip(" =") for ln in output.splitlines() if PYTEST_SUMMARY.search(ln)]
    return lines[-1] if lines else ""


def fastest_lever(result: dict[str, Any]) -> str | None:
    """The lever whose seed-42 fit was shorter than the defaults' (the shortest such), else None."""
    fits = {name: run["phases"]["fit"] for name, run in result["after"].items() if "phases" in run}
    default = fits.get("default")
    faster = [(fit, name) for name, fit in fits.items() if name in LEVERS and default is not None and fit < default]
    return min(faster)[1] if faster else None


def run_seeds(session: Session) -> None:
    """The further seeds (the accuracy check) of the defaults and of the fastest lever, if one beat them."""
    chosen = ["default", *([lever] if (lever := fastest_lever(session.result)) else [])]
    for name in chosen:
        overrides = LEVERS.get(name, [])
        for seed in session.args.seeds:
            if session.affords(f"after {name} seed {seed}", ESTIMATE_S["after"]):
                run = train_run(session, Path(session.args.repo), f"{name}-s{seed}", [*overrides, f"seed={seed}"])
                session.result["after"][f"{name}/seed{seed}"] = run
                session.save()


def run_variants(session: Session, variants: list[str]) -> None:
    """Each variant of this checkout (seed 42): what each of the defaults' settings is worth."""
    for name in variants:
        if session.affords(f"after {name}", ESTIMATE_S["after"]):
            session.result["after"][name] = train_run(session, Path(session.args.repo), name, VARIANTS[name])
            session.save()


def run_before(session: Session, seeds: Sequence[int]) -> None:
    """The code before (``--before``): seed 42 under the profiler, or further seeds unprofiled."""
    args, result = session.args, session.result
    for seed in seeds:
        name = f"seed{seed}"
        if not args.before or not session.affords(f"before {name}", ESTIMATE_S["before"]):
            continue
        profile = "before" if seed == 42 and args.profile else None
        run = train_run(session, Path(args.before), f"before-{name}", [f"seed={seed}"], profile=profile)
        result["before"][name] = run
        if profile:
            result["profile"]["before"] = run.get("breakdown")
        session.save()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tumorcls.bench.gpu_session", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for session.json, session.md, log.txt, profiles")
    parser.add_argument("--runs", default=None, help="folder for the runs' own files (default: <out>_runs)")
    parser.add_argument("--smoke", action="store_true", help="tiny model and data, one epoch, CPU")
    parser.add_argument("--data", default=None, help="dataset root (default: TUMORCLS_DATA / the config's)")
    parser.add_argument("--before", default=None, help="a checkout of the code before (its train.py is run)")
    parser.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, from {list(VARIANTS)}"
    )
    parser.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated, from {list(LEVERS)}")
    parser.add_argument("--seeds", default="2,3", help="further seeds of the chosen runs and of the code before")
    parser.add_argument("--bench-runs", default=",".join(BENCH_RUNS), help=f"comma-separated, from {list(BENCH_RUNS)}")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole session")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiled runs")
    parser.add_argument("--no-bench", dest="bench", action="store_false", help="skip python -m tumorcls.bench")
    parser.add_argument("--no-gpu-tests", dest="gpu_tests", action="store_false", help="skip the GPU parity tests")
    parser.add_argument("--repo", default=".", help="the repository root (where train.py is)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per subprocess at most")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.bench_runs = [b.strip() for b in args.bench_runs.split(",") if b.strip()]
    args.levers = [v.strip() for v in args.levers.split(",") if v.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    unknown = [v for v in variants if v not in VARIANTS] + [b for b in args.bench_runs if b not in BENCH_RUNS]
    unknown += [v for v in args.levers if v not in LEVERS]
    missing = [p for p in (args.repo, args.before) if p and not (Path(p) / "train.py").is_file()]
    if unknown or missing:
        print(f"error: unknown --variants/--levers/--bench-runs {unknown} or no train.py in {missing}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    args.runs = str(Path(args.runs).resolve() if args.runs else out.parent / f"{out.name}_runs")
    data = args.data or (str(write_smoke_dataset(out.parent / f"{out.name}_data")) if args.smoke else None)
    args.base_overrides = [*(SMOKE_OVERRIDES if args.smoke else []), *([f"data.root={data}"] if data else [])]
    args.base_overrides += list(args.overrides)
    session = Session(args)
    run_before(session, [42])
    run_after(session)
    run_levers(session)
    run_gpu_tests(session)
    run_seeds(session)
    first, rest = args.bench_runs[:FIRST_BENCH_RUNS], args.bench_runs[FIRST_BENCH_RUNS:]
    bench_rates(session, first if args.bench else [])
    run_variants(session, variants)
    run_before(session, args.seeds)
    bench_rates(session, rest if args.bench else [])
    session.save()
    print(markdown(session.result))
    runs = [*session.result["before"].values(), *session.result["after"].values()]
    return 1 if any(r["returncode"] != 0 for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
