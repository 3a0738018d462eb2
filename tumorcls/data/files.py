"""The one image finder: which files a command reads, from paths, folders and globs, or from a dataset's
class folders (the Kaggle layout ROOT/{Training,Testing}/<class>/ or a plain ROOT/<class>/).

Every command finds its files here (train's scan, evaluate, audit, predict, export parity and calibration),
so a file counts as an image by one rule (``formats.is_image_path``) and a class folder means the same class
(``class_folders.canonical_class``: glioma_tumor, Glioma_Tumor, glioma, notumor, ...) for all of them.

Folders are searched with :func:`files_under`, which follows symlinked folders (``Path.rglob`` silently does not
enter them) and enters each real folder once: a link back to a folder being searched (a loop) or a second link to
one already searched is logged once and not followed again, and a link to nothing is logged as skipped.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tumorcls.data.class_folders import canonical_class
from tumorcls.data.formats import is_image_path

SOURCE_SPLITS = ("Training", "Testing")  # the Kaggle layout's split folders
SINGLE_SPLIT = "all"  # the split name of a folder-per-class dataset without Training/Testing
KAGGLE_LAYOUT = "Training/Testing"
FOLDER_LAYOUT = "folder-per-class"
GLOB_CHARS = frozenset("*?[")

log = logging.getLogger(__name__)


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


# ------------------------------------------------------------------------ paths, folders and globs


def _folder_key(folder: Path) -> tuple[int, int] | None:
    try:
        st = folder.stat()
    except OSError as exc:
        log.warning("skipped folder %s: %s", folder, exc.strerror or exc)
        return None
    return st.st_dev, st.st_ino


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        log.warning("skipped folder %s: %s", folder, exc.strerror or exc)
        return []


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError as exc:
        return exc.strerror or "unreadable"


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder`` (any depth), sorted by path as ``sorted(folder.rglob("*"))`` sorts them, with
    symlinked folders followed: each real folder is searched once, through the first path (in sorted order) that
    reaches it; a loop or a second link to it is logged and not followed."""
    found: list[Path] = []
    entered: dict[tuple[int, int], Path] = {}
    stack = [Path(folder)]
    while stack:
        current = stack.pop()
        key = _folder_key(current)
        if key is None:
            continue
        if key in entered:
            log.warning("not following %s: it leads to %s, already searched (a symlink loop or a second link)",
                        current, entered[key])  # fmt: skip
            continue
        entered[key] = current
        subfolders = []
        for entry in _entries(current):
            if entry.is_dir():  # follows symlinks
                subfolders.append(Path(entry.path))
            elif entry.is_file():
                found.append(Path(entry.path))
            elif entry.is_symlink():
                log.warning("skipped %s: a symlink to nothing (%s)", entry.path, _link_target(entry.path))
        stack.extend(reversed(subfolders))  # the first in sorted order is searched first
    return sorted(found)


def _images_in(folder: Path) -> list[Path]:
    return [p for p in files_under(folder) if is_image_path(p)]


def find_images(args: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to read, in order and without repeats, and the arguments that name nothing (path, reason).

    A folder is searched recursively for image files (``is_image_path``); a file named explicitly, or
    matched by a glob pattern, is taken whatever its name (the decoder decides by its content, among
    the same formats); a pattern is expanded here too, so quoted globs work (``**`` recursive).
    """
    files: dict[Path, None] = {}
    missing: list[tuple[Path, str]] = []

    def add(path: Path) -> None:
        for found in _images_in(path) if path.is_dir() else [path]:
            files.setdefault(found, None)

    for arg in args:
        path = Path(arg).expanduser()
        if path.exists():
            add(path)
        elif GLOB_CHARS & set(str(arg)):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                missing.append((path, "no file matches this pattern"))
            for match in matches:
                add(Path(match))
        else:
            missing.append((path, "no such file or directory"))
    return list(files), missing


# ---------------------------------------------------------------------------------- class folders


@dataclass(frozen=True)
class DatasetFile:
    path: Path
    split: str  # "Training", "Testing" or SINGLE_SPLIT
    folder: Path  # the class folder it lies in (at any depth)
    label: str | None  # canonical class of the folder; None for a folder that names no known class
    is_image: bool

    def relative_to(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


@dataclass
class DatasetFiles:
    """Everything under the class folders of the given split folders, sorted by path inside each folder."""

    root: Path
    layout: str  # KAGGLE_LAYOUT or FOLDER_LAYOUT
    class_folders: dict[str, list[Path]]  # split -> its visible sub-folders
    files: list[DatasetFile] = field(default_factory=list)
    loose_files: list[Path] = field(default_factory=list)  # files lying directly in a split folder
    ignored: list[Path] = field(default_factory=list)  # root entries other than the split folders

    @property
    def images(self) -> list[DatasetFile]:
        return [f for f in self.files if f.is_image]

    @property
    def non_images(self) -> list[Path]:
        return [f.path for f in self.files if not f.is_image]


def split_folders(root: Path) -> tuple[str, list[tuple[str, Path]]]:
    """The layout of ``root`` and its (split name, folder) pairs: the Kaggle split folders that exist,
    else ``root`` itself as one split of class folders."""
    found = [(name, root / name) for name in SOURCE_SPLITS if (root / name).is_dir()]
    if found:
        return KAGGLE_LAYOUT, found
    return FOLDER_LAYOUT, [(SINGLE_SPLIT, root)]


def list_class_folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and visible(p))


def walk_dataset(root: Path, splits: Sequence[tuple[str, Path]], layout: str) -> DatasetFiles:
    """Every file under the class folders of ``splits`` (existing folders, checked by the caller),
    each with its canonical class (or None); nothing is opened but the folders."""
    found = DatasetFiles(root, layout, {})
    if layout == KAGGLE_LAYOUT:
        names = {name for name, _ in splits}
        found.ignored = sorted(p for p in root.iterdir() if visible(p) and p.name not in names)
    for split, split_dir in splits:
        found.class_folders[split] = list_class_folders(split_dir)
        found.loose_files += sorted(p for p in split_dir.iterdir() if p.is_file() and visible(p))
        for folder in found.class_folders[split]:
            label = canonical_class(folder.name)
            found.files += [DatasetFile(p, split, folder, label, is_image_path(p)) for p in files_under(folder)]
    return found
