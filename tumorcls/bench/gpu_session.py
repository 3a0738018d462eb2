"""One-shot measurement of the main job for a session that has a GPU: the job before and after the speed work, where
the fit's time goes, and the step, evaluation and predict rates, in one command that writes one JSON and one table.

    bash .gpu/env.sh python3 -m tumorcls.bench.gpu_session --out $OUT --before .gpu/before   # on the GPU machine
    python -m tumorcls.bench.gpu_session --out /tmp/gs --smoke                              # the same steps, tiny, CPU

From the repository root (``train.py`` is run as a user runs it, one subprocess per run), in this order of
importance, each step skipped when what is left of ``--budget`` seconds would not cover it (session.json and
session.md are rewritten after every step, log.txt collects every command's output):

1. ``python train.py model=effnet_b0`` of the code before (``--before``: a checkout of it) under Lightning's
   SimpleProfiler: the whole command, metrics.json's decode/fit/calibration/test seconds, the accuracy, the breakdown;
2. the same command of this checkout with its defaults, under the profiler too (the breakdown after);
3. ``python -m tumorcls.bench``: the training step with the trainer's CUDA settings at batch 32 (and at 128, where
   launches matter less), evaluation and predict rates from in-memory images (``--bench-runs``);
4. the defaults with ``--seeds`` (the accuracy check), then each ``--variants`` entry: what each setting is worth;
5. the code before with ``--seeds``.

``--smoke`` swaps in a tiny model, a tiny synthetic dataset (written under ``--out`` unless ``--data`` is given),
one epoch and CPU, so that a test can run every step end to end. Nothing here is imported by product code.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# train.py overrides per variant of this checkout (the defaults run first)
VARIANTS: dict[str, list[str]] = {
    "fp32": ["trainer.precision=32-true"],
    "no_cuda_graphs": ["model.cuda_graphs=false"],
    "augment_on_cpu": ["data.augment_on=cpu"],
    "fp32+augment_on_cpu": ["trainer.precision=32-true", "data.augment_on=cpu"],
    "no_progress_bar": ["callbacks=plain"],
    "cudnn_benchmark": ["trainer.benchmark=true"],
    "before_settings": ["data.augment_on=cpu", "model.cuda_graphs=false"],  # the old defaults on this code
}
DEFAULT_VARIANTS = ["fp32", "no_cuda_graphs", "augment_on_cpu", "cudnn_benchmark"]
ESTIMATE_S = {"before": 120, "after": 60, "bench": 45}  # what a step may take at most, to plan within --budget
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
# bench runs: name -> arguments of python -m tumorcls.bench (after the common ones)
BENCH_RUNS: dict[str, list[str]] = {
    # the trainer's CUDA settings: bf16 autocast, CUDA graphs, batch 32; evaluation (bf16) and predict (float32,
    # as TorchPredictor runs) on batches of 512 in-memory images
    "bf16_graphs": ["--parts", "train,eval,predict", "--cuda-graphs", "--eval-batch-size", "512"],
    # the step's floor: forward, backward and Adam as one graph (not what training runs)
    "bf16_whole_step_graph": ["--parts", "train", "--whole-step-graph"],
    "fp32_graphs": ["--parts", "train,eval", "--cuda-graphs", "--precision", "32", "--eval-batch-size", "512"],
    "bf16_eager": ["--parts", "train,eval", "--eval-batch-size", "64"],
    "fp32_whole_step_graph": ["--parts", "train", "--whole-step-graph", "--precision", "32"],
    "bf16_graphs_batch128": ["--parts", "train", "--cuda-graphs", "--batch-size", "128"],
}
FIRST_BENCH_RUNS = 2  # run before the further seeds; the others after them
BENCH_FULL = ["--device", "cuda", "--steps", "50", "--warmup", "10", "--images", "1024"]
BENCH_SMOKE = ["--device", "cpu", "--model", "test_efficientnet", "--size", "32"]
BENCH_SMOKE += ["--steps", "2", "--warmup", "1", "--repeats", "1", "--images", "8"]
# profile breakdown: category -> SimpleProfiler actions summed into it (exact names, or a prefix ending in '*')
CATEGORIES: dict[str, list[str]] = {
    "train steps (forward, backward, optimizer)": ["[LightningModule]TumorClassifier.optimizer_step"],
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


def run_command(cmd: list[str], cwd: Path, timeout: int, log: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; its wall time, exit status and the tail of its output (all of it appended to ``log``)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        status, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        status, out = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
    text = out if isinstance(out, str) else out.decode(errors="replace")
    wall = round(time.perf_counter() - start, 2)
    if log is not None:
        with log.open("a") as f:
            f.write(f"\n===== {' '.join(cmd)}\n===== exit {status}, {wall} s\n{text[-20000:]}\n")
    return {"command": " ".join(cmd), "returncode": status, "wall_seconds": wall, "tail": text[-1500:]}


def train_run(session: Session, repo: Path, name: str, overrides: list[str], profile: str | None = None) -> dict:
    """One ``python train.py model=effnet_b0`` in ``repo``: whole-command wall time plus metrics.json's timings and
    accuracy; under SimpleProfiler when ``profile`` names the report (profile_<name>.txt in --out)."""
    args = session.args
    run_dir = Path(args.runs) / name
    cmd = [sys.executable, "train.py", "model=effnet_b0", *args.base_overrides, *overrides, f"hydra.run.dir={run_dir}"]
    if profile:
        cmd += ["+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler"]
        cmd += [f"+trainer.profiler.dirpath={run_dir}/profile", "+trainer.profiler.filename=profile"]
    result = run_command(cmd, repo, session.timeout(), session.out / "log.txt")
    metrics_file = run_dir / "metrics.json"
    if result["returncode"] == 0 and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        result.update({k: metrics.get(k) for k in STAGES})
        result.update(acc=metrics.get("acc"), epochs=metrics.get("epochs"), machine=metrics.get("machine"))
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
        for name, row in rows.items():
            if any(name == a or (a.endswith("*") and name.startswith(a[:-1])) for a in actions):
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
    if r["returncode"] != 0:
        return f"failed ({r['returncode']}) |" + " |" * 6
    cells = [r["wall_seconds"], *(r.get(k) for k in STAGES), r["rest_seconds"], round(r.get("acc") or 0.0, 4)]
    return " | ".join(str(c) for c in cells) + " |"


def markdown(result: dict[str, Any]) -> str:
    kind = "smoke run, tiny settings" if result["smoke"] else "python train.py model=effnet_b0"
    lines = [f"# tumorcls GPU session: {result['date']}, {result['device']} ({kind})", ""]
    lines += ["| code | run | whole command s | decode s | fit s | calibrate s | test s | rest s | test acc |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for code in ("before", "after"):
        lines += [f"| {code} | {name} | {_cells(r)}" for name, r in result[code].items()]
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


def run_after_seeds(session: Session) -> None:
    """This checkout's defaults, the further seeds (the accuracy check)."""
    for seed in session.args.seeds:
        if session.affords(f"after default seed {seed}", ESTIMATE_S["after"]):
            run = train_run(session, Path(session.args.repo), f"after-default-s{seed}", [f"seed={seed}"])
            session.result["after"][f"default/seed{seed}"] = run
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
    parser.add_argument("--seeds", default="2,3", help="further seeds of the chosen run and of the code before")
    parser.add_argument("--bench-runs", default=",".join(BENCH_RUNS), help=f"comma-separated, from {list(BENCH_RUNS)}")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole session")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiled runs")
    parser.add_argument("--no-bench", dest="bench", action="store_false", help="skip python -m tumorcls.bench")
    parser.add_argument("--repo", default=".", help="the repository root (where train.py is)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per subprocess at most")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.bench_runs = [b.strip() for b in args.bench_runs.split(",") if b.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    unknown = [v for v in variants if v not in VARIANTS] + [b for b in args.bench_runs if b not in BENCH_RUNS]
    missing = [p for p in (args.repo, args.before) if p and not (Path(p) / "train.py").is_file()]
    if unknown or not variants or missing:
        print(f"error: unknown --variants/--bench-runs {unknown} or no train.py in {missing}", file=sys.stderr)
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
    first, rest = args.bench_runs[:FIRST_BENCH_RUNS], args.bench_runs[FIRST_BENCH_RUNS:]
    bench_rates(session, first if args.bench else [])
    run_after_seeds(session)
    bench_rates(session, rest if args.bench else [])
    run_variants(session, variants)
    run_before(session, args.seeds)
    session.save()
    print(markdown(session.result))
    runs = [*session.result["before"].values(), *session.result["after"].values()]
    return 1 if any(r["returncode"] != 0 for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
