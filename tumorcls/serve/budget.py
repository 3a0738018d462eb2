"""Memory budgets that requests acquire before they hold memory: the bytes of request bodies kept in memory, and
the memory of images being decoded, estimated from their headers before any pixel is decoded. A request that would
exceed a budget waits (a bounded time, without holding anything else), one that could never fit is refused.

Decoding an image holds far more than its file: measured peaks, per pixel, over every accepted format (PNG, JPEG,
TIFF, WebP, GIF, plain and deflated DICOM; 8-bit, 16-bit and float samples) were 11 to 37 bytes, and never more than
``decode_cost``'s estimate of 24 bytes plus 8 per byte of the decoded sample (a float64 copy of every sample)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from tumorcls.data.decode import ImageHeader
from tumorcls.errors import TumorclsError

DECODE_BASE_BYTES_PER_PIXEL = 24
DECODE_BYTES_PER_SAMPLE_BYTE = 8
_POLL_S = 0.005


class ServerBusy(TumorclsError):
    """No memory came free in time: answered 503, to be retried."""


def decode_cost(header: ImageHeader) -> int:
    """Bytes that decoding an image of this header may hold at its peak (an upper bound; see the module doc)."""
    per_pixel = DECODE_BASE_BYTES_PER_PIXEL + DECODE_BYTES_PER_SAMPLE_BYTE * header.channels * header.bytes_per_sample
    return header.width * header.height * per_pixel


class MemoryBudget:
    """``total`` bytes shared by every request; acquire from a thread (blocking) or a coroutine (awaiting)."""

    def __init__(self, total: int, what: str) -> None:
        self.total = total
        self.what = what  # "decode memory", "body memory": named in the busy message
        self._used = 0
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    def try_acquire(self, n: int) -> bool:
        with self._changed:
            if self._used + n > self.total:
                return False
            self._used += n
            return True

    def release(self, n: int) -> None:
        with self._changed:
            self._used -= n
            self._changed.notify_all()

    def _busy(self, n: int) -> ServerBusy:
        return ServerBusy(f"server busy: the {self.what} is in use by other requests; retry shortly")

    def acquire(self, n: int, timeout: float) -> None:
        """Block until ``n`` bytes are free (ServerBusy after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._used + n > self.total:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._busy(n)
                self._changed.wait(left)
            self._used += n

    async def acquire_async(self, n: int, timeout: float) -> None:
        """Await ``n`` free bytes without holding a thread (ServerBusy after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire(n):
            if time.monotonic() >= deadline:
                raise self._busy(n)
            await asyncio.sleep(_POLL_S)

    @contextmanager
    def hold(self, n: int, timeout: float) -> Iterator[None]:
        self.acquire(n, timeout)
        try:
            yield
        finally:
            self.release(n)

    @asynccontextmanager
    async def hold_async(self, n: int, timeout: float) -> AsyncIterator[None]:
        await self.acquire_async(n, timeout)
        try:
            yield
        finally:
            self.release(n)
