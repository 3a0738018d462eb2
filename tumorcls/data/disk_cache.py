"""The on-disk decode cache: a dataset decoded once into one file, memory-mapped by every later run.

Why: decoding costs every run and every sweep trial the same minutes, and a decoded array held in memory by
each process (and each DDP rank) is what limits the dataset's size. An entry is one folder
``<cache_dir>/decoded/<key>/`` holding ``images.u8`` (the raw (N, size, size, 3) uint8 rows), ``meta.npz``
(which scanned files decoded, their SHA-256 and pHash), ``entry.json`` (shape, skipped files and reasons,
the settings) and ``last_used`` (its modification time orders eviction).

- The key is a SHA-256 over, per scanned file in order, its path relative to the dataset root, label, source
  folder, size and ``mtime_ns`` (a rewritten or touched file decodes again; a dataset moved or copied with
  its times kept is the same data), and every setting that changes the pixels (``DecodeOptions``: size,
  interpolation, crop, intensity, min side, max pixels), the format version below and the versions of the
  decoders (Pillow, OpenCV).
- Writing: one process per key at a time (``filelock`` on ``<key>.lock``; the others wait, then map what it
  wrote). The pixels go from the decoders straight to their rows in the file (``pwrite``: no copy in memory,
  and the page cache is not charged to the writer), in a temporary folder ``.tmp-<key>-<random>`` that is
  fsynced and renamed into place: an entry exists whole or not at all. A writer killed midway leaves only its
  temporary folder, never read, and removed by the next writer once that key's lock is free.
- Size: before writing, least recently used entries are evicted until the new one fits under ``max_bytes``
  (entries being written are skipped; a run that has one mapped keeps reading it: POSIX keeps deleted files
  alive while mapped). A dataset larger than the limit, a full disk or a cache folder that cannot be written
  is one warning, and the caller decodes into memory instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import PIL
from filelock import FileLock, Timeout

from tumorcls.data.cache import DecodedImages, compact_rows, decode_into, kept_rows, log_failures
from tumorcls.data.decode import DecodeOptions
from tumorcls.data.scan import ImageRecord

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when decode.py's pixels or this layout change
IMAGES, META, ENTRY, USED = "images.u8", "meta.npz", "entry.json", "last_used"
_KEY = re.compile(r"^[0-9a-f]{64}$")
_TEMP = re.compile(r"^\.tmp-([0-9a-f]{64})-[0-9a-f]{32}$")
_TRASH = re.compile(r"^\.trash-[0-9a-f]{64}-[0-9a-f]{32}$")
GB = 10**9


def default_cache_dir() -> Path:
    """``$TUMORCLS_CACHE``, else ``$XDG_CACHE_HOME/tumorcls``, else ``~/.cache/tumorcls``."""
    if os.environ.get("TUMORCLS_CACHE"):
        return Path(os.environ["TUMORCLS_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "tumorcls"


def _identity(root: Path, record: ImageRecord) -> list:
    """[relative path, label, source, size, mtime_ns] of a file (size and time -1 when it cannot be stat'ed:
    the decoder then says why)."""
    try:
        stat = record.path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size, mtime = -1, -1
    return [record.relative_to(root), record.label, record.source, size, mtime]


def cache_key(root: Path, records: list[ImageRecord], options: DecodeOptions) -> str:
    """The entry's name: what the files are and every setting that changes their pixels."""
    digest = hashlib.sha256()
    settings = {"format": FORMAT_VERSION, "options": dataclasses.asdict(options)}
    settings["decoders"] = {"pillow": PIL.__version__, "opencv": cv2.__version__}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for record in records:
        digest.update(json.dumps(_identity(root, record)).encode() + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheResult:
    decoded: DecodedImages
    state: str  # "hit" (mapped, nothing decoded) or "written" (decoded into the new entry)
    path: Path
    seconds: float  # decoding into the entry (0 on a hit)


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk (a folder's fsync is best effort: some file systems refuse it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def _touch(path: Path) -> None:
    """Mark an entry used now (nanoseconds from the clock, not the file system's coarser tick)."""
    now = time.time_ns()
    with contextlib.suppress(OSError):  # a read-only cache still serves hits
        path.touch()
        os.utime(path, ns=(now, now))


def _entry_bytes(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.iterdir() if f.is_file())


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _reserve(fd: int, nbytes: int) -> None:
    """Allocate the file's blocks now, so a full disk fails before any decoding, not halfway."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except AttributeError:  # not on macOS
        os.ftruncate(fd, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a full disk is a failure; no support is not
            raise
        os.ftruncate(fd, nbytes)


class DecodeCache:
    """Entries under ``folder/decoded``, at most ``max_bytes`` in all."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int) -> None:
        self.folder = Path(folder).expanduser().resolve() / "decoded"
        self.max_bytes = int(max_bytes)

    def _lock(self, key: str) -> FileLock:
        return FileLock(self.folder / f"{key}.lock")

    @contextlib.contextmanager
    def _holding(self, key: str) -> Iterator[None]:
        """The key's lock; waiting for it (another process is writing this entry) is said once."""
        lock = self._lock(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("decode cache: waiting for another process writing %s", self.folder / key)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def load(self, root: Path, records: list[ImageRecord], options: DecodeOptions) -> CacheResult | None:
        """The dataset's decoded images, mapped from the entry for ``records`` x ``options``: written first
        when missing. None (and one warning) when the cache cannot hold it; the caller decodes in memory."""
        key = cache_key(root, records, options)
        entry = self.folder / key
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._holding(key):
                decoded = self._open(entry, key, records)
                if decoded is not None:
                    _touch(entry / USED)
                    log_failures(decoded.failures, len(records))  # as the run that decoded them said
                    return CacheResult(decoded, "hit", entry, 0.0)
                return self._build(entry, key, records, options)
        except OSError as exc:
            log.warning("decode cache: cannot use %s (%s); decoding into memory", self.folder, exc)
            return None

    def _open(self, entry: Path, key: str, records: list[ImageRecord]) -> DecodedImages | None:
        """The published entry mapped read-only, or None when it is missing or not whole (then removed)."""
        if not entry.is_dir():
            return None
        try:
            info = json.loads((entry / ENTRY).read_text())
            shape = (int(info["images"]), *info["shape"])
            if info["format"] != FORMAT_VERSION or info["key"] != key or info["files"] != len(records):
                raise ValueError("another format or key")
            if (entry / IMAGES).stat().st_size != math.prod(shape):
                raise ValueError("images file of the wrong size")
            with np.load(entry / META) as meta:
                kept, sha256, phashes = meta["kept"], meta["sha256"], meta["phashes"]
            images = np.memmap(entry / IMAGES, dtype=np.uint8, mode="r", shape=shape)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("decode cache: %s is not usable (%s); decoding again", entry, exc)
            self._remove(key, entry)
            return None
        kept_records = [records[i] for i in kept]
        failures = [(records[row].path, why) for row, why in info["failures"]]
        return DecodedImages(
            records=kept_records,
            images=images,
            labels=np.array([r.label for r in kept_records], dtype=np.int64),
            sha256=[s.decode() for s in sha256],
            phashes=phashes.astype(np.uint64),
            failures=failures,
        )

    def _build(self, entry: Path, key: str, records: list[ImageRecord], options: DecodeOptions) -> CacheResult | None:
        """Decode into a new entry (its key's lock held), after sweeping dead writers' leftovers and
        evicting least recently used entries to make room."""
        self._sweep(key)
        needed = len(records) * options.size * options.size * 3
        if needed > self.max_bytes:
            log.warning(
                "decode cache: this dataset needs %.2f GB, over the limit of %.2f GB (data.cache_max_gb); "
                "decoding into memory",
                needed / GB,
                self.max_bytes / GB,
            )
            return None
        self._evict(needed, key)
        temp = self.folder / f".tmp-{key}-{uuid.uuid4().hex}"
        temp.mkdir()
        try:
            started = time.perf_counter()
            self._write(temp, key, records, options)
            seconds = time.perf_counter() - started
            os.rename(temp, entry)  # the publication: atomic, after every byte is on disk
            _fsync(self.folder)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        decoded = self._open(entry, key, records)
        if decoded is None:
            raise OSError(f"the entry just written at {entry} does not read back")
        return CacheResult(decoded, "written", entry, seconds)

    def _write(self, temp: Path, key: str, records: list[ImageRecord], options: DecodeOptions) -> None:
        """Every file of the entry in ``temp``, fsynced."""
        row_shape = (options.size, options.size, 3)
        row_bytes = math.prod(row_shape)
        fd = os.open(temp / IMAGES, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            _reserve(fd, len(records) * row_bytes)
            results = decode_into(records, options, lambda row, pixels: _pwrite_all(fd, pixels, row * row_bytes))
            kept, failures = kept_rows(records, results)
            if len(kept) < len(records):  # skipped files: close the gaps, then drop the unused tail
                rows = np.memmap(temp / IMAGES, dtype=np.uint8, mode="r+", shape=(len(records), *row_shape))
                compact_rows(rows, kept)
                rows.flush()
                del rows
                os.ftruncate(fd, len(kept) * row_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        sha256 = np.array([results[i][0] for i in kept], dtype="S64")
        phashes = np.array([results[i][1] for i in kept], dtype=np.uint64)
        with open(temp / META, "wb") as fh:
            np.savez(fh, kept=kept, sha256=sha256, phashes=phashes)
        failed_rows = [[i, why] for i, why in enumerate(results) if isinstance(why, str)]
        info = {
            "format": FORMAT_VERSION,
            "key": key,
            "files": len(records),
            "images": len(kept),
            "shape": list(row_shape),
            "options": dataclasses.asdict(options),
            "failures": failed_rows,
            "skipped": len(failures),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (temp / ENTRY).write_text(json.dumps(info) + "\n")
        _touch(temp / USED)
        for name in (META, ENTRY, USED, "."):
            _fsync(temp / name)

    def _entries(self) -> list[tuple[int, str, Path]]:
        """(last used in ns, key, folder) of every published entry, least recently used first."""
        found = []
        for path in self.folder.iterdir():
            if _KEY.match(path.name) and (path / ENTRY).is_file():
                with contextlib.suppress(OSError):
                    found.append(((path / USED).stat().st_mtime_ns, path.name, path))
        return sorted(found)

    def _evict(self, needed: int, keep: str) -> None:
        """Remove least recently used entries until ``needed`` more bytes fit under the limit."""
        entries = []
        for _, key, path in self._entries():
            with contextlib.suppress(OSError):  # removed meanwhile by another process
                entries.append((key, path, _entry_bytes(path)))
        total = sum(size for key, _, size in entries)
        for key, path, size in entries:
            if total + needed <= self.max_bytes:
                break
            if key != keep and self._remove_unlocked(key, path):
                total -= size
                log.info("decode cache: evicted %s (%.2f GB, least recently used)", path, size / GB)

    def _sweep(self, key: str) -> None:
        """Remove what dead writers left: temporary folders whose key is not locked (``key``'s lock is ours,
        so its temporaries are all dead) and entries half-way through removal."""
        for path in self.folder.iterdir():
            if _TRASH.match(path.name):
                shutil.rmtree(path, ignore_errors=True)
                continue
            temp = _TEMP.match(path.name)
            owner = temp.group(1) if temp else None
            if owner is None:
                continue
            removed = self._remove(owner, path) if owner == key else self._remove_unlocked(owner, path)
            if removed:
                log.info("decode cache: removed %s, left by an interrupted writer", path)

    def _remove_unlocked(self, key: str, path: Path) -> bool:
        """Remove ``path`` under ``key``'s lock if nobody holds it (no blocking); whether it was removed."""
        lock = self._lock(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        try:
            return self._remove(key, path)
        finally:
            lock.release()

    def _remove(self, key: str, path: Path) -> bool:
        """Take ``path`` (an entry or temporary folder of ``key``) out of sight in one rename, then delete it;
        whether it was there to remove."""
        trash = self.folder / f".trash-{key}-{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True
