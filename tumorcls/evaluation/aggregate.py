"""Aggregate the metrics.json of several runs (seeds, folds, a sweep) into mean +- std (the command line is
tumorcls.cli.aggregate: ``tumorcls aggregate RUN_OR_MULTIRUN_FOLDER...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.errors import TumorclsError


def find_metrics(paths: list[Path]) -> list[Path]:
    """Every metrics.json under (or at) the given paths, sorted."""
    found: set[Path] = set()
    for path in paths:
        if path.is_file() and path.name == "metrics.json":
            found.add(path)
        elif path.is_dir():
            found.update(path.rglob("metrics.json"))
        else:
            raise TumorclsError(f"'{path}' is neither a run folder nor a metrics.json")
    if not found:
        raise TumorclsError(f"no metrics.json under {[str(p) for p in paths]}")
    return sorted(found)


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr)}


RAW_KEYS = ("calibration/nll", "temperature_fit/temperature")  # shown as they are, not as percentages


def run_values(run: dict[str, Any]) -> dict[str, float]:
    """The figures of one metrics.json that are averaged: accuracy, macro-F1, per-class recall, the evaluated
    split's ECE and NLL (``calibration``), the fitted temperature (``temperature_fit``, training runs), the
    ``plain`` / ``tta`` figures where both were scored, and the fit time. A key a file lacks is left out of its
    series (metrics.json written before ``temperature_fit`` existed held the temperature fit under
    ``calibration``, without ``ece``: it adds nothing to the calibration series)."""
    values = {"acc": run["acc"], "macro_f1": run["macro_f1"]}
    values.update({f"recall/{c}": m["recall"] for c, m in run.get("per_class", {}).items()})
    calibration = run.get("calibration") or {}
    values.update({f"calibration/{k}": calibration[k] for k in ("ece", "nll") if k in calibration})
    fit = run.get("temperature_fit") or {}
    if fit.get("temperature") is not None:
        values["temperature_fit/temperature"] = fit["temperature"]
    for mode in ("plain", "tta"):
        if isinstance(run.get(mode), dict):
            values.update({f"{mode}/acc": run[mode]["acc"], f"{mode}/macro_f1": run[mode]["macro_f1"]})
    if run.get("fit_seconds") is not None:
        values["fit_seconds"] = run["fit_seconds"]
    return values


def aggregate(files: list[Path]) -> dict[str, Any]:
    """Mean and sample standard deviation of each figure of :func:`run_values` over the runs."""
    runs = [json.loads(f.read_text()) for f in files]
    series: dict[str, list[float]] = {}
    for run in runs:
        for key, value in run_values(run).items():
            series.setdefault(key, []).append(float(value))
    protocols = sorted({str(r.get("protocol")) for r in runs})
    return {
        "runs": [str(f.parent) for f in files],
        "protocols": protocols,
        "weights": sorted({str(r.get("weights_source")) for r in runs}),
        "metrics": {key: _stats(values) for key, values in series.items()},
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{len(summary['runs'])} run(s), protocol(s) {', '.join(summary['protocols'])}"]
    for key, s in summary["metrics"].items():
        scale, unit = (1.0, " s") if key == "fit_seconds" else (1.0, "") if key in RAW_KEYS else (100.0, " %")
        lines.append(f"  {key:<28} {s['mean'] * scale:8.2f} +- {s['std'] * scale:6.2f}{unit}  (n={s['n']})")
    return "\n".join(lines)
