"""The one place that turns a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``) into a torch device.

Training, inference, serving and the benchmarks all ask here, so ``auto`` means the same everywhere and a
request for a GPU that is not there fails with the same one line.
"""

from __future__ import annotations

import re

from tumorcls.errors import TumorclsError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(TumorclsError):
    """A device name that is unknown, or a GPU that torch cannot see."""


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``/``cuda``/``cuda:N`` are checked."""
    name = str(name).strip().lower()
    if not _DEVICE.match(name):
        raise DeviceError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name.startswith("cuda") and not cuda_available():
        raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA device")
    return name


def accelerator_uses_cuda(accelerator: str) -> bool:
    """Whether a Lightning ``accelerator`` setting (``auto``, ``gpu``, ``cuda``, ``cpu``...) will run on CUDA."""
    accelerator = str(accelerator).lower()
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available())
