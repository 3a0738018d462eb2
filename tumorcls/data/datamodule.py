"""LightningDataModule: decode the dataset once (into the on-disk cache, memory-mapped, or into memory), split it
by protocol into index arrays over that one array, serve augmented tensors."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, default_collate

from tumorcls.config.data import DEFAULTS as DATA
from tumorcls.config.data import DataConfig
from tumorcls.data.batch_augment import BatchAugment, resolve_augment_on
from tumorcls.data.cache import DecodedImages, decode_records
from tumorcls.data.config_check import check_data_settings
from tumorcls.data.decode import DecodeOptions
from tumorcls.data.disk_cache import GB, DecodeCache, default_cache_dir
from tumorcls.data.hashing import duplicate_groups
from tumorcls.data.mapped_arrays import picklable_array, unpickled_array
from tumorcls.data.scan import SOURCE_SPLITS, ScanResult, scan_dataset
from tumorcls.data.splits import SPLITS, make_splits, write_manifest
from tumorcls.data.transforms import build_transforms
from tumorcls.errors import DatasetError
from tumorcls.labels import CLASS_NAMES

log = logging.getLogger(__name__)
DATA_KEYS = frozenset(f.name for f in dataclasses.fields(DataConfig))


def resolve_num_workers(num_workers: int | str, augment_on: str = "cpu") -> int:
    """``auto``: no worker processes on CPU-only machines, where augmentation costs far less than a
    training step and workers only steal cores from it, nor with ``augment_on=device``, where a batch is one
    array slice; up to 8 when a GPU has to be fed by CPU augmentation."""
    if num_workers != "auto":
        return int(num_workers)
    if not torch.cuda.is_available() or augment_on == "device":
        return 0
    return min(8, max(1, (os.cpu_count() or 2) - 1))


def _seed_worker_transform(worker_id: int) -> None:
    """Give each DataLoader worker its own augmentation stream, derived from the torch seed: albumentations'
    Compose keeps a private RNG that global seeding does not reach."""
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.transform.set_random_seed(info.seed % 2**32)


class Uint8ToTensor:
    """The train transform of ``augment_on=device``: the uint8 HxWx3 image as a uint8 3xHxW tensor (a view);
    augmentation and normalisation run later, batch-wise on the device (data.batch_augment)."""

    def __call__(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(image).permute(2, 0, 1)}

    def batch(self, images: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 -> uint8 N x 3 x H x W (channels-last memory: the layout the network runs in)."""
        return torch.from_numpy(images).permute(0, 3, 1, 2)

    def set_random_seed(self, seed: int) -> None:
        """Nothing random runs here (same interface as A.Compose)."""


def take_rows(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``images[rows]`` in the order of ``rows``, read in increasing row order (a memory map is read forward,
    page by page) into one new array."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *images.shape[1:]), dtype=images.dtype)
    out[order] = images[rows[order]]
    return out


class ArrayDataset(Dataset):
    """The items ``indices`` (default: all) of a uint8 image array shared by every split (in memory or a
    memory map of the decode cache: never copied), transformed on access. ``labels`` are the base array's;
    ``self.labels`` are this split's."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: A.Compose | Uint8ToTensor,
        indices: np.ndarray | None = None,
    ) -> None:
        self.base_images = images
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels)[self.indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Item ``i``'s uint8 H x W x 3 pixels, before the transform (a copy of one row)."""
        return np.array(self.base_images[self.indices[i]])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(image=self.image(i))["image"], int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]] | CollatedBatch:
        """A whole batch (the DataLoader asks for one at a time): one sorted fancy index into the base array
        when the transform works on batches (``augment_on=device``), else the items one by one."""
        if not hasattr(self.transform, "batch"):
            return [self[i] for i in indices]
        idx = np.asarray(indices)
        images = take_rows(self.base_images, self.indices[idx])
        return CollatedBatch((self.transform.batch(images), torch.from_numpy(self.labels[idx]).long()))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (spawned DataLoader workers), a memory-mapped base array travels as its file name."""
        return {**self.__dict__, "base_images": picklable_array(self.base_images)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, base_images=unpickled_array(state["base_images"]))


class CollatedBatch(tuple):
    """(images, labels) already stacked by ``ArrayDataset.__getitems__``."""


def collate(items: list[tuple[torch.Tensor, int]] | CollatedBatch) -> Any:
    """The loaders' collate_fn: a CollatedBatch as a list (as default_collate returns), anything else stacked."""
    return list(items) if isinstance(items, CollatedBatch) else default_collate(items)


