"""The audit's inputs: every file under a dataset's class folders (found by ``tumorcls.data.files``), and what
each one is once read: its bytes hashed, then decoded by the one decoder, as training would, and its look
(head brightness and size) measured."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tumorcls.data.decode import ImageDecodeError, load_image, read_file_bytes
from tumorcls.data.files import split_folders, walk_dataset
from tumorcls.data.hashing import phash, sha256_bytes
from tumorcls.data.preprocess import head_look
from tumorcls.errors import DatasetError


@dataclass(frozen=True)
class FileEntry:
    path: Path
    rel: str  # path relative to the root, with forward slashes
    split: str
    label: str  # canonical class of the folder, or the folder's own name when it names no known class
    is_image: bool = True  # by name (formats.is_image_path); the others are reported, never opened


@dataclass(frozen=True)
class FileResult:
    entry: FileEntry
    status: str  # "ok", "non_image", "zero_byte" or "unreadable"
    reason: str = ""
    size: tuple[int, int] | None = None
    mode: str | None = None
    fmt: str | None = None
    sha256: str | None = None
    phash: int | None = None
    head_intensity: float | None = None  # mean grey level of the head (preprocess.head_look)
    head_fraction: float | None = None  # share of the image the head covers


@dataclass
class Layout:
    root: Path
    kind: str  # "Training/Testing" or "folder-per-class"
    entries: list[FileEntry]
    class_folders: dict[str, list[str]]  # split -> class folder names found
    outside_class_folders: list[str]  # files lying directly in a split folder (or the root)
    ignored: list[str]  # root entries other than the split folders (Kaggle layout only)


def discover(root: str | Path) -> Layout:
    """List every file under the class folders; DatasetError (one line) when there is nothing to audit."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset root '{root}' is not a directory; expected ROOT/{{Training,Testing}}/<class>/* or ROOT/<class>/*"
        )
    kind, splits = split_folders(root)
    found = walk_dataset(root, splits, kind)
    entries = [
        FileEntry(f.path, f.relative_to(root), f.split, f.label or f.folder.name, f.is_image) for f in found.files
    ]
    if not entries:
        raise DatasetError(f"no files found in class folders under '{root}' ({kind} layout)")
    return Layout(
        root,
        kind,
        entries,
        {split: [p.name for p in folders] for split, folders in found.class_folders.items()},
        [p.relative_to(root).as_posix() for p in found.loose_files],
        [p.relative_to(root).as_posix() for p in found.ignored],
    )


def inspect_file(entry: FileEntry) -> FileResult:
    """Read one file once: hash its bytes and decode them as every command does."""
    if not entry.is_image:
        return FileResult(entry, "non_image")
    try:
        data = read_file_bytes(entry.path)
    except ImageDecodeError as exc:
        return FileResult(entry, "unreadable", str(exc))
    if not data:
        return FileResult(entry, "zero_byte", "empty file (0 bytes)")
    digest = sha256_bytes(data)
    try:
        image = load_image(data, name=entry.path.name)
    except ImageDecodeError as exc:
        return FileResult(entry, "unreadable", str(exc), sha256=digest)
    look = head_look(image.rgb)
    return FileResult(entry, "ok", "", image.size, image.mode, image.format, digest, int(phash(image.rgb)), *look)


def inspect_all(entries: list[FileEntry], threads: int | None = None) -> list[FileResult]:
    workers = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(inspect_file, entries))
