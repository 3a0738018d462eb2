"""Atomic file writes: write a temporary file beside the target, fsync, then rename over it.

A failed write (disk full, read-only file system, no permission) becomes one :class:`OutputError` line and
leaves no temporary file. Temporary files are named ``.<name>.<pid>.<random>.tmp`` so that those of a
writer killed outright (``kill -9``) are recognised and removed by the next write into the same folder.
:func:`check_writable` asks the same questions before a long computation starts.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tumorcls.errors import OutputError, first_line

log = logging.getLogger(__name__)

_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a parent of it is not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "a parent of it is not a folder",
}
_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)")  # h5py puts the C errno in its message
_LOW_SPACE_BYTES = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_write_failure(exc: BaseException) -> bool:
    """An OSError, or torch's zip writer failing (it raises RuntimeError, not OSError)."""
    return isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "failed writing file" in str(exc))


def _reason(exc: BaseException, folder: Path) -> str:
    """Why a write failed, in a few words."""
    code = getattr(exc, "errno", None)
    if code is None:
        found = _ERRNO_IN_TEXT.search(str(exc))
        code = int(found.group(1)) if found else None
    if code in _REASONS:
        return _REASONS[code]
    try:
        if shutil.disk_usage(folder).free < _LOW_SPACE_BYTES:
            return "disk full"
    except OSError:
        pass
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return first_line(exc)


def output_error(path: str | Path, exc: BaseException) -> OutputError:
    """The one-line error for a failed write of ``path``."""
    path = Path(path)
    return OutputError(f"cannot write '{path}': {_reason(exc, _existing_ancestor(path.parent))}")


def _existing_ancestor(folder: Path) -> Path:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


# .<name>.<pid>.<mkstemp's 8 random characters>.tmp, optionally staged under another suffix (.tmp.h5)
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
_SWEPT: set[str] = set()  # folders already cleaned by this process: a dead writer leaves no new files


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writes into ``folder`` left when their process died (``kill -9``);
    those of live processes stay. Each folder is swept once per process."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _SWEPT or not folder.is_dir():
        return []
    _SWEPT.add(key)
    removed = []
    for candidate in folder.iterdir():
        match = _TEMP_NAME.match(candidate.name)
        if match is None or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        try:
            candidate.unlink()
        except OSError:
            continue
        removed.append(candidate)
        log.info("removed %s, left by an interrupted write (process %s)", candidate, match.group(1))
    return removed


def check_writable(path: str | Path) -> Path:
    """Refuse early, in one line, an output path that cannot be written: a folder, a path under a file,
    a read-only or full file system, a folder without permission. Creates nothing that stays."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"cannot write '{path}': it is a folder")
    folder = _existing_ancestor(path.parent)
    if not folder.is_dir():
        raise OutputError(f"cannot write '{path}': '{folder}' is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise output_error(path, exc) from None
    if shutil.disk_usage(folder).free < _LOW_SPACE_BYTES:
        raise OutputError(f"cannot write '{path}': disk full")
    return path


def _new_temp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    return Path(tmp)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it succeeded; a failed write is one
    :class:`OutputError` line, and no temporary file is left either way."""
    path = Path(path)
    remove_stale_temps(path.parent)
    try:
        tmp_path = _new_temp(path)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        error = output_error(path, exc) if _is_write_failure(exc) else None
        tmp_path.unlink(missing_ok=True)
        if error is not None:
            raise error from None
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
