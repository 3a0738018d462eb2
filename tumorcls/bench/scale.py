"""Memory and decode time of ``train.py`` as the dataset grows: the real files repeated k times, a tiny model,
a first and a second run (the second is where the decode cache pays), optionally against another checkout.

    python -m tumorcls.bench.scale --data DIR [--repeat 1,4,16] [--size 150] [--before OTHER_CHECKOUT] [--ddp]
                                   [--work DIR] [--json OUT] [-- extra train.py overrides]

For each k, the files under DIR/{Training,Testing} are copied k times (``r<j>_<name>``) into a work folder; then
the tiny command (``trainer=cpu model.backbone=test_efficientnet model.pretrained=false model.weights=null
trainer.max_epochs=1 data.size=SIZE``) runs twice in this checkout, with a fresh decode cache
(``TUMORCLS_CACHE`` in the work folder), and, with ``--before`` (e.g. ``git worktree add /tmp/main main``),
twice in that checkout, the two alternating. Each run's figures: wall seconds; peak RSS of train.py (the
kernel's high-water mark, from wait4: the largest of train.py and the processes it waited for); the peak of
the summed RSS and PSS of its process tree (psutil, sampled; with ``--ddp`` that is both ranks; RSS counts a
memory-mapped file once per process, PSS shares it out); ``data_seconds`` and ``fit_seconds`` from
metrics.json; the decode cache's state and its entry's size.
``--ddp`` adds the same pair of runs as a 2-process DDP run on CPU (gloo) at the smallest k.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tumorcls.atomic_io import atomic_write_json
from tumorcls.errors import TumorclsError

THIS_CHECKOUT = Path(__file__).resolve().parents[2]
TINY = (
    "trainer=cpu",
    "model.backbone=test_efficientnet",
    "model.pretrained=false",
    "model.weights=null",
    "trainer.max_epochs=1",
)
DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
GIB = 1024**3


class ScaleError(TumorclsError):
    """A benchmark input that cannot be used."""


@dataclass
class RunFigures:
    checkout: str  # "after" (this one) or "before"
    repeat: int
    images: int
    run: str  # "first" or "second"
    ddp: bool
    exit_code: int
    wall_seconds: float
    peak_rss_gib: float  # train.py or its largest child (the kernel's high-water mark)
    tree_rss_gib: float  # peak of the process tree's summed RSS (sampled)
    tree_pss_gib: float  # peak of its summed PSS (sampled)
    processes: int
    metrics: dict[str, Any] = field(default_factory=dict)
    cache_gib: float = 0.0


def repeated_dataset(data: Path, work: Path, k: int) -> tuple[Path, int]:
    """``data``'s Training/Testing files copied ``k`` times into ``work/data_x<k>`` (made once); the
    folder and its number of files."""
    root = work / f"data_x{k}"
    files = [p for split in ("Training", "Testing") for p in sorted((data / split).rglob("*")) if p.is_file()]
    if not (root / ".complete").is_file():
        shutil.rmtree(root, ignore_errors=True)
        for path in files:
            target = root / path.relative_to(data).parent
            target.mkdir(parents=True, exist_ok=True)
            for j in range(k):
                shutil.copyfile(path, target / f"r{j}_{path.name}")
        (root / ".complete").touch()
    return root, len(files) * k


def _sample_tree(pid: int, stop: threading.Event, peaks: dict[str, float]) -> None:
    """Track the peak summed RSS and PSS of ``pid`` and its descendants until ``stop``."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        rss = pss = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        peaks["rss"], peaks["pss"] = max(peaks["rss"], rss), max(peaks["pss"], pss)
        peaks["processes"] = max(peaks["processes"], len(procs))
        stop.wait(0.2)


