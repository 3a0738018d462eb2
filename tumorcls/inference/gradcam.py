"""Grad-CAM heatmaps for checkpoint models, computed with the ``grad-cam`` package (pytorch_grad_cam),
and their overlays on the input image as PNG files. It knows a network and its preprocessing, not the predictor
that holds them (the checkpoint backend builds an explainer from its own parts)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from tumorcls.atomic_io import atomic_write_bytes


def target_layer(net: nn.Module, name: str | None = None) -> nn.Module:
    """The layer whose activations Grad-CAM weighs: ``name`` (dotted, inside ``net``) or else the
    outermost module that produces the backbone's final feature map (``bn2`` for timm EfficientNets)."""
    if name:
        try:
            return net.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the network has no layer named {name!r}") from None
    backbone = net.backbone if hasattr(net, "backbone") else net
    if not hasattr(backbone, "forward_features"):
        raise ValueError("cannot find the final feature map: the backbone has no forward_features(); name a layer")
    produced: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, _inp, out: produced.append((mod, out)))
        for m in backbone.modules()
        if m is not backbone
    ]
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            size = int(getattr(backbone, "pretrained_cfg", {}).get("input_size", (3, 64, 64))[-1])
            device = next(backbone.parameters()).device
            features = backbone.forward_features(torch.zeros(1, 3, max(size, 32), max(size, 32), device=device))
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    # modules finish in post-order, so the last one whose output is the feature map is the outermost
    for module, out in reversed(produced):
        if isinstance(out, torch.Tensor) and out is features:
            return module
    raise ValueError("no single layer produces the backbone's feature map; name a layer")


class GradCamExplainer:
    """Grad-CAM maps of ``net`` for uint8 images that ``preprocess`` turns into its input tensor; the target layer
    is found once."""

    def __init__(
        self, net: nn.Module, preprocess: Callable[[np.ndarray], torch.Tensor], layer: str | None = None
    ) -> None:
        self.net = net
        self.preprocess = preprocess
        self.layer = target_layer(self.net, layer)

    def __call__(self, images: np.ndarray, class_indices: Sequence[int]) -> np.ndarray:
        """(N, H, W) maps in [0, 1] at the input size, each for its image's ``class_indices`` entry."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        x = self.preprocess(images)
        targets = [ClassifierOutputTarget(int(c)) for c in class_indices]
        with torch.enable_grad(), GradCAM(model=self.net, target_layers=[self.layer]) as cam:
            maps = cam(input_tensor=x, targets=targets)
        for p in self.net.parameters():  # the backward pass left gradients on the weights; drop them
            p.grad = None
        return np.asarray(maps, dtype=np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.55) -> np.ndarray:
    """RGB uint8 image with the heatmap (jet colour map) blended over it."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=image_weight)


def save_overlay(path: str | Path, image: np.ndarray, cam: np.ndarray) -> Path:
    """Write the overlay as a PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(overlay(image, cam)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def cam_peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, col) of a heatmap's maximum."""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(row), int(col)
