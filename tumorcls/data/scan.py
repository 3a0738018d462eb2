"""Find the images of a Kaggle-layout dataset: ROOT/{Training,Testing}/<class>/<image>."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tumorcls.data.decode import is_image_path
from tumorcls.errors import DatasetError
from tumorcls.labels import CLASS_NAMES, CLASS_TO_INDEX

log = logging.getLogger(__name__)

SOURCE_SPLITS = ("Training", "Testing")
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


def scan_dataset(root: str | Path, sources: tuple[str, ...] = SOURCE_SPLITS) -> ScanResult:
    """List image files under the requested source folders, with strict class-folder checks.

    Errors (DatasetError, one line): missing root or source folder, an unknown or missing class
    folder, no images at all. Non-image files are skipped and counted, never opened.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(missing_root_message(root))
    records: list[ImageRecord] = []
    skipped: list[Path] = []
    for source in sources:
        source_dir = root / source
        if not source_dir.is_dir():
            raise DatasetError(f"'{source_dir}' is missing: expected {root}/{{{','.join(sources)}}}/<class>/*.jpg")
        class_dirs = {p.name: p for p in source_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
        unknown = sorted(set(class_dirs) - set(CLASS_NAMES))
        if unknown:
            raise DatasetError(
                f"unknown class folder(s) {unknown} in '{source_dir}'; expected exactly {list(CLASS_NAMES)}"
            )
        missing = [name for name in CLASS_NAMES if name not in class_dirs]
        if missing:
            raise DatasetError(f"class folder(s) {missing} missing in '{source_dir}'; expected {list(CLASS_NAMES)}")
        skipped.extend(p for p in source_dir.iterdir() if p.is_file())
        for name in CLASS_NAMES:
            for path in sorted(class_dirs[name].rglob("*")):
                if not path.is_file():
                    continue
                if is_image_path(path):
                    records.append(ImageRecord(path, CLASS_TO_INDEX[name], source))
                else:
                    skipped.append(path)
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
