"""How the benchmarks time things: images/s as a median over repeats, and median seconds of single calls.

One timing loop for every benchmark, so that each figure they print is measured the same way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer stops when the GPU is done (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_each(fn: Callable[[], Any], runs: int, warmup: int = 0) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], Any], runs: int, warmup: int) -> float:
    return statistics.median(seconds_each(fn, runs, warmup))


def time_repeats(
    step: Callable[[], int], steps: int, warmup: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Images/s of ``step`` (which returns the images it handled): median over ``repeats`` runs of ``steps``."""
    for _ in range(warmup):
        step()
    synchronize(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(step() for _ in range(steps))
        synchronize(device)
        rates.append(n / (time.perf_counter() - start))
    return {"images_per_s": round(statistics.median(rates), 2), "repeats": [round(r, 2) for r in rates]}