def measured_run(command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Run ``command``; its exit code, wall seconds, peak RSS (wait4) and the tree's sampled peaks."""
    peaks = {"rss": 0.0, "pss": 0.0, "processes": 0}
    stop = threading.Event()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = threading.Thread(target=_sample_tree, args=(proc.pid, stop, peaks), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
    return {
        "exit_code": proc.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3),  # ru_maxrss is in KiB on Linux
        "tree_rss_gib": round(peaks["rss"] / GIB, 3),
        "tree_pss_gib": round(peaks["pss"] / GIB, 3),
        "processes": int(peaks["processes"]),
    }


def _metrics(run_dir: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    keys = ("data_seconds", "fit_seconds", "calibrate_seconds", "test_seconds", "data_cache", "acc", "n")
    return {key: metrics[key] for key in keys if key in metrics}


def _cache_gib(cache_dir: Path) -> float:
    files = [f for f in (cache_dir / "decoded").rglob("*") if f.is_file()] if cache_dir.is_dir() else []
    return round(sum(f.stat().st_size for f in files) / GIB, 3)


@dataclass(frozen=True)
class Case:
    checkout: str
    folder: Path
    repeat: int
    root: Path
    images: int
    ddp: bool


def run_case(case: Case, run: str, args: argparse.Namespace, work: Path) -> RunFigures:
    """One train.py run of ``case`` (``run`` = first | second), measured."""
    label = f"{case.checkout}_x{case.repeat}{'_ddp' if case.ddp else ''}_{run}"
    cache_dir = work / f"cache_{case.checkout}_x{case.repeat}{'_ddp' if case.ddp else ''}"
    if run == "first":
        shutil.rmtree(cache_dir, ignore_errors=True)
    run_dir = work / "runs" / label
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [*TINY, *(DDP if case.ddp else ()), f"data.size={args.size}", f"data.root={case.root}"]
    command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}", *args.extra]
    env = {**os.environ, "TUMORCLS_CACHE": str(cache_dir), "PYTHONPATH": str(case.folder), "HF_HUB_OFFLINE": "1"}
    (work / "logs").mkdir(parents=True, exist_ok=True)
    figures = measured_run(command, case.folder, env, work / "logs" / f"{label}.log")
    result = RunFigures(
        checkout=case.checkout,
        repeat=case.repeat,
        images=case.images,
        run=run,
        ddp=case.ddp,
        **figures,
        metrics=_metrics(run_dir),
        cache_gib=_cache_gib(cache_dir),
    )
    print(_row(result), flush=True)
    return result


HEADER = (
    "| checkout | images | run | DDP | exit | wall s | data s | fit s | peak RSS GiB | tree RSS GiB | tree PSS GiB "
    "| cache | cache GiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _row(r: RunFigures) -> str:
    state = (r.metrics.get("data_cache") or {}).get("state", "-")
    cells = [r.checkout, r.images, r.run, "2 ranks" if r.ddp else "-", r.exit_code, r.wall_seconds]
    cells += [r.metrics.get("data_seconds", "-"), r.metrics.get("fit_seconds", "-"), r.peak_rss_gib]
    cells += [r.tree_rss_gib, r.tree_pss_gib, state, r.cache_gib]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _parse_repeats(text: str) -> list[int]:
    try:
        repeats = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        repeats = []
    if not repeats or min(repeats) < 1:
        raise ScaleError(f"--repeat {text!r}: a comma-separated list of counts >= 1, e.g. 1,4,16")
    return repeats


def check_inputs(args: argparse.Namespace) -> list[int]:
    """The repeat counts; one line for a dataset, a checkout or a tool that is not there."""
    for split in ("Training", "Testing"):
        if not (args.data / split).is_dir():
            raise ScaleError(f"--data '{args.data}' has no {split}/ folder (the Kaggle layout)")
    if args.before is not None and not (args.before / "train.py").is_file():
        raise ScaleError(
            f"--before '{args.before}' is not a checkout (no train.py); make one: git worktree add DIR main"
        )
    if args.size < 32:
        raise ScaleError(f"--size must be >= 32, got {args.size}")
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise ScaleError("psutil is not installed (pip install -e '.[dev]')") from None
    return _parse_repeats(args.repeat)


def cases(args: argparse.Namespace, repeats: list[int], work: Path) -> list[Case]:
    checkouts = [("after", THIS_CHECKOUT)] + ([("before", args.before.resolve())] if args.before else [])
    found = []
    for k in repeats:
        root, images = repeated_dataset(args.data, work, k)
        found += [Case(name, folder, k, root, images, False) for name, folder in checkouts]
    if args.ddp:
        root, images = repeated_dataset(args.data, work, min(repeats))
        found += [Case(name, folder, min(repeats), root, images, True) for name, folder in checkouts]
    return found


def run(args: argparse.Namespace) -> int:
    repeats = check_inputs(args)
    work = Path(args.work or tempfile.mkdtemp(prefix="tumorcls-scale-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; size {args.size}; repeats {repeats}\n\n{HEADER}", flush=True)
    results: list[RunFigures] = []
    todo = cases(args, repeats, work)
    for group in sorted({(c.repeat, c.ddp) for c in todo}):
        same = [c for c in todo if (c.repeat, c.ddp) == group]
        for run_name in ("first", "second"):  # before and after alternate: they see the same machine load
            results += [run_case(case, run_name, args, work) for case in same]
    if args.json:
        atomic_write_json(args.json, {"size": args.size, "work": str(work), "runs": [asdict(r) for r in results]})
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.exit_code == 0 for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumorcls.bench.scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("TUMORCLS_DATA", "data/brain-tumor-classification-mri"))
    )
    parser.add_argument("--repeat", default="1,4,16", help="how many copies of the dataset, comma-separated")
    parser.add_argument("--size", type=int, default=150, help="data.size (150 or 224)")
    parser.add_argument("--before", type=Path, help="another checkout to run the same commands in (e.g. main)")
    parser.add_argument("--ddp", action="store_true", help="also a 2-process DDP run on CPU at the smallest repeat")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("extra", nargs="*", help="more train.py overrides (after --)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
