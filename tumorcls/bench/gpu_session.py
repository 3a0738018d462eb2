"""One-shot measurement of the main job for a session that has a GPU: where the fit's time goes, and what the
speed-up options give, in one command that writes one JSON and one markdown table.

    bash .gpu/env.sh python3 -m tumorcls.bench.gpu_session --out gpu_session      # on the GPU machine
    python -m tumorcls.bench.gpu_session --out /tmp/gs --smoke                    # the same steps, tiny, on CPU

From the repository root (``train.py`` is run as a user runs it, one subprocess per variant):

1. ``python train.py model=effnet_b0`` per variant (``--variants``; default: the defaults, fp32, ``data.augment_on=
   device``, fp32 + CUDA graphs, and all three), timed as a whole command, with the decode, fit, calibration and test
   seconds and the test accuracy from its ``metrics.json``;
2. one more run of the first variant under Lightning's SimpleProfiler, summed into a breakdown of the fit (steps,
   data loading, transfers, validation, checkpoint writes, callbacks, the rest);
3. the step and evaluation rates of ``python -m tumorcls.bench`` (bf16 and fp32 + CUDA graphs, batch 32).

``--smoke`` swaps in a tiny model, a tiny synthetic dataset (written under ``--out`` unless ``--data`` is given),
one epoch and CPU, so that a test can run every step end to end. Nothing here is imported by product code.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FP32 = ["trainer.precision=32-true"]  # at batch 32 bf16 autocast's cast kernels cost more than they save (Benchmarks)
CUDA_GRAPHS = ["model.compile=true", "model.compile_mode=reduce-overhead"]
DEVICE_AUGMENT = ["data.augment_on=device"]
# train.py overrides per variant, in the order they run (the first one is also profiled)
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "fp32": FP32,
    "augment_on_device": DEVICE_AUGMENT,
    "fp32+cudagraphs": FP32 + CUDA_GRAPHS,
    "fp32+cudagraphs+augment_on_device": FP32 + CUDA_GRAPHS + DEVICE_AUGMENT,
    "no_progress_bar": ["callbacks=plain"],  # not run unless asked for: the rich bar cost nothing on CPU
}
DEFAULT_VARIANTS = [name for name in VARIANTS if name != "no_progress_bar"]
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
# bench variants: name -> extra arguments of python -m tumorcls.bench
BENCH_VARIANTS: dict[str, list[str]] = {
    "auto_precision": [],  # bf16 autocast on CUDA, as training
    "fp32_cudagraphs": ["--precision", "32", "--compile", "--compile-mode", "reduce-overhead"],
}
BENCH_FULL = ["--device", "cuda", "--parts", "train,eval", "--steps", "50", "--warmup", "10", "--images", "1024"]
BENCH_SMOKE = ["--device", "cpu", "--parts", "train,eval", "--model", "test_efficientnet", "--size", "32"]
BENCH_SMOKE += ["--batch-size", "4", "--steps", "2", "--warmup", "1", "--repeats", "1", "--images", "8"]
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


def run_command(cmd: list[str], cwd: Path, timeout: int) -> dict[str, Any]:
    """Run ``cmd``; its wall time, exit status and the tail of its output."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        status, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        status, out = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
    tail = out if isinstance(out, str) else out.decode(errors="replace")
    wall = round(time.perf_counter() - start, 2)
    return {"command": " ".join(cmd), "returncode": status, "wall_seconds": wall, "tail": tail[-2000:]}


def train_variant(args: argparse.Namespace, name: str, overrides: list[str], profile_dir: Path | None) -> dict:
    """One ``python train.py`` run: whole-command wall time plus metrics.json's timings and accuracy."""
    run_dir = Path(args.out) / "runs" / (name + ("-profiled" if profile_dir else ""))
    cmd = [sys.executable, "train.py", "model=effnet_b0", *args.base_overrides, *overrides]
    cmd.append(f"hydra.run.dir={run_dir}")
    if profile_dir is not None:
        cmd += ["+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler"]
        cmd += [f"+trainer.profiler.dirpath={profile_dir}", "+trainer.profiler.filename=profile"]
    result = run_command(cmd, Path(args.repo), args.timeout)
    metrics_file = run_dir / "metrics.json"
    if result["returncode"] == 0 and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        result.update({k: metrics.get(k) for k in (*STAGES, "acc", "epochs", "machine")})
        staged = sum(metrics.get(k) or 0.0 for k in STAGES)
        result["rest_seconds"] = round(result["wall_seconds"] - staged, 2)  # imports, artifacts, start-up
    return result


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


def profile_first_variant(args: argparse.Namespace, variants: list[str], timed: dict[str, Any]) -> dict[str, Any]:
    """The first variant under SimpleProfiler: a run of its own, or with ``--smoke`` its timed run (one run less)."""
    profile_dir = Path(args.out) / "profile"
    result = timed if args.smoke else train_variant(args, variants[0], VARIANTS[variants[0]], profile_dir)
    reports = sorted(profile_dir.glob("fit-*.txt"))
    if result["returncode"] != 0 or not reports or not result.get("fit_seconds"):
        return {"variant": variants[0], "run": result, "breakdown": None}
    rows = parse_profile(reports[0].read_text())
    return {"variant": variants[0], "run": result, "breakdown": breakdown(rows, result["fit_seconds"]), "actions": rows}


