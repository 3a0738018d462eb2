"""Training augmentation of whole uint8 batches on the model's device (``data.augment_on=device``).

The CPU path (tumorcls.data.transforms) runs the configured albumentations pipeline image by image in the
DataLoader. With ``augment_on=device`` the train loader serves uint8 ``N x 3 x H x W`` tensors instead, and
:class:`BatchAugment` applies the same policy to each batch after it reached the device (the data module's
``on_after_batch_transfer``): every transform is drawn per image, with its own probability, in the configured order,
then the image is normalised exactly as ``A.Normalize`` does. The parameters are read from the albumentations
transforms themselves (built from the same config entries), so both paths sample the same ranges:

* ``HorizontalFlip(p)``
* ``Affine(scale, translate_percent, rotate, shear, keep_ratio, p)``: albumentations' matrix (scale, rotate, shear,
  translate about the image centre, translation truncated to whole pixels), bilinear, zero border
* ``RandomBrightnessContrast(brightness_limit, contrast_limit, p)``: ``x * alpha + beta * 255``, clipped
* ``RandomGamma(gamma_limit, p)``: ``255 * (x / 255) ** gamma``
* ``GaussNoise(std_range, mean_range, per_channel, p)``: additive Gaussian noise in units of 255, clipped

Differences from the CPU path are numerical only: pixels stay float between transforms (albumentations rounds to
uint8 after each one) and the bilinear sampler is torch's ``grid_sample`` instead of cv2's ``warpAffine``. Any other
transform (or option) is refused in one line by :func:`unsupported_augmentations`, which the config check calls.
Random numbers come from torch's generator of the batch's device (seeded by ``seed``), drawn batch-wise.
torchvision.transforms.v2's random transforms draw one set of parameters per call (the whole batch flips or none),
so the steps here draw a vector of parameters per batch and use v2's functional ops and ``affine_grid``/``grid_sample``;
nothing in them copies to or from the host, so a CUDA step never waits on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from tumorcls.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_augmentation
from tumorcls.errors import TumorclsError

AUGMENT_ON = ("auto", "cpu", "device")
BatchStep = Callable[[torch.Tensor], torch.Tensor]  # float N x 3 x H x W in 0..255 -> the same


class AugmentationError(TumorclsError):
    """A training augmentation that the device path does not implement."""


def _uniform(n: int, bounds: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return torch.rand(n, device=like.device, dtype=torch.float32) * (hi - lo) + lo


def _chosen(n: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """A boolean per image: whether this transform applies to it (probability ``p``)."""
    return torch.rand(n, device=like.device) < p


def _where(mask: torch.Tensor, changed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), changed, x)


def horizontal_flip(t: A.HorizontalFlip) -> BatchStep:
    def step(x: torch.Tensor) -> torch.Tensor:
        return _where(_chosen(len(x), t.p, x), TF.horizontal_flip(x), x)

    return step


def affine_matrices(t: A.Affine, n: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``n`` forward 3x3 pixel-space matrices as albumentations builds them (about the centre, y pointing down)."""
    sx = _uniform(n, t.scale["x"], like)
    sy = sx if t.keep_ratio else _uniform(n, t.scale["y"], like)
    angle = torch.deg2rad(_uniform(n, t.rotate, like))
    shear_x = torch.tan(torch.deg2rad(-_uniform(n, t.shear["x"], like)))
    shear_y = torch.tan(torch.deg2rad(-_uniform(n, t.shear["y"], like)))
    tx = torch.trunc(_uniform(n, t.translate_percent["x"], like) * width)
    ty = torch.trunc(_uniform(n, t.translate_percent["y"], like) * height)
    cos, sin, zero, one = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle), torch.ones_like(angle)
    scale = torch.stack([sx, zero, zero, zero, sy, zero, zero, zero, one], 1).view(n, 3, 3)
    rotate = torch.stack([cos, sin, zero, -sin, cos, zero, zero, zero, one], 1).view(n, 3, 3)
    shear = torch.stack([one, shear_x, zero, shear_y, one, zero, zero, zero, one], 1).view(n, 3, 3)
    translate = torch.stack([one, zero, tx, zero, one, ty, zero, zero, one], 1).view(n, 3, 3)
    return translate @ shear @ rotate @ scale


