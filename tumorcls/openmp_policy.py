"""The OpenMP wait policy of a process that trains or benchmarks, set only when it runs as a program.

Idle OpenMP threads that spin wait on descheduled peers at every operator when the CPU is shared with other
processes (measured on 2 busy cores: eager 1-image latency 0.02 s instead of 0.07-1.6 s, batch inference 60
instead of 12-40 images/s; a CPU fit 0.083 s per step instead of 0.87 s), and spinning threads steal the Keras
peer's cores between our measurements. ``PASSIVE`` makes them sleep; on a quiet machine it costs nothing measurable.
OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads it, so ``train.py`` and the entry points of the throughput
and peer benchmarks (``python -m tumorcls.bench[.train_eval]``, ``python -m tumorcls.bench.peer``) call
:func:`prefer_passive_openmp_wait` before their first ``import torch``; importing a tumorcls module (as the tests do)
leaves the environment alone. A policy the user exported wins.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "OMP_WAIT_POLICY"


def prefer_passive_openmp_wait() -> bool:
    """``OMP_WAIT_POLICY=PASSIVE`` unless already set; whether it can still take effect (torch not loaded yet)."""
    os.environ.setdefault(VARIABLE, "PASSIVE")
    return "torch" not in sys.modules
