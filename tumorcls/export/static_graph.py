"""A copy of the network rewritten for a fixed input size, so that the traced ONNX graph is static.

timm's ``tf_*`` models pad "same" at run time (``Conv2dSame``): traced, each of those convolutions becomes
Shape/Gather/Ceil/Cast/Pad arithmetic, and ONNX Runtime cannot fold the pad into the convolution. Squeeze-excite
blocks average with ``mean((2, 3))``, traced as ReduceMean, which ONNX Runtime's blocked (NCHWc) CPU layout does
not run, so it converts the tensor out of and back into that layout 16 times. At a known input size both have
exact equivalents (a constant pad; GlobalAveragePool) that give the same numbers with a simpler graph.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from timm.layers.padding import get_same_padding
from torch import nn

try:  # timm's own classes; a timm that moves them only costs the rewrite, never correctness
    from timm.layers.conv2d_same import Conv2dSame
    from timm.models._efficientnet_blocks import SqueezeExcite
except ImportError:  # pragma: no cover - depends on the installed timm

    class Conv2dSame(nn.Conv2d):  # type: ignore[no-redef]
        pass

    class SqueezeExcite(nn.Module):  # type: ignore[no-redef]
        pass


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) of one spatial axis, as timm's Conv2dSame computes it (the
    total from timm itself); the extra pixel goes after. The one "same" rule of the exporters (ONNX and Keras)."""
    total = int(get_same_padding(size, kernel, stride, dilation))
    return total // 2, total - total // 2


class StaticSameConv2d(nn.Module):
    """``Conv2dSame`` for one input size: a constant zero pad, then an unpadded convolution."""

    def __init__(self, conv: nn.Conv2d, height: int, width: int) -> None:
        super().__init__()
        top, bottom = same_padding(height, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        left, right = same_padding(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        self.pad = (left, right, top, bottom)
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        self.conv.load_state_dict(conv.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad) if any(self.pad) else x)


class PooledSqueezeExcite(nn.Module):
    """timm's ``SqueezeExcite`` with the mean taken by adaptive average pooling (GlobalAveragePool in ONNX)."""

    def __init__(self, se: SqueezeExcite) -> None:
        super().__init__()
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        se = self.se
        gate = se.conv_expand(se.act1(se.conv_reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * se.gate(gate)


def _input_sizes(net: nn.Module, size: int) -> dict[str, tuple[int, int]]:
    """The (H, W) each ``Conv2dSame`` sees for a ``size`` x ``size`` image."""
    seen: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, module in net.named_modules()
        if isinstance(module, Conv2dSame)
    ]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def static_network(net: nn.Module, size: int) -> nn.Module:
    """An eval-mode copy of ``net`` with every ``Conv2dSame`` and ``SqueezeExcite`` replaced as above."""
    net = copy.deepcopy(net).cpu().eval()
    sizes = _input_sizes(net, size)
    for name, module in list(net.named_modules()):
        if isinstance(module, Conv2dSame) and name in sizes:
            replacement: nn.Module = StaticSameConv2d(module, *sizes[name])
        elif isinstance(module, SqueezeExcite):
            replacement = PooledSqueezeExcite(module)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, replacement)
    return net
