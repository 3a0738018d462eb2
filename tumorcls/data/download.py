"""Make sure the dataset folder is there before training starts: on a fresh machine, fetch the public Kaggle
dataset into the default location (``data.download=auto``), so that ``python train.py`` works out of the box;
anywhere else, a missing folder is one clear line, found before any model is built or image decoded."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from tumorcls.data.scan import KAGGLE_DATASET, SOURCE_SPLITS, missing_root_message
from tumorcls.errors import DatasetError, first_line

log = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = Path("data/brain-tumor-classification-mri")  # conf/data/default.yaml's data.root
DOWNLOAD_MODES = ("auto", True, False)


def kaggle_download(handle: str, output_dir: Path) -> Path:
    """kagglehub's download (public dataset: no account needed; it shows its own progress bar)."""
    import kagglehub

    return Path(kagglehub.dataset_download(handle, output_dir=str(output_dir)))


def _dataset_folder(top: Path) -> Path | None:
    """The folder holding Training/ and Testing/: ``top`` itself or one level below it."""
    for candidate in (top, *sorted(p for p in top.iterdir() if p.is_dir())):
        if all((candidate / source).is_dir() for source in SOURCE_SPLITS):
            return candidate
    return None


def download_dataset(root: Path, handle: str = KAGGLE_DATASET) -> Path:
    """Download into a hidden sibling folder, then rename the dataset folder to ``root``: an interrupted
    download never looks like a dataset."""
    staging = root.parent / f".{root.name}.download"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("dataset not found at '%s': downloading Kaggle '%s' (about 90 MB) into it", root, handle)
    try:
        fetched = kaggle_download(handle, staging)
    except Exception as exc:  # noqa: BLE001 - offline, DNS, HTTP errors: all mean "could not download"
        shutil.rmtree(staging, ignore_errors=True)
        raise DatasetError(
            f"dataset not found at '{root}' and the download of Kaggle '{handle}' failed "
            f"({type(exc).__name__}: {first_line(exc, 160)}); download it yourself and set data.root=..., "
            "or pass data.download=false"
        ) from None
    found = _dataset_folder(fetched if fetched.is_dir() else staging)
    if found is None:
        shutil.rmtree(staging, ignore_errors=True)
        raise DatasetError(f"the download of Kaggle '{handle}' holds no {'/ and '.join(SOURCE_SPLITS)}/ folders")
    found.rename(root)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("dataset downloaded to '%s'", root)
    return root


def needs_download(root: str | Path, download: Any = "auto") -> bool:
    """True when ``root`` is missing and ``download`` allows fetching it (``auto``: only the default root;
    ``true``: any root; ``false``: never); False when it holds the dataset's folders; else DatasetError in one
    line. It looks at folders only, so train.py asks it before torch loads."""
    root = Path(root).expanduser()
    if download not in DOWNLOAD_MODES:
        raise DatasetError(f"data.download must be auto, true or false, got {download!r}")
    if not root.exists():
        if download is True or (download == "auto" and root.resolve() == DEFAULT_DATA_ROOT.resolve()):
            return True
        raise DatasetError(missing_root_message(root))
    if not root.is_dir():
        raise DatasetError(missing_root_message(root))
    for source in SOURCE_SPLITS:
        if not (root / source).is_dir():
            raise DatasetError(f"'{root / source}' is missing: expected {root}/{{{','.join(SOURCE_SPLITS)}}}/<class>/*")
    return False


def ensure_dataset(root: str | Path, download: Any = "auto") -> Path:
    """``root`` if it holds the dataset's folders; else downloaded there when ``download`` allows (see
    :func:`needs_download`); else DatasetError in one line."""
    root = Path(root).expanduser()
    if needs_download(root, download):
        root.parent.mkdir(parents=True, exist_ok=True)
        return download_dataset(root)
    return root
