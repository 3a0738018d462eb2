"""What the benchmarks feed the model: synthetic or real decoded images, and a datamodule serving them from memory.

Works from an installed package: the training augmentation is a constant here (a test keeps it equal to
conf/data/default.yaml's ``train_augmentations``), not read from the source checkout's conf/ folder.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.labels import CLASS_NAMES

# conf/data/default.yaml's ``train_augmentations`` (tests/test_bench.py checks that they stay equal)
TRAIN_AUGMENTATIONS: tuple[dict[str, Any], ...] = (
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {
        "_target_": "albumentations.Affine",
        "scale": [0.9, 1.1],
        "translate_percent": [-0.05, 0.05],
        "rotate": [-10, 10],
        "p": 0.7,
    },
    {
        "_target_": "albumentations.RandomBrightnessContrast",
        "brightness_limit": 0.15,
        "contrast_limit": 0.15,
        "p": 0.5,
    },
)


def default_train_augmentations() -> list[dict[str, Any]]:
    """The configured training augmentation, as fresh mutable specs."""
    return copy.deepcopy(list(TRAIN_AUGMENTATIONS))


def synthetic_images(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 RGB images (noise: the pixels' content does not change any timing) and balanced labels."""
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, size=(n, size, size, 1), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % len(CLASS_NAMES)
    return np.ascontiguousarray(np.repeat(gray, 3, axis=3)), labels


def load_images(root: str | os.PathLike, size: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Real images of a Kaggle-layout folder, decoded once at ``size`` (the first ``limit`` files)."""
    from tumorcls.data.cache import decode_records
    from tumorcls.data.decode import DecodeOptions
    from tumorcls.data.scan import SOURCE_SPLITS, scan_dataset

    records = scan_dataset(Path(root).expanduser(), SOURCE_SPLITS).records
    if limit:
        step = max(1, len(records) // limit)  # spread over classes and splits
        records = records[::step][:limit]
    decoded = decode_records(records, DecodeOptions(size))
    return decoded.images, decoded.labels


def in_memory_datamodule(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    size: int,
    batch_size: int,
    num_workers: int | str = "auto",
    augment: bool = True,
    pin_memory: bool | None = None,
) -> Any:
    """A TumorDataModule serving already-decoded arrays (its own transforms, loaders and seeding),
    as it would after ``setup`` on a dataset folder."""
    from tumorcls.data.datamodule import ArrayDataset, TumorDataModule

    dm = TumorDataModule(
        root=".",
        size=size,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        train_augmentations=default_train_augmentations() if augment else (),
    )
    dm.datasets = {
        "train": ArrayDataset(train[0], train[1], dm.train_transform),
        "val": ArrayDataset(val[0], val[1], dm.eval_transform),
        "test": ArrayDataset(val[0], val[1], dm.eval_transform),
    }
    return dm


def endless(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader
