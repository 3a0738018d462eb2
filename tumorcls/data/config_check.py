"""The data group's one validation entry point, used by TumorDataModule (built by train.py or in Python) and by
train.py's config check: the schema's rules (tumorcls.config.data), plus what only the data stage can judge,
whether each training augmentation has a device version when ``augment_on=device``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tumorcls.config.check import check_section, fields_of
from tumorcls.config.data import DataConfig
from tumorcls.config.rules import ConfigError, TargetList
from tumorcls.errors import first_line

# keys holding _target_ nodes (albumentations transforms): checking them imports their classes
TARGET_KEYS = tuple(name for name, f in fields_of(DataConfig).items() if isinstance(f.metadata["rule"], TargetList))


def _check_device_policy(values: Mapping[str, Any]) -> None:
    """``augment_on=device`` runs only the transforms that tumorcls.data.batch_augment implements."""
    if values.get("augment_on") != "device":
        return
    from tumorcls.data.batch_augment import unsupported_augmentations  # torchvision, albumentations: only here

    try:
        reason = unsupported_augmentations(values.get("train_augmentations") or ())
    except Exception as exc:  # a node that does not build: the data module would fail on it too
        raise ConfigError(f"config: data.train_augmentations cannot be built: {first_line(exc)}") from None
    if reason:
        raise ConfigError(f"config: data.augment_on=device: {reason}")


def check_data_settings(
    values: Mapping[str, Any], everywhere: tuple[str, ...] | None = None, targets: bool = True
) -> None:
    """Raise ConfigError (one line naming the ``data.`` key) for the first unknown key or bad value; an unknown
    key may be suggested from ``everywhere`` (the keys of the other groups) when no data key is near it. With
    ``targets=False`` the keys that hold ``_target_`` nodes are left for later (their check imports them)."""
    check_section(DataConfig, values, "data", skip=() if targets else TARGET_KEYS, everywhere=everywhere)
    if targets:
        _check_device_policy(values)
