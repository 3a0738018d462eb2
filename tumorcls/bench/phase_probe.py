"""Run one checkout's ``train.py`` as a user runs it, and write when each phase of the job started and ended.

    PYTHONPATH=<checkout> python <this file> <phases.json> train.py key=value ...     # cwd = the checkout

Why a probe: the main-job benchmark (tumorcls.bench.main_job) compares this code with an older checkout whose
metrics.json has no start-up or artifact seconds, so both are timed the same way from outside their code. The probe
imports nothing of either checkout itself (stdlib only, so the import order and the import time it measures are the
checkout's own); it wraps ``run``, ``fit`` and ``test_and_report`` of ``tumorcls.training.run`` (names both
checkouts share) the moment that module has been executed, before ``train.py`` binds them, and records wall-clock
stamps (``time.time()``). The phases file is written when the job returns or exits (``atexit``):
``{"probe_started", "run", "fit", "test_and_report": [start, end], "exit_called"}``; the caller adds the process's
own start and end, so that start-up (imports, Hydra) and interpreter exit are measured too.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import os
import runpy
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

TARGET_MODULE = "tumorcls.training.run"
WRAPPED = ("run", "fit", "test_and_report")


def timed(stamps: dict[str, Any], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` recording ``[start, end]`` (the end even when it raises) under ``stamps[name]``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stamps[name] = [time.time(), None]
        try:
            return fn(*args, **kwargs)
        finally:
            stamps[name][1] = time.time()

    return wrapper


class WrappingLoader(importlib.abc.Loader):
    """Executes the module with its own loader, then wraps its ``WRAPPED`` functions."""

    def __init__(self, loader: importlib.abc.Loader, stamps: dict[str, Any]) -> None:
        self.loader = loader
        self.stamps = stamps

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        for name in WRAPPED:
            if callable(getattr(module, name, None)):
                setattr(module, name, timed(self.stamps, name, getattr(module, name)))


class WrappingFinder(importlib.abc.MetaPathFinder):
    """Finds ``tumorcls.training.run`` as the path finder does and hands it to a WrappingLoader."""

    def __init__(self, stamps: dict[str, Any]) -> None:
        self.stamps = stamps

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = WrappingLoader(spec.loader, self.stamps)
        return spec


def main(argv: Sequence[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: phase_probe.py PHASES.json train.py [overrides...]")
    out, script = argv[0], argv[1]
    stamps: dict[str, Any] = {"probe_started": time.time()}

    def write() -> None:
        stamps["exit_called"] = time.time()
        with open(out, "w") as f:
            json.dump(stamps, f)

    atexit.register(write)
    sys.meta_path.insert(0, WrappingFinder(stamps))
    sys.argv = [script, *argv[2:]]
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as ``python train.py`` has it: the script's folder
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
