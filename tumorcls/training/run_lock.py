"""One ``train.py`` job per run folder: two jobs given the same ``hydra.run.dir`` would overwrite each other's
checkpoints and mix their metrics. The job holds an ``fcntl.flock`` on the folder's lock file for its whole
life; the kernel releases it when the process ends in any way (even SIGKILL), so resuming a finished or
killed run just takes the lock again."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tumorcls.errors import TumorclsError
from tumorcls.training.layout import RunLayout

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
    with open(layout.lock_file, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusyError(
                f"run folder '{layout.root}' is in use by another train.py job ({_holder(layout.lock_file)}); "
                "wait for it to end or choose another hydra.run.dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _holder(lock_file: Path) -> str:
    try:
        return lock_file.read_text().strip() or "pid unknown"
    except OSError:
        return "pid unknown"
