"""``train.py`` as a subprocess on a disk that is full for checkpoints: every checkpoint write goes to /dev/full
(a real write that fails with ENOSPC, as on a full disk; no root, no small file system needed).

    python -m tests.helpers.full_disk_train data.root=... hydra.run.dir=...
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from tests.helpers.paths import REPO
from tumorcls.training import checkpoint_io

_real_atomic_write = checkpoint_io.atomic_write


def _atomic_write_to_a_full_disk(path, write):
    """The real atomic write of ``path`` (its temporary file, rename, error mapping), whose bytes go to /dev/full."""
    return _real_atomic_write(path, lambda tmp: write(Path("/dev/full")))


if __name__ == "__main__":
    checkpoint_io.atomic_write = _atomic_write_to_a_full_disk
    sys.argv = [str(REPO / "train.py"), *sys.argv[1:]]
    runpy.run_path(str(REPO / "train.py"), run_name="__main__")
