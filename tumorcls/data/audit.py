"""Audit an image dataset: counts, sizes, bad files, exact and near duplicates, split leakage, label conflicts.

Works on the Kaggle layout ROOT/{Training,Testing}/<class>/* and on a plain ROOT/<class>/* folder (one
split, called "all"). Every file is read once: the bytes give the SHA-256, and the one decoder turns the
same bytes into the pixels behind the size, mode and 64-bit perceptual hash. Unknown class folders and
bad files are reported, not fatal. This module is the command's front-end; the work is done in
``audit_files`` (which files, what each is), ``audit_report`` (the report) and ``audit_bench`` (timings).

    python -m tumorcls.cli.main audit ROOT [--distance D] [--json FILE]
    python -m tumorcls.data.audit [ROOT] --benchmark [--bench-hashes 50000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tumorcls.atomic_io import atomic_write_json, check_writable
from tumorcls.data.audit_bench import run_benchmark, synthetic_hashes
from tumorcls.data.audit_files import FileEntry, FileResult, Layout, discover, inspect_all, inspect_file
from tumorcls.data.audit_report import REPORT_VERSION, audit_dataset, build_report, format_summary
from tumorcls.data.files import SINGLE_SPLIT
from tumorcls.errors import DatasetError, OutputError, TumorclsError

__all__ = [
    "REPORT_VERSION",
    "SINGLE_SPLIT",
    "FileEntry",
    "FileResult",
    "Layout",
    "add_arguments",
    "audit_dataset",
    "build_report",
    "discover",
    "format_summary",
    "inspect_all",
    "inspect_file",
    "main",
    "run",
    "run_benchmark",
    "synthetic_hashes",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", type=Path, help="dataset folder (Training/Testing or one folder per class)")
    parser.add_argument("--distance", type=int, default=0, help="near-duplicate pHash distance in bits (default 0)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--threads", type=int, default=None, help="reader threads (default min(8, CPUs))")
    parser.add_argument("--top", type=int, default=5, help="most common sizes to report (default 5)")
    parser.add_argument("--show", type=int, default=10, help="items shown per list in the summary (default 10)")
    parser.add_argument("--benchmark", action="store_true", help="print timings (full audit of ROOT if given)")
    parser.add_argument("--bench-hashes", type=int, default=50_000, help="synthetic hashes for --benchmark")
    parser.add_argument(
        "--bench-distances", type=int, nargs="+", default=[0, 4, 6, 8], help="distances for --benchmark"
    )


def run(args: argparse.Namespace) -> int:
    if args.benchmark:
        print("\n".join(run_benchmark(args.root, args.bench_hashes, args.bench_distances, args.threads)))
        return 0
    if args.root is None:
        raise DatasetError("audit needs a dataset ROOT folder (or --benchmark)")
    if args.json:
        _write_report(args.json, None)  # refuse an unwritable --json before the audit, not after
    report = audit_dataset(args.root, args.distance, args.threads, args.top)
    print(format_summary(report, args.show))
    if args.json:
        _write_report(args.json, report)
        print(f"report written to {args.json}")
    return 0


def _write_report(path: Path, report: dict[str, Any] | None) -> None:
    """Write the JSON report, or with ``report=None`` only check that it could be written."""
    try:
        if report is None:
            check_writable(path)
        else:
            atomic_write_json(path, report)
    except (OSError, OutputError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).removeprefix(f"cannot write '{path}': ")
        raise OutputError(f"cannot write the report to '{path}': {reason or exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tumorcls.data.audit", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
