"""The server's settings in one place: what it serves, where it listens, and the limits every request meets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
DEFAULT_HOST = "127.0.0.1"  # another address exposes the model to the network: the user's explicit choice
DEFAULT_PORT = 7860


@dataclass(frozen=True)
class ServeConfig:
    model: Path | tuple[Path, ...]  # one model file, or the members of an ensemble (the mean of their probabilities)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    examples: Path | None = None  # a folder of example images offered on the page
    cam: bool | None = None  # Grad-CAM on the page; None: on for checkpoints, off (impossible) otherwise
    cam_layer: str | None = None
    tta: bool = False  # the same flip TTA as `tumorcls predict --tta`
    max_file_bytes: int = 10 * MB
    max_files: int = 16  # per request (API) and per batch (page)
    max_batch: int = 32  # images per model call when concurrent requests are batched together
    max_pending: int = 8  # requests whose bodies are read at once; the others wait (bounds the memory)
    device: str = "cpu"
    threads: int | None = None  # the model's CPU threads; None: model_threads()

    @property
    def max_request_bytes(self) -> int:
        """A whole request body: every file at its limit, plus room for the multipart headers."""
        return self.max_files * self.max_file_bytes + MB

    def check(self) -> None:
        from tumorcls.errors import TumorclsError

        if self.max_file_bytes < 1 or self.max_files < 1 or self.max_batch < 1 or self.max_pending < 1:
            raise TumorclsError("the upload size, files per request, batch and pending limits must be at least 1")
        if not 0 <= self.port <= 65535:
            raise TumorclsError(f"--port {self.port} is not a TCP port (0..65535)")
        if self.examples is not None and not self.examples.is_dir():
            raise TumorclsError(f"--examples '{self.examples}' is not a folder")


def model_threads(requested: int | None = None) -> int:
    """The model's CPU threads: as asked, else half the cores, the other half decoding uploads and answering HTTP
    (on 2 cores one model thread served 103 requests/s against 57 with two, which fought the request threads)."""
    return requested if requested else max(1, (os.cpu_count() or 2) // 2)


def megabytes(n_bytes: int) -> str:
    """10485760 -> '10 MB' (as the limits are given)."""
    value = n_bytes / MB
    return f"{value:g} MB" if value >= 0.1 else f"{n_bytes} bytes"