def bench_rates(args: argparse.Namespace) -> dict[str, Any]:
    """Step and evaluation images/s from ``python -m tumorcls.bench``, per BENCH_VARIANTS entry."""
    out: dict[str, Any] = {}
    for name, extra in BENCH_VARIANTS.items():
        if args.smoke and "--compile" in extra:
            continue  # compiling on CPU takes minutes; the smoke run checks the plumbing only
        target = Path(args.out) / f"bench_{name}.json"
        cmd = [sys.executable, "-m", "tumorcls.bench", *(BENCH_SMOKE if args.smoke else BENCH_FULL), *extra]
        result = run_command([*cmd, "--json", str(target)], Path(args.repo), args.timeout)
        if result["returncode"] == 0 and target.is_file():
            figures = json.loads(target.read_text())
            result.update({part: figures[part]["images_per_s"] for part in ("train", "eval") if part in figures})
        out[name] = result
    return out


def markdown(result: dict[str, Any]) -> str:
    kind = "smoke run, tiny settings" if result["smoke"] else "python train.py model=effnet_b0"
    lines = [f"# tumorcls GPU session: {result['date']}, {result['device']} ({kind})", ""]
    lines += ["| variant | whole command s | decode s | fit s | calibrate s | test s | rest s | test acc |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for name, r in result["train"].items():
        if r["returncode"] != 0:
            lines.append(f"| {name} | failed ({r['returncode']}) |" + " |" * 6)
            continue
        cells = [r["wall_seconds"], *(r.get(k) for k in STAGES), r["rest_seconds"], round(r.get("acc") or 0.0, 4)]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "| bench (batch 32) | train images/s | eval images/s |", "|---|---|---|"]
    for name, r in result["bench"].items():
        lines.append(f"| {name} | {r.get('train', 'failed')} | {r.get('eval', 'failed')} |")
    profile = result.get("profile") or {}
    if profile.get("breakdown"):
        lines += ["", f"Fit breakdown ({profile['variant']}, SimpleProfiler):", ""]
        lines += ["| part of the fit | seconds | % of fit |", "|---|---|---|"]
        lines += [f"| {k} | {v['seconds']} | {v['percent_of_fit']} |" for k, v in profile["breakdown"].items()]
    return "\n".join(lines) + "\n"


def save(out: Path, result: dict[str, Any]) -> None:
    (out / "session.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "session.md").write_text(markdown(result))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tumorcls.bench.gpu_session", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for runs, session.json and session.md")
    parser.add_argument("--smoke", action="store_true", help="tiny model and data, one epoch, CPU")
    parser.add_argument("--data", default=None, help="dataset root (default: TUMORCLS_DATA / the config's)")
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated, from {list(VARIANTS)} (default: {DEFAULT_VARIANTS}, without compile on --smoke)",
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiled run")
    parser.add_argument("--no-bench", dest="bench", action="store_false", help="skip python -m tumorcls.bench")
    parser.add_argument("--repo", default=".", help="the repository root (where train.py is)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per subprocess")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every variant")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # compiling on CPU (inductor) takes minutes: --smoke leaves the CUDA-graph variants out unless asked for
    default = [v for v in DEFAULT_VARIANTS if not (args.smoke and "model.compile=true" in VARIANTS[v])]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else default
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or not (Path(args.repo) / "train.py").is_file():
        print(f"error: unknown --variants {unknown} or no train.py in --repo {args.repo}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    data = args.data or (str(write_smoke_dataset(out / "smoke_data")) if args.smoke else None)
    args.base_overrides = [*(SMOKE_OVERRIDES if args.smoke else []), *([f"data.root={data}"] if data else [])]
    args.base_overrides += list(args.overrides)
    shutil.rmtree(out / "profile", ignore_errors=True)  # no report of an earlier session is read back
    result: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "smoke": args.smoke}
    result.update(device="unknown", train={}, profile=None, bench={})
    smoke_profile = out / "profile" if args.smoke and args.profile else None
    for i, name in enumerate(variants):  # session.json is rewritten after each step: a killed session keeps them
        result["train"][name] = train_variant(args, name, VARIANTS[name], smoke_profile if i == 0 else None)
        machine = result["train"][name].get("machine")
        result["device"] = (machine.get("cuda") or "CPU") if machine else result["device"]
        save(out, result)
    if args.profile:
        result["profile"] = profile_first_variant(args, variants, result["train"][variants[0]])
        save(out, result)
    if args.bench:
        result["bench"] = bench_rates(args)
    save(out, result)
    print(markdown(result))
    failed = [n for n, r in result["train"].items() if r["returncode"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
