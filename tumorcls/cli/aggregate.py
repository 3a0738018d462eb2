"""Aggregate the metrics.json of several runs (seeds, folds, a sweep) into mean +- std.

tumorcls aggregate logs/train/multiruns/2026-11-26_10-00-00 [--json summary.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

# the evaluation stage is imported in run(): its package loads torch, which `tumorcls aggregate --help` does not need


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders, or metrics.json files")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from tumorcls.atomic_io import atomic_write_json
    from tumorcls.evaluation.aggregate import aggregate, find_metrics, format_summary

    summary = aggregate(find_metrics(args.paths))
    print(format_summary(summary))
    if args.json:
        atomic_write_json(args.json, summary)
    return 0
