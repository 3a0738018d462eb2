"""The schema of the data group (conf/data/*.yaml), and the choices the data stage offers: split protocols, head
crop, intensity normalisation, resize interpolation, where augmentation runs. tumorcls.data reads its choices and
TumorDataModule its defaults from here, so a value the schema refuses cannot reach a decode thread."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from tumorcls.config.rules import (
    BOOL,
    FRACTION,
    NAME,
    THREE_NUMBERS,
    THREE_POSITIVE,
    TargetList,
    either,
    integer,
    number,
    one_of,
    option,
    optional,
)

PROTOCOLS = ("seed", "official", "grouped")  # tumorcls.data.splits
CROPS = ("none", "head")  # tumorcls.data.preprocess
INTENSITIES = ("none", "stretch", "equalize")
INTERPOLATIONS = ("linear", "area", "cubic", "nearest")  # the cv2 flags of tumorcls.data.decode
AUGMENT_ON = ("auto", "cpu", "device")  # tumorcls.data.batch_augment
MIN_IMAGE_SIZE = 32  # EfficientNet's five stride-2 stages leave 1x1 below this
MAX_IMAGE_SIZE = 2048
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _fractions_leave_training(v: Mapping[str, Any], prefix: str) -> str | None:
    """The test and validation fractions of a pooled split leave images to train on."""
    fractions = (v["test_fraction"], v["val_fraction"])
    if v["protocol"] == "official" or not all(FRACTION.accepts(f) for f in fractions) or sum(fractions) < 1:
        return None
    return f"config: {prefix}test_fraction + {prefix}val_fraction must be < 1, got {sum(fractions):g}"


def _folds_fit(v: Mapping[str, Any], prefix: str) -> str | None:
    """k-fold cross-validation runs on the grouped protocol only, and fold ``i`` is one of its k folds."""
    folds, fold = v["num_folds"], v["fold"]
    if folds is None or not integer(2).accepts(folds):
        return None
    if v["protocol"] != "grouped":
        return (
            f"config: {prefix}num_folds must be null for {prefix}protocol={v['protocol']!r} (k-fold "
            f"cross-validation needs {prefix}protocol=grouped), got {folds!r}"
        )
    if integer(0).accepts(fold) and fold >= folds:
        return f"config: {prefix}fold must be an integer in [0, {folds - 1}] ({prefix}num_folds={folds}), got {fold!r}"
    return None


@dataclass(frozen=True)
class DataConfig:
    """conf/data: where the images are, how they are split, decoded, augmented and batched."""

    RELATIONS: ClassVar = (_fractions_leave_training, _folds_fit)

    _target_: str = option("tumorcls.data.datamodule.TumorDataModule", NAME, "the LightningDataModule")
    root: str = option(
        "data/brain-tumor-classification-mri", NAME, "folder holding Training/ and Testing/ (env TUMORCLS_DATA)"
    )
    download: Any = option("auto", one_of("auto", True, False), "a missing root: auto = only the default root")
    protocol: str = option("official", one_of(*PROTOCOLS), "seed (leaks duplicates) | official | grouped")
    size: int = option(150, integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), "square input side, pixels")
    batch_size: int = option(32, integer(1), "training batch")
    eval_batch_size: int | None = option(64, optional(integer(1)), "validation/test batch; null: batch_size")
    num_workers: Any = option("auto", either(one_of("auto"), integer(0)), "DataLoader processes")
    pin_memory: bool | None = option(None, optional(BOOL), "null: pin when CUDA is available")
    augment_on: str = option("auto", one_of(*AUGMENT_ON), "where train_augmentations run")
    split_seed: int = option(101, integer(0), "seed of the split")
    test_fraction: float = option(0.1, FRACTION, "test share of the pooled protocols")
    val_fraction: float = option(0.1, FRACTION, "validation share of what is left")
    near_dup_distance: int | None = option(4, optional(integer(0, 64)), "grouped: pHash bits of a near duplicate")
    num_folds: int | None = option(None, optional(integer(2)), "k-fold cross-validation (grouped protocol)")
    fold: int = option(0, integer(0), "the test fold, 0..num_folds-1")
    crop: str = option("none", one_of(*CROPS), "head: the square around the head, before the resize")
    intensity: str = option("none", one_of(*INTENSITIES), "head intensity normalisation, after the resize")
    cache: bool = option(True, BOOL, "decode once into the on-disk cache; false: into memory")
    cache_dir: str | None = option(None, optional(NAME), "null: the user's cache folder (env TUMORCLS_CACHE)")
    cache_max_gb: float = option(20.0, number(0.0, lo_open=True), "the cache's size limit, GB")
    interpolation: str = option("linear", one_of(*INTERPOLATIONS), "cv2 resize interpolation")
    min_image_side: int = option(16, integer(1), "smaller files are skipped")
    max_pixels: int = option(64_000_000, integer(1), "larger files are refused unread")
    mean: tuple[float, ...] = option(IMAGENET_MEAN, THREE_NUMBERS, "normalisation mean, RGB")
    std: tuple[float, ...] = option(IMAGENET_STD, THREE_POSITIVE, "normalisation std, RGB")
    # open: the policy is conf/data/*.yaml's; a data module built in Python augments nothing unless given one
    train_augmentations: tuple[Any, ...] = option((), TargetList(), "albumentations _target_ nodes, training only")


DEFAULTS = DataConfig()
