"""``--shard i/n``: one of ``n`` deterministic parts of a command's input files, for array jobs on a cluster
(SLURM ``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``, or any scheduler that numbers its tasks).

The rule: the files in the order the command finds them (arguments in order, each folder sorted, repeats
dropped; :func:`tumorcls.data.files.find_images`), cut into ``n`` contiguous chunks whose sizes differ by at most
one. Contiguous rather than every n-th file so that the shards' outputs, concatenated in shard order, are the
unsharded output row for row. Every machine must see the same files under the same paths (a shared file
system): the split is computed from the listing, with no coordination between the tasks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from tumorcls.errors import TumorclsError

T = TypeVar("T")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; anything else is one line."""
    match = _SHARD.match(text)
    if match is None:
        raise TumorclsError(f"--shard must be i/n (e.g. 0/4), got '{text}'")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise TumorclsError(f"--shard i/n needs n >= 1 and 0 <= i < n (i counts from 0), got '{text}'")
    return index, count


def shard_of(items: Sequence[T], index: int, count: int) -> list[T]:
    """The ``index``-th of ``count`` contiguous chunks of ``items`` (sizes differ by at most one)."""
    n = len(items)
    return list(items[index * n // count : (index + 1) * n // count])
