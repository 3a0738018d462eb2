"""Ctrl-C (SIGINT) and SIGTERM as one exception a command can stop on cleanly: it closes its files, says in one
line what it kept, and exits with the shell's status for the signal (128 + its number: 130, 143).

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be (inside ONNX Runtime's
Python wrapper, in torch, in a ``write``), and SIGTERM kills the process without running any Python at all.
:func:`stop_on_signals` makes both raise :class:`Interrupted`, and :meth:`StopSignals.deferred` holds one back
while a row is being written, so that a stop never cuts a row in half.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):  # noqa: N818 - it is not an error of the program
    """The user (Ctrl-C) or a scheduler (SIGTERM) asked the command to stop."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopSignals:
    """The handler installed by :func:`stop_on_signals`."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferring = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if not self._deferring:
            raise Interrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal that arrives inside the block is raised when the block ends, not in the middle of it."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self.received is not None:
            raise Interrupted(self.received)


@contextmanager
def stop_on_signals() -> Iterator[StopSignals]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread until the block ends; the previous
    handlers come back afterwards. A ``KeyboardInterrupt`` raised by a library before the handler took over is
    turned into :class:`Interrupted` too."""
    handler = StopSignals()
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield handler
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
