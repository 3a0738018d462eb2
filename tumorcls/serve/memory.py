"""Give the memory of large decodes back to the system. glibc keeps freed memory in its heaps, one per thread that
allocated (a server decodes in many threads): after eight large PNGs decoded at once, 2.9 GB stayed held. Large
buffers are made to come from mmap (returned as soon as they are freed), and the heaps are trimmed after a large
decode. Elsewhere than glibc both are no-ops."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers, from glibc's malloc.h
MMAP_THRESHOLD = 1024 * 1024  # allocations from 1 MB up are mapped; fixing it stops glibc raising it to 32 MB
TRIM_AFTER_BYTES = 32 * 1024 * 1024  # decodes estimated above this trim the heaps once they are done


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def map_large_allocations() -> bool:
    """Serve large allocations from mmap, from now on, in this process; False where that is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_memory() -> None:
    """Return the free memory of every heap to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
