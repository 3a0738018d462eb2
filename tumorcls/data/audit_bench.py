"""Timings of the audit: a full audit of a dataset, and the two near-duplicate searches (blocked popcount and
multi-index hashing) on synthetic pHash-like hashes, checked to find the same pairs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.data.audit_report import audit_dataset
from tumorcls.data.hashing import hamming_pairs, multi_index_pairs


def synthetic_hashes(n: int, seed: int = 0) -> np.ndarray:
    """``n`` 64-bit hashes shaped like pHashes of an MRI collection: exactly 32 bits set (median
    threshold), unevenly likely bits, and families of about 50 similar hashes (a noisy prototype)."""
    rng = np.random.default_rng(seed)
    bias = rng.normal(0.0, 0.75, size=64)
    prototypes = bias + rng.normal(size=(max(1, n // 50), 64))
    z = prototypes[rng.integers(0, len(prototypes), size=n)] + rng.normal(size=(n, 64)) * rng.uniform(0, 1, (n, 1))
    bits = z > np.median(z, axis=1, keepdims=True)
    return (bits.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_benchmark(root: Path | None, n_hashes: int, distances: list[int], threads: int | None) -> list[str]:
    """Wall times of a full audit of ``root`` and of both near-duplicate searches on synthetic hashes."""
    lines = [f"benchmark: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, nproc {os.cpu_count()}"]
    if root is not None:
        seconds, report = _timed(lambda: audit_dataset(root, 0, threads))
        lines.append(f"full audit of {report['files']['total']} files in {root}: {seconds:.2f} s")
    hashes = synthetic_hashes(n_hashes)
    for d in distances:
        t_block, block = _timed(lambda d=d: hamming_pairs(hashes, d))
        t_multi, multi = _timed(lambda d=d: multi_index_pairs(hashes, d))
        same = "same pairs" if np.array_equal(block, multi) else "PAIRS DIFFER"
        lines.append(
            f"{n_hashes} hashes, distance {d}: {len(block)} pairs; blocked popcount {t_block:.3f} s, "
            f"multi-index {t_multi:.3f} s ({same})"
        )
    return lines
