"""What the page's (Gradio's) routes may touch: only files this server received as uploads, in its own folder.

Gradio takes the files of an event as FileData objects naming a server path, and copies whatever path it is given
into its cache before a handler sees it; its own check of that path does not run under ``gr.mount_gradio_app``
(``processing_utils._check_allowed`` returns early unless ``Blocks.has_launched``). So every JSON body sent to a
Gradio route is read here first, and refused (403, nothing copied) if any object in it names a ``path`` that is not
an upload this server received (or one of its examples). ``/gradio_api/file=`` serves only this app's own folder
(never a URL: Gradio would fetch it), and ``/gradio_api/proxy=`` nothing.

Uploads: a client's page uploads may hold at most the upload quota on disk at once (429 past it); an upload that is
cut off leaves a partial temp file, deleted as soon as no upload that could own it is in progress; uploads and
answers older than the upload TTL are deleted (``sweep``)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from tumorcls.serve.config import ServeConfig, megabytes

PREFIX = "/gradio_api/"
UPLOAD_ROUTE = "/gradio_api/upload"
MAX_JSON_BODY = 1024 * 1024  # an event's JSON (file names, not files): far below this
QUOTA_SLACK = 64 * 1024  # an upload's multipart headers, beyond its files' bytes
_CLOCK_SLACK_S = 0.05  # file times come from a coarser clock than time.time()
_SETTLED_S = 60.0


class PageFiles:
    """The page's files: uploads received (Gradio's ``upload_file_set``), examples, per-client holdings."""

    def __init__(self, folder: Path, upload_set: set[str], config: ServeConfig) -> None:
        self.folder = Path(os.path.abspath(folder))
        self.uploaded = upload_set  # Gradio adds each upload it stored; our sweep removes those deleted
        self.examples: frozenset[str] = frozenset()
        self.quota = config.upload_quota_bytes
        self.ttl_s = config.upload_ttl_s
        self.held: dict[str, list[str]] = {}  # client address -> its uploads
        self.uploads_in_progress: dict[int, float] = {}  # request id -> start time
        self._lock = threading.Lock()  # the event loop records, a worker thread sweeps

    def note_examples(self) -> None:
        """Take the files in the folder now (right after the page is built: Gradio's copies of the examples) as
        the page's own, never swept."""
        self.examples = frozenset(str(p) for p in self.folder.rglob("*") if p.is_file())

    # what a request may name
    def is_received(self, path: Any) -> bool:
        if not isinstance(path, str) or "\0" in path:
            return False
        normal = os.path.abspath(path)  # Gradio stores the absolute, normalised path of each upload
        return normal in self.examples or normal in self.uploaded

    def payload_refusal(self, body: bytes) -> str | None:
        """Why a JSON body sent to a Gradio route is refused, or None (bodies that are not JSON pass: Gradio
        refuses them itself)."""
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            return None
        for path in _named_paths(data):
            if not self.is_received(path):
                shown = Path(path).name if isinstance(path, str) else type(path).__name__
                return f"file '{shown}' was not uploaded to this server; upload it first (POST {UPLOAD_ROUTE})"
        return None

    def file_route_refusal(self, path: str) -> str | None:
        """Why GET /gradio_api/file=<target> (or proxy=) is refused, or None."""
        if path.startswith("/gradio_api/proxy="):
            return "this server proxies nothing"
        target = path.removeprefix("/gradio_api/file=")
        if "://" in target or target.startswith("//"):
            return "this server serves its own files only, never a URL"
        if not Path(os.path.abspath(target)).is_relative_to(self.folder):
            return "not a file of this server's page"
        return None

    # uploads of a client
    def held_bytes(self, client: str) -> int:
        with self._lock:
            paths = list(self.held.get(client, []))
        return sum(_size(p) for p in paths)

    def quota_refusal(self, client: str, declared: int | None) -> str | None:
        held = self.held_bytes(client)
        if held >= self.quota or (declared is not None and held + declared > self.quota + QUOTA_SLACK):
            return (
                f"upload quota reached: this client's uploads hold {megabytes(held)} of "
                f"{megabytes(self.quota)}; they are freed once classified"
            )
        return None

    def record_upload(self, client: str, answer: bytes) -> None:
        try:
            paths = json.loads(answer)
        except ValueError:
            return
        if isinstance(paths, list):
            with self._lock:
                self.held.setdefault(client, []).extend(p for p in paths if isinstance(p, str))

    def upload_started(self, request: int) -> None:
        with self._lock:
            self.uploads_in_progress[request] = time.time()

    def upload_ended(self, request: int) -> None:
        with self._lock:
            self.uploads_in_progress.pop(request, None)

    # sweeping
    def sweep(self, now: float | None = None) -> int:
        """Delete abandoned partial uploads and files older than the TTL; the number of files deleted."""
        now = time.time() if now is None else now
        with self._lock:
            oldest_in_progress = min(self.uploads_in_progress.values(), default=now) - _CLOCK_SLACK_S
        deleted = 0
        for path in list(self.folder.rglob("*")):
            try:
                if not path.is_file() or str(path) in self.examples:
                    continue
                modified = path.stat().st_mtime
                partial = path.parent == self.folder and path.name.startswith("tmp")
                if (partial and modified < oldest_in_progress) or modified < now - self.ttl_s:
                    path.unlink()
                    deleted += 1
            except OSError:
                continue
        self._forget_deleted()
        return deleted

    def _forget_deleted(self) -> None:
        for path in [p for p in list(self.uploaded) if not os.path.exists(p)]:
            self.uploaded.discard(path)
        settled = time.time() - _SETTLED_S  # a newer empty folder may be about to receive an upload
        for folder in [p for p in self.folder.iterdir() if p.is_dir() and p.name != "deep_links"]:
            with contextlib.suppress(OSError):
                if folder.stat().st_mtime < settled and not any(folder.iterdir()):
                    folder.rmdir()
        with self._lock:
            self.held = {
                client: kept for client, paths in self.held.items() if (kept := [p for p in paths if os.path.exists(p)])
            }


def _named_paths(data: Any) -> list[Any]:
    """Every ``path`` value of every object in a JSON document (FileData objects and anything shaped like one)."""
    found, stack = [], [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "path" in item:
                found.append(item["path"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
