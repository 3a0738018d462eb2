"""One ``train.py`` job per run folder: two jobs given the same ``hydra.run.dir`` would overwrite each other's
checkpoints and mix their metrics. The job holds an OS lock on the folder's lock file for its whole life (the
``filelock`` package: flock on POSIX, msvcrt on Windows); the OS releases it when the process ends in any way (even
SIGKILL), so resuming a finished or killed run just takes the lock again."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from tumorcls.errors import TumorclsError
from tumorcls.run_layout import RunLayout

# set by torchrun, SLURM (through Lightning) and Lightning's own launcher for the processes it starts
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


class RunFolderBusyError(TumorclsError):
    """Another live job holds the run folder."""


def is_launching_process() -> bool:
    """False in the extra processes of a distributed run: they share the folder of the process holding it."""
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


@contextmanager
def run_folder_lock(layout: RunLayout) -> Iterator[None]:
    """Hold the run folder's lock until the block ends; RunFolderBusyError if another process holds it."""
    if not is_launching_process():
        yield
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(layout.lock_file, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderBusyError(
            f"run folder '{layout.root}' is in use by another train.py job ({_holder(layout.lock_file)}); "
            "wait for it to end or choose another hydra.run.dir"
        ) from None
    try:
        with contextlib.suppress(OSError):  # who holds it, for the refusal; Windows may keep a locked file shut
            layout.lock_file.write_text(f"pid {os.getpid()}\n")
        yield
    finally:
        lock.release()


def _holder(lock_file: Path) -> str:
    try:
        return lock_file.read_text().strip() or "pid unknown"
    except OSError:
        return "pid unknown"
