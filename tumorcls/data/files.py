"""The one image finder: which files a command reads, from paths, folders and globs, or from a dataset's
class folders (the Kaggle layout ROOT/{Training,Testing}/<class>/ or a plain ROOT/<class>/).

Every command finds its files here (train's scan, evaluate, audit, predict, export parity and calibration),
so a file counts as an image by one rule (``formats.is_image_path``) and a class folder means the same class
(``class_folders.canonical_class``: glioma_tumor, Glioma_Tumor, glioma, notumor, ...) for all of them.
"""

from __future__ import annotations

import glob
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


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


# ------------------------------------------------------------------------ paths, folders and globs


def _images_in(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and is_image_path(p)]


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
            found.files += [
                DatasetFile(p, split, folder, label, is_image_path(p)) for p in sorted(folder.rglob("*")) if p.is_file()
            ]
    return found
