"""Albumentations pipelines: configurable augmentation for training, resize + normalise for evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import torch
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_augmentation(spec: Any) -> A.BasicTransform:
    """A transform from an instance or a ``{"_target_": "albumentations.X", ...}`` mapping."""
    if isinstance(spec, A.BasicTransform | A.BaseCompose):
        return spec
    if isinstance(spec, Mapping) and "_target_" in spec:
        from hydra.utils import instantiate

        return instantiate(dict(spec), _convert_="all")
    raise TypeError(f"cannot build an albumentations transform from {spec!r}")


def build_transforms(
    size: int,
    augmentations: Sequence[Any] = (),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """uint8 HxWx3 RGB -> normalised float CHW tensor; ``augmentations`` run first (training only)."""
    steps = [build_augmentation(s) for s in augmentations]
    steps += [
        A.Resize(size, size),  # a no-op on the decoded cache; keeps external inputs safe
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        ToTensorV2(),
    ]
    return A.Compose(steps)


def denormalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Normalised (N)CHW tensor back to [0, 1] for display."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * s + m).clamp(0, 1)
