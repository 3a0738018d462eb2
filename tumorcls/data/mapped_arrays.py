"""Memory-mapped arrays that pickle as their file, not their pixels.

A pickled ``np.memmap`` becomes an in-memory copy of the whole array: a spawned DataLoader worker (or a
``ddp_spawn`` rank) would each hold the decoded dataset again. Objects holding the decode cache's map
(``DecodedImages``, ``ArrayDataset``) pickle it through these two functions, and the receiver maps the file.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MappedFile:
    """A memory-mapped array as pickled: its file and layout."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str


def picklable_array(array: np.ndarray) -> np.ndarray | MappedFile:
    """A whole memory map of a file (not a view of one) as a MappedFile; any other array as itself."""
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename:
        return MappedFile(array.filename, array.offset, array.shape, array.dtype.str)
    return array


def unpickled_array(value: np.ndarray | MappedFile) -> np.ndarray:
    """The array again: a MappedFile mapped read-only."""
    if isinstance(value, MappedFile):
        return np.memmap(value.path, dtype=np.dtype(value.dtype), mode="r", offset=value.offset, shape=value.shape)
    return value
