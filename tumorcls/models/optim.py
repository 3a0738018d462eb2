"""The optimiser and learning-rate schedule of the training recipe, built from small typed settings: the
tutorial's Adam + ReduceLROnPlateau on val/acc, with AdamW/SGD and a warm-up cosine schedule as options.

Kept apart from the LightningModule so that the benchmarks build exactly the optimiser training uses."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tumorcls.config.check import check_settings
from tumorcls.config.model import DEFAULTS as MODEL
from tumorcls.config.model import OPTIMIZERS, SCHEDULERS, ModelConfig

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "OptimizerSettings",
    "SchedulerSettings",
    "build_optimizer",
    "build_scheduler",
    "warmup_cosine",
]


@dataclass(frozen=True)
class OptimizerSettings:
    """model.optimizer / lr / weight_decay / backbone_lr_mult (the backbone's lr is lr * backbone_lr_mult); the
    defaults and rules are the model group's (tumorcls.config.model), checked in one line when built."""

    name: str = field(default=MODEL.optimizer, metadata={"key": "optimizer"})
    lr: float = MODEL.lr
    weight_decay: float = MODEL.weight_decay
    backbone_lr_mult: float = MODEL.backbone_lr_mult

    def __post_init__(self) -> None:
        check_settings(self, ModelConfig, "model")


@dataclass(frozen=True)
class SchedulerSettings:
    """model.scheduler (plateau | cosine | none) and its knobs; ``min_lr`` is the floor of both schedules."""

    name: str = field(default=MODEL.scheduler, metadata={"key": "scheduler"})
    plateau_factor: float = MODEL.plateau_factor
    plateau_patience: int = MODEL.plateau_patience
    min_lr: float = MODEL.min_lr
    warmup_epochs: int = MODEL.warmup_epochs

    def __post_init__(self) -> None:
        check_settings(self, ModelConfig, "model")


def build_optimizer(
    net: nn.Module, settings: OptimizerSettings, graph_device: torch.device | None = None
) -> torch.optim.Optimizer:
    """The optimiser over ``net`` (a TumorNet: ``backbone`` + head), with named parameter groups ``backbone``
    and ``head`` for discriminative learning rates: the pretrained backbone moves slower than the new head.

    ``graph_device`` (``model.cuda_graphs=step``): each group's learning rate is a 0-dim tensor of its own on that
    device, and on CUDA Adam/AdamW is capturable, so that a step recorded in a CUDA graph reads the rate from the
    tensor at every replay; torch's schedulers fill such a tensor in place, so ReduceLROnPlateau and the cosine
    schedule still steer the recorded step. A float rate would be baked into the graph when it is recorded."""
    lr = settings.lr
    backbone = list(net.backbone.parameters())
    in_backbone = {id(p) for p in backbone}  # by identity: names change when the net is compiled
    rates = [lr * settings.backbone_lr_mult, lr]
    if graph_device is not None:  # one tensor per group: a scheduler fills each group's own
        # float32 where a CUDA kernel reads it; float64 elsewhere, where the optimizer reads it as the exact float
        dtype = torch.float32 if graph_device.type == "cuda" else torch.float64
        rates = [torch.tensor(rate, dtype=dtype, device=graph_device) for rate in rates]  # rates_as_tensors agrees
    params = [
        {"name": "backbone", "params": backbone, "lr": rates[0]},
        {"name": "head", "params": [p for p in net.parameters() if id(p) not in in_backbone], "lr": rates[1]},
    ]
    if settings.name == "sgd":
        if graph_device is not None:
            raise ValueError("model.cuda_graphs=step needs model.optimizer adam or adamw (SGD is not capturable)")
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay)
    cls = torch.optim.Adam if settings.name == "adam" else torch.optim.AdamW
    capturable = graph_device is not None and graph_device.type == "cuda"
    try:  # one fused kernel per step instead of several per tensor: fewer launches on CUDA
        return cls(params, lr=rates[1], weight_decay=settings.weight_decay, fused=True, capturable=capturable)
    except (RuntimeError, TypeError):  # a device or dtype without a fused kernel
        return cls(params, lr=rates[1], weight_decay=settings.weight_decay, capturable=capturable)


def rates_as_tensors(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make every group's learning rate a tensor of its own on ``device`` again (capturable there on CUDA), as
    build_optimizer's ``graph_device`` made it: a checkpoint written from a host copy, or one of automatic
    optimisation (float rates), restores rates a recorded step would not read. Values are kept."""
    dtype = torch.float32 if device.type == "cuda" else torch.float64
    for group in optimizer.param_groups:
        lr = group["lr"]
        if not (isinstance(lr, torch.Tensor) and lr.device == device and lr.dtype == dtype):
            group["lr"] = torch.tensor(float(lr), dtype=dtype, device=device)
        if "capturable" in group:
            group["capturable"] = device.type == "cuda"


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
