"""The optimiser and learning-rate schedule of the training recipe, built from small typed settings: the
tutorial's Adam + ReduceLROnPlateau on val/acc, with AdamW/SGD and a warm-up cosine schedule as options.

Kept apart from the LightningModule so that the benchmarks build exactly the optimiser training uses."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "cosine", "none")


@dataclass(frozen=True)
class OptimizerSettings:
    """model.optimizer / lr / weight_decay / backbone_lr_mult (the backbone's lr is lr * backbone_lr_mult)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    backbone_lr_mult: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown model.optimizer {self.name!r}; choose adam, adamw or sgd")
        if not 0.0 <= self.backbone_lr_mult <= 1.0:
            raise ValueError(f"model.backbone_lr_mult must be in [0, 1], got {self.backbone_lr_mult}")


@dataclass(frozen=True)
class SchedulerSettings:
    """model.scheduler (plateau | cosine | none) and its knobs; ``min_lr`` is the floor of both schedules."""

    name: str = "plateau"
    plateau_factor: float = 0.3
    plateau_patience: int = 2
    min_lr: float = 1e-6
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            raise ValueError(f"unknown model.scheduler {self.name!r}; choose one of {list(SCHEDULERS)}")


def build_optimizer(net: nn.Module, settings: OptimizerSettings) -> torch.optim.Optimizer:
    """The optimiser over ``net`` (a TumorNet: ``backbone`` + head), with named parameter groups ``backbone``
    and ``head`` for discriminative learning rates: the pretrained backbone moves slower than the new head."""
    lr = settings.lr
    backbone = list(net.backbone.parameters())
    in_backbone = {id(p) for p in backbone}  # by identity: names change when the net is compiled
    params = [
        {"name": "backbone", "params": backbone, "lr": lr * settings.backbone_lr_mult},
        {"name": "head", "params": [p for p in net.parameters() if id(p) not in in_backbone], "lr": lr},
    ]
    if settings.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay)
    cls = torch.optim.Adam if settings.name == "adam" else torch.optim.AdamW
    try:  # one fused kernel per step instead of several per tensor: fewer launches on CUDA
        return cls(params, lr=lr, weight_decay=settings.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # a device or dtype without a fused kernel
        return cls(params, lr=lr, weight_decay=settings.weight_decay)


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float) -> Callable[[int], float]:
    """LambdaLR factor: linear warm-up over ``warmup_steps``, then cosine from 1 down to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    settings: SchedulerSettings,
    lr: float,
    total_steps: int | None = None,
    max_epochs: int | None = None,
) -> dict[str, Any] | None:
    """Lightning's ``lr_scheduler`` entry for ``configure_optimizers`` (None for ``none``).

    plateau: ReduceLROnPlateau on val/acc, stepped per epoch; cosine: per optimiser step over ``total_steps``
    (required) with ``warmup_epochs`` of ``max_epochs`` as linear warm-up, ending at ``min_lr`` (relative to
    the base ``lr``)."""
    if settings.name == "none":
        return None
    if settings.name == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=settings.plateau_factor,
            patience=settings.plateau_patience,
            min_lr=settings.min_lr,
        )
        return {"scheduler": sched, "monitor": "val/acc", "interval": "epoch"}
    if total_steps is None:
        raise ValueError("the cosine schedule needs the number of optimiser steps (total_steps)")
    total = max(1, int(total_steps))
    warmup = min(total - 1, int(settings.warmup_epochs * total / max(1, max_epochs or 1)))
    floor = min(1.0, settings.min_lr / lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, floor))
    return {"scheduler": sched, "interval": "step"}
