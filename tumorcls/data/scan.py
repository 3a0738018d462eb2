"""Training's view of a Kaggle-layout dataset ROOT/{Training,Testing}/<class>/<image>: labelled records,
with strict checks (every split folder there, each class folder once), found by ``tumorcls.data.files``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tumorcls.data.class_folders import map_class_folders
from tumorcls.data.files import KAGGLE_LAYOUT, SOURCE_SPLITS, walk_dataset
from tumorcls.errors import DatasetError
from tumorcls.labels import CLASS_NAMES, CLASS_TO_INDEX

__all__ = ["KAGGLE_DATASET", "SOURCE_SPLITS", "ImageRecord", "ScanResult", "missing_root_message", "scan_dataset"]

log = logging.getLogger(__name__)

KAGGLE_DATASET = "sartajbhuvaji/brain-tumor-classification-mri"


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: int
    source: str  # "Training" or "Testing": the folder it came from

    def relative_to(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


@dataclass
class ScanResult:
    root: Path
    records: list[ImageRecord]
    skipped: list[Path] = field(default_factory=list)  # files that are not images by name


def missing_root_message(root: Path, env_var: str = "TUMORCLS_DATA") -> str:
    return (
        f"dataset not found at '{root}' (set data.root=... or the environment variable {env_var}); "
        f"get it from Kaggle '{KAGGLE_DATASET}' (kaggle datasets download -d {KAGGLE_DATASET}, "
        "or kagglehub.dataset_download) and point data.root at the folder holding Training/ and Testing/"
    )


def _check_class_folders(folders: list[Path], source_dir: Path) -> None:
    """Each of the four classes exactly once, under any of its accepted spellings (Glioma_Tumor, glioma...)."""
    found = set(map_class_folders(folders, where=source_dir).values())
    missing = [name for name in CLASS_NAMES if name not in found]
    if missing:
        raise DatasetError(f"class folder(s) {missing} missing in '{source_dir}'; expected {list(CLASS_NAMES)}")


def scan_dataset(root: str | Path, sources: tuple[str, ...] = SOURCE_SPLITS) -> ScanResult:
    """List image files under the requested source folders, with strict class-folder checks.

    Errors (DatasetError, one line): missing root or source folder, an unknown, duplicated or missing
    class folder, no images at all. Non-image files are skipped and counted, never opened. Records come
    in source, class, then path order.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(missing_root_message(root))
    splits: list[tuple[str, Path]] = []
    for source in sources:
        source_dir = root / source
        if not source_dir.is_dir():
            raise DatasetError(f"'{source_dir}' is missing: expected {root}/{{{','.join(sources)}}}/<class>/*.jpg")
        splits.append((source, source_dir))
    found = walk_dataset(root, splits, KAGGLE_LAYOUT)
    for source, source_dir in splits:
        _check_class_folders(found.class_folders[source], source_dir)
    order = {source: i for i, source in enumerate(sources)}
    images = sorted(found.images, key=lambda f: (order[f.split], CLASS_TO_INDEX[f.label]))  # stable: paths stay
    records = [ImageRecord(f.path, CLASS_TO_INDEX[f.label], f.split) for f in images]
    skipped = found.loose_files + found.non_images
    if skipped:
        log.warning(
            "skipped %d non-image file(s) under %s (e.g. %s)",
            len(skipped),
            root,
            ", ".join(p.name for p in skipped[:3]),
        )
    if not records:
        raise DatasetError(f"no image files found under '{root}' in {list(sources)}")
    return ScanResult(root=root, records=records, skipped=skipped)