class TumorDataModule(L.LightningDataModule):
    """Brain MRI slices in the Kaggle layout ``root/{Training,Testing}/<class>/*``.

    Images are decoded once, at ``size`` x ``size``, in ``setup``: into the on-disk decode cache
    (``tumorcls.data.disk_cache``; a later setup of the same files and settings maps it and decodes nothing), or
    into memory with ``cache=False``. The splits are index arrays over that one array. Epochs only augment: in
    the DataLoader with albumentations (``augment_on="cpu"``), or batch-wise on the model's device after the
    transfer (``augment_on="device"``, data.batch_augment: the train loader then serves uint8 tensors).
    """

    def __init__(
        self,
        root: str | os.PathLike = DATA.root,
        protocol: str = DATA.protocol,
        size: int = DATA.size,
        batch_size: int = DATA.batch_size,
        eval_batch_size: int | None = DATA.eval_batch_size,
        num_workers: int | str = DATA.num_workers,
        pin_memory: bool | None = DATA.pin_memory,
        split_seed: int = DATA.split_seed,
        test_fraction: float = DATA.test_fraction,
        val_fraction: float = DATA.val_fraction,
        near_dup_distance: int | None = DATA.near_dup_distance,
        num_folds: int | None = DATA.num_folds,
        fold: int = DATA.fold,
        train_augmentations: Sequence[Any] = DATA.train_augmentations,
        mean: Sequence[float] = DATA.mean,
        std: Sequence[float] = DATA.std,
        interpolation: str = DATA.interpolation,
        min_image_side: int = DATA.min_image_side,
        max_pixels: int = DATA.max_pixels,
        manifest_path: str | os.PathLike | None = None,
        augment_on: str = DATA.augment_on,
        crop: str = DATA.crop,
        intensity: str = DATA.intensity,
        cache: bool = DATA.cache,
        cache_dir: str | os.PathLike | None = DATA.cache_dir,
        cache_max_gb: float = DATA.cache_max_gb,
    ) -> None:
        """The data group's keys (rules, defaults: tumorcls.config.data); manifest_path: where the split goes."""
        super().__init__()
        check_data_settings({key: value for key, value in locals().items() if key in DATA_KEYS})
        augment_on = resolve_augment_on(augment_on, train_augmentations, torch.cuda.is_available())
        self.root = Path(root).expanduser()
        self.protocol = protocol
        self.size = size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = resolve_num_workers(num_workers, augment_on)
        self.pin_memory = pin_memory
        self.split_seed = split_seed
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.near_dup_distance = near_dup_distance
        self.num_folds, self.fold = num_folds, fold
        self.mean, self.std = tuple(mean), tuple(std)
        self.decode_options = DecodeOptions(size, interpolation, min_image_side, max_pixels, crop, intensity)
        self.manifest_path = Path(manifest_path) if manifest_path else None
        self.cache = DecodeCache(cache_dir or default_cache_dir(), int(cache_max_gb * GB)) if cache else None
        self.cache_status: dict[str, Any] = {}  # how setup got its pixels: state (hit|written|off|memory), path
        self.train_transform = build_transforms(size, train_augmentations, self.mean, self.std)
        self.eval_transform = build_transforms(size, (), self.mean, self.std)
        self.augment_on = augment_on
        self.batch_augment = BatchAugment(train_augmentations, self.mean, self.std) if augment_on == "device" else None
        self.class_names = CLASS_NAMES
        self.decoded: DecodedImages | None = None
        self.split: np.ndarray | None = None
        self.groups: np.ndarray | None = None
        self.datasets: dict[str, ArrayDataset] = {}
        self.skipped_files = 0

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        scan = scan_dataset(self.root, SOURCE_SPLITS)
        decoded = self._decode(scan)
        self.skipped_files = len(scan.skipped) + len(decoded.failures)
        groups = duplicate_groups(
            decoded.sha256, decoded.phashes, self.near_dup_distance if self.protocol == "grouped" else None
        )
        split = make_splits(
            self.protocol,
            decoded.labels,
            [r.source for r in decoded.records],
            seed=self.split_seed,
            test_fraction=self.test_fraction,
            val_fraction=self.val_fraction,
            groups=groups,
            num_folds=self.num_folds,
            fold=self.fold,
        )
        for name in SPLITS:
            if not np.any(split == name):
                raise DatasetError(f"the '{self.protocol}' protocol left the {name} split empty ({len(split)} images)")
        self.decoded, self.split, self.groups = decoded, split, groups
        train_transform = Uint8ToTensor() if self.batch_augment is not None else self.train_transform
        for name in SPLITS:
            idx = np.flatnonzero(split == name)
            transform = train_transform if name == "train" else self.eval_transform
            self.datasets[name] = ArrayDataset(decoded.images, decoded.labels, transform, indices=idx)
        counts = {name: np.bincount(self.datasets[name].labels, minlength=len(CLASS_NAMES)).tolist() for name in SPLITS}
        log.info(
            "protocol=%s split sizes %s per class %s", self.protocol, {k: sum(v) for k, v in counts.items()}, counts
        )
        if self.manifest_path is not None:
            self.write_manifest(self.manifest_path)

    def _decode(self, scan: ScanResult) -> DecodedImages:
        """The decoded dataset: mapped from the decode cache (written first when missing), or, with
        ``cache=False`` or a cache that cannot hold it, decoded into memory; one line says which, and where."""
        started = time.perf_counter()
        result = self.cache.load(scan.root, scan.records, self.decode_options) if self.cache is not None else None
        if result is not None:
            decoded, state, where, seconds = result.decoded, result.state, str(result.path), result.seconds
        else:
            decoded, where = decode_records(scan.records, self.decode_options), None
            state, seconds = "off" if self.cache is None else "memory", time.perf_counter() - started
        self.cache_status = {"state": state, "path": where, "decode_seconds": round(seconds, 1)}
        n, gigabytes = len(decoded.records), decoded.images.nbytes / GB
        lines = {
            "hit": f"decode cache hit: {n} images ({gigabytes:.2f} GB) mapped from {where}, nothing decoded",
            "written": f"decode cache written: {n} images decoded in {seconds:.1f} s into {where} ({gigabytes:.2f} GB)",
            "off": f"decode cache off (data.cache=false): {n} images decoded into memory in {seconds:.1f} s",
            "memory": f"decode cache not used (warning above): {n} images decoded into memory in {seconds:.1f} s",
        }
        log.info("%s", lines[state])
        return decoded

    def write_manifest(self, path: str | os.PathLike) -> Path:
        if self.decoded is None or self.split is None:
            raise RuntimeError("call setup() before write_manifest()")
        return write_manifest(
            path,
            [r.relative_to(self.root) for r in self.decoded.records],
            self.decoded.labels,
            self.class_names,
            self.split,
            self.groups,
        )

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        pin = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        if self.num_workers == 0:  # augmentations in this process: seed them from torch's (seeded) RNG
            self.datasets[name].transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        sampler = None
        if name != "train" and torch.distributed.is_available() and torch.distributed.is_initialized():
            # every image once over all ranks: the default DistributedSampler pads with repeats, which would
            # count some images twice in val/test metrics whenever the split size does not divide by the ranks
            sampler = UnrepeatedDistributedSampler(self.datasets[name], shuffle=False)
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size if name == "train" else self.eval_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=pin,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_seed_worker_transform if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``augment_on=device``: augment and normalise the uint8 train batches where they now are."""
        if self.batch_augment is None or not isinstance(batch, list | tuple) or len(batch) != 2:
            return batch
        x, y = batch
        return (self.batch_augment(x), y) if x.dtype == torch.uint8 else batch

    def train_sample(self, i: int) -> torch.Tensor:
        """Train image ``i`` augmented and normalised (float 3xHxW) as training sees it, on either path."""
        x = self.datasets["train"][i][0]
        return self.batch_augment(x[None])[0] if self.batch_augment is not None else x

    def split_sizes(self) -> dict[str, int]:
        return {name: len(ds) for name, ds in self.datasets.items()}
