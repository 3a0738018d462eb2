"""The server's settings in one place: what it serves, where it listens, who may use it, and the limits every
request meets (README "Serve" has the table of limits)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024
DEFAULT_HOST = "127.0.0.1"  # another address exposes the model to the network: the user's explicit choice
DEFAULT_PORT = 7860
KEY_ENV = "TUMORCLS_API_KEY"  # the API key, when not in a --api-key-file (never on the command line: `ps` shows it)
MIN_KEY_LENGTH = 16
DEFAULT_MAX_PIXELS = 4096 * 4096  # a phone photo of a film fits; the model sees 150 px
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


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
    device: str = "cpu"
    threads: int | None = None  # the model's CPU threads; None: model_threads()
    # who may use it
    api_key: str | None = field(default=None, repr=False)  # Bearer token (API) and the page's login
    allowed_hosts: tuple[str, ...] = ()  # Host header names accepted besides the bound address and localhost
    cors_origins: tuple[str, ...] = ()  # origins other sites' pages may call the API from (none by default)
    # decoding
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height of one image, read from its header before decoding
    decode_memory_bytes: int = 1024 * MB  # what all decodes in progress may hold together (estimated from headers)
    # bodies and connections
    body_memory_bytes: int | None = None  # request bodies held in memory at once, all requests; None: body_memory
    read_timeout_s: float = 60.0  # a request's whole body must arrive within this
    idle_timeout_s: float = 10.0  # ... with no gap longer than this; also the time allowed for a request's headers
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    busy_wait_s: float = 30.0  # how long a request waits for memory before it is answered 503
    drain_s: float = 20.0  # on SIGTERM/SIGINT, in-flight requests get this long to finish
    # the page's uploads (written to disk by Gradio)
    upload_quota_bytes: int = 256 * MB  # what one client's page uploads may hold on disk at once
    upload_ttl_s: float = 900.0  # page uploads and answers older than this are deleted

    @property
    def max_request_bytes(self) -> int:
        """A whole request body: every file at its limit, plus room for the multipart headers."""
        return self.max_files * self.max_file_bytes + MB

    @property
    def body_memory(self) -> int:
        """The body memory budget: as set, else 512 MB or two full requests (each is held twice while parsed)."""
        return self.body_memory_bytes or max(512 * MB, 2 * self.max_request_bytes)

    def check(self) -> None:
        from tumorcls.errors import TumorclsError

        if min(self.max_file_bytes, self.max_files, self.max_batch, self.max_pixels) < 1:
            raise TumorclsError("the upload size, files per request, batch and pixel limits must be at least 1")
        if not 0 <= self.port <= 65535:
            raise TumorclsError(f"--port {self.port} is not a TCP port (0..65535)")
        if self.examples is not None and not self.examples.is_dir():
            raise TumorclsError(f"--examples '{self.examples}' is not a folder")
        if self.api_key is not None and len(self.api_key) < MIN_KEY_LENGTH:
            raise TumorclsError(
                f"the API key is {len(self.api_key)} characters; use at least {MIN_KEY_LENGTH} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.body_memory < 2 * self.max_request_bytes:  # uploads.BODY_COPIES
            raise TumorclsError(
                f"the body memory ({megabytes(self.body_memory)}) must hold one full request twice "
                f"(2 x {megabytes(self.max_request_bytes)}: --max-files x --max-file-mb)"
            )
        timeouts = (self.read_timeout_s, self.idle_timeout_s, self.keep_alive_s, self.busy_wait_s, self.upload_ttl_s)
        if min(timeouts) <= 0 or self.drain_s < 0:
            raise TumorclsError("timeouts must be positive")
        for origin in self.cors_origins:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise TumorclsError(f"--cors-origin '{origin}' is not an origin (scheme://host[:port], no path)")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(config: ServeConfig) -> str | None:
    """The one line said when the server is reachable from the network by anyone."""
    if is_loopback(config.host) or config.api_key:
        return None
    return (
        f"warning: serving on {config.host or '*'} without an API key: anyone who can reach this address can use "
        f"the model (set {KEY_ENV} or --api-key-file)"
    )


def read_api_key(key_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The key from ``key_file`` (its first line) or the environment; a TumorclsError if both or neither is usable."""
    from tumorcls.errors import TumorclsError

    environ = os.environ if environ is None else environ
    from_env = environ.get(KEY_ENV) or None
    if key_file is None:
        return from_env.strip() if from_env else None
    if from_env:
        raise TumorclsError(f"give the API key one way: {KEY_ENV} is set and --api-key-file too")
    try:
        lines = key_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TumorclsError(
            f"--api-key-file '{key_file}' cannot be read ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    if not lines or not lines[0].strip():
        raise TumorclsError(f"--api-key-file '{key_file}' is empty")
    return lines[0].strip()


def model_threads(requested: int | None = None) -> int:
    """The model's CPU threads: as asked, else half the cores, the other half decoding uploads and answering HTTP
    (on 2 cores one model thread served 103 requests/s against 57 with two, which fought the request threads)."""
    return requested if requested else max(1, (os.cpu_count() or 2) // 2)


def megabytes(n_bytes: int) -> str:
    """10485760 -> '10 MB' (as the limits are given), 800000 -> '0.763 MB'."""
    value = n_bytes / MB
    return f"{value:.3g} MB" if value >= 0.1 else f"{n_bytes} bytes"