def affine(t: A.Affine) -> BatchStep:
    def step(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        m = affine_matrices(t, n, h, w, x)
        # pixel offsets from the centre -> grid_sample's normalised coordinates (align_corners=False), D^-1 M D with
        # D = diag(w/2, h/2, 1), in scalar operations: no small host tensors to copy to the device
        m[:, 0, 1] *= h / w
        m[:, 1, 0] *= w / h
        m[:, 0, 2] *= 2.0 / w
        m[:, 1, 2] *= 2.0 / h
        # output -> input sampling positions; inv_ex: no error check, so no host-device sync (never singular here)
        theta = torch.linalg.inv_ex(m).inverse[:, :2]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return _where(_chosen(n, t.p, x), warped, x)

    return step


def brightness_contrast(t: A.RandomBrightnessContrast) -> BatchStep:
    def step(x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        alpha = 1.0 + _uniform(n, t.contrast_limit, x)
        beta = _uniform(n, t.brightness_limit, x) * 255.0
        changed = (x * alpha.view(-1, 1, 1, 1) + beta.view(-1, 1, 1, 1)).clamp_(0.0, 255.0)
        return _where(_chosen(n, t.p, x), changed, x)

    return step


def gamma(t: A.RandomGamma) -> BatchStep:
    def step(x: torch.Tensor) -> torch.Tensor:
        g = _uniform(len(x), t.gamma_limit, x) / 100.0
        changed = torch.pow(x / 255.0, g.view(-1, 1, 1, 1)) * 255.0
        return _where(_chosen(len(x), t.p, x), changed, x)

    return step


def gauss_noise(t: A.GaussNoise) -> BatchStep:
    def step(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        sigma = _uniform(n, t.std_range, x).view(-1, 1, 1, 1) * 255.0
        mean = _uniform(n, t.mean_range, x).view(-1, 1, 1, 1) * 255.0
        noise = torch.randn(n, c if t.per_channel else 1, h, w, device=x.device)
        changed = (x + mean + sigma * noise).clamp_(0.0, 255.0)
        return _where(_chosen(n, t.p, x), changed, x)

    return step


def _affine_unsupported(t: A.Affine) -> str | None:
    if t.fit_output or t.balanced_scale or getattr(t, "translate_px", None) is not None:
        return "fit_output, balanced_scale and translate_px"
    if t.interpolation != 1 or t.border_mode != 0 or t.fill not in (0, 0.0):
        return "interpolation other than linear, border_mode other than constant, fill other than 0"
    return None


# albumentations class -> (batch step factory, the options it cannot reproduce, or None when it can)
SUPPORTED: dict[type, tuple[Callable[[Any], BatchStep], Callable[[Any], str | None]]] = {
    A.HorizontalFlip: (horizontal_flip, lambda t: None),
    A.Affine: (affine, _affine_unsupported),
    A.RandomBrightnessContrast: (
        brightness_contrast,
        lambda t: None if t.brightness_by_max and not t.ensure_safe_range else "brightness_by_max=false",
    ),
    A.RandomGamma: (gamma, lambda t: None),
    A.GaussNoise: (gauss_noise, lambda t: None if t.noise_scale_factor == 1 else "noise_scale_factor"),
}


def _unsupported(t: Any) -> str | None:
    """Why the device path cannot run this built transform (one line), or None when it can."""
    entry = SUPPORTED.get(type(t))
    if entry is None:
        names = ", ".join(cls.__name__ for cls in SUPPORTED)
        return f"{type(t).__name__} runs on the CPU only (data.augment_on=device supports {names})"
    reason = entry[1](t)
    if reason:
        return f"{type(t).__name__}: {reason} run on the CPU only (data.augment_on=cpu)"
    return None


def unsupported_augmentations(augmentations: Sequence[Any]) -> str | None:
    """Why the device path cannot run this policy (one line), or None when it can."""
    for spec in augmentations:
        reason = _unsupported(build_augmentation(spec))
        if reason:
            return reason
    return None


def resolve_augment_on(augment_on: str, augmentations: Sequence[Any], on_cuda: bool) -> str:
    """``auto``: ``device`` when training runs on CUDA and the policy has a device implementation (the CPU
    workers then leave the loop), else ``cpu``; ``cpu`` and ``device`` stay as they are."""
    if augment_on != "auto":
        return augment_on
    return "device" if on_cuda and unsupported_augmentations(augmentations) is None else "cpu"


def _channel_tensor(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).to(device)


class BatchAugment(torch.nn.Module):
    """uint8 ``N x 3 x H x W`` batch -> augmented (when ``train``) and normalised float32 batch, on its device."""

    def __init__(
        self,
        augmentations: Sequence[Any] = (),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.steps: list[BatchStep] = []
        for spec in augmentations:  # each built once: checked, then turned into its batch step
            t = build_augmentation(spec)
            reason = _unsupported(t)
            if reason:
                raise AugmentationError(reason)
            self.steps.append(SUPPORTED[type(t)][0](t))
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # copied to each device once

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float pixels in 0..255 -> ``(x / 255 - mean) / std``, as ``A.Normalize(max_pixel_value=255)``."""
        if x.device not in self._stats:
            self._stats[x.device] = (_channel_tensor(self.mean, x.device), _channel_tensor(self.std, x.device))
        mean, std = self._stats[x.device]
        return (x / 255.0 - mean) / std

    def forward(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape)
            raise ValueError(f"BatchAugment takes uint8 N x 3 x H x W batches, got {images.dtype} {shape}")
        x = images.float()
        if train:
            for step in self.steps:
                x = step(x)
        return self.normalize(x)
