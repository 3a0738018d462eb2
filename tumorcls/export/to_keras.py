"""Keras .h5 export: rebuild a timm EfficientNet from standard Keras layers, copy the trained weights
and save an .h5 that ``tf.keras.models.load_model`` (Keras 3) and ``tf_keras`` (Keras 2) both load.

The model is a drop-in for the tutorial's ``modelv1.h5``: input N x H x W x 3 float, BGR (as cv2 reads
it), values 0..255; output softmax probabilities in the tutorial's label order. That holds for a model trained
without preprocessing (``crop=none``, ``intensity=none``); one trained with a head crop or an intensity
normalisation is still exported, with the preprocessing in its attributes (``tumorcls_preprocess``) and a
warning: it expects images prepared that way, which the tutorial's app does not do, while `tumorcls predict`,
`evaluate` and `serve` do. Only this module imports TensorFlow (``pip install -e ".[keras]"``); training code
never imports it.

The model is built with tf_keras (its legacy HDF5 writer gives configs both Keras versions read) and
one Keras-2-only key is then dropped: ``groups`` of DepthwiseConv2D, which Keras 3 refuses.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tumorcls.atomic_io import atomic_write
from tumorcls.errors import ExportError
from tumorcls.export.static_graph import same_padding
from tumorcls.export.targets import ensure_writable
from tumorcls.inference.backends.keras_h5 import keras_module
from tumorcls.inference.backends.keras_h5 import load_keras_model as load_keras_model  # noqa: F401 - bench loads here
from tumorcls.model_file import H5_ATTR_PREFIX, ExportSpec, h5_attributes
from tumorcls.models.lit_module import TumorClassifier

log = logging.getLogger(__name__)

INPUT_NAME = "image_bgr"
_BLOCKS = ("DepthwiseSeparableConv", "InvertedResidual", "EdgeResidual", "ConvBnAct")
_ACTIVATIONS = {"SiLU": "swish", "Swish": "swish", "ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}


def import_keras(api: str = "tf_keras") -> Any:
    """tf_keras (Keras 2 API) or ``tf.keras`` (Keras 3), or one clear error naming the extra to install."""
    try:
        return keras_module(api)
    except ImportError as exc:
        raise ExportError(
            f"the Keras export needs TensorFlow and tf_keras ({exc.name} is missing): pip install -e '.[keras]'"
        ) from None


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _torch_pads(conv: nn.Conv2d, hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (top, bottom), (left, right) zero padding the PyTorch conv applies to an input of size ``hw``."""
    if conv.padding_mode != "zeros":
        raise ExportError(f"padding_mode {conv.padding_mode!r} has no Keras equivalent")
    k, s, d = conv.kernel_size, conv.stride, conv.dilation
    if type(conv).__name__.startswith("Conv2dSame") or conv.padding == "same":
        return same_padding(hw[0], k[0], s[0], d[0]), same_padding(hw[1], k[1], s[1], d[1])
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    ph, pw = conv.padding
    return (ph, ph), (pw, pw)


def _activation_name(act: nn.Module) -> str | None:
    name = type(act).__name__
    if name == "Identity":
        return None
    if name not in _ACTIVATIONS:
        raise ExportError(f"activation {name} has no Keras equivalent in this converter")
    return _ACTIVATIONS[name]


def _require_identity(module: nn.Module | None, what: str) -> None:
    if module is not None and type(module).__name__ != "Identity":
        raise ExportError(f"{what} is {type(module).__name__}; the Keras converter supports only Identity there")


class _Converter:
    """Mirrors the timm module tree with Keras layers, copying weights as each layer is built."""

    def __init__(self, keras: Any) -> None:
        self.keras = keras
        self.layers = keras.layers

    def _place(self, layer: Any, x: Any, weights: list[np.ndarray] | None = None) -> Any:
        y = layer(x)
        if weights is not None:
            layer.set_weights(weights)
        return y

    def conv(self, x: Any, conv: nn.Conv2d, name: str) -> Any:
        hw = (int(x.shape[1]), int(x.shape[2]))
        pads = _torch_pads(conv, hw)
        k, s, d = conv.kernel_size, conv.stride, conv.dilation
        tf_same = (same_padding(hw[0], k[0], s[0], d[0]), same_padding(hw[1], k[1], s[1], d[1]))
        if pads == ((0, 0), (0, 0)):
            padding = "valid"
        elif pads == tf_same:
            padding = "same"
        else:
            x = self.layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
            padding = "valid"
        weight = _np(conv.weight)
        weights = [weight]
        common = {"strides": s, "dilation_rate": d, "padding": padding, "use_bias": conv.bias is not None, "name": name}
        if conv.groups == 1:
            weights[0] = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
            layer = self.layers.Conv2D(conv.out_channels, k, **common)
        elif conv.groups == conv.in_channels == conv.out_channels:
            weights[0] = weight.transpose(2, 3, 0, 1)  # C1HW -> HWC1
            layer = self.layers.DepthwiseConv2D(k, depth_multiplier=1, **common)
        else:
            raise ExportError(f"{name}: grouped convolution (groups={conv.groups}) is not supported")
        if conv.bias is not None:
            weights.append(_np(conv.bias))
        return self._place(layer, x, weights)

    def bn_act(self, x: Any, bn: nn.Module, name: str) -> Any:
        """timm BatchNormAct2d (or a plain BatchNorm2d): BN with the same epsilon, then its activation."""
        if not isinstance(bn, nn.BatchNorm2d) or not bn.affine or bn.running_mean is None:
            kind = type(bn).__name__
            raise ExportError(f"{name}: expected an affine BatchNorm2d with running statistics, got {kind}")
        layer = self.layers.BatchNormalization(epsilon=float(bn.eps), momentum=0.99, name=name)
        weights = [_np(bn.weight), _np(bn.bias), _np(bn.running_mean), _np(bn.running_var)]
        x = self._place(layer, x, weights)
        _require_identity(getattr(bn, "drop", None), f"{name}.drop")
        act = _activation_name(getattr(bn, "act", nn.Identity()))
        return self.layers.Activation(act, name=f"{name}_act")(x) if act else x

    def squeeze_excite(self, x: Any, se: nn.Module, name: str) -> Any:
        if type(se).__name__ == "Identity":
            return x
        if type(se).__name__ != "SqueezeExcite":
            raise ExportError(f"{name}: {type(se).__name__} is not supported")
        s = self.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
        s = self.conv(s, se.conv_reduce, f"{name}_conv_reduce")
        act = _activation_name(se.act1)
        if act:
            s = self.layers.Activation(act, name=f"{name}_act1")(s)
        s = self.conv(s, se.conv_expand, f"{name}_conv_expand")
        gate = _activation_name(se.gate)
        if gate:
            s = self.layers.Activation(gate, name=f"{name}_gate")(s)
        return self.layers.Multiply(name=f"{name}_scale")([x, s])

    def block(self, x: Any, block: nn.Module, name: str) -> Any:
        kind = type(block).__name__
        if kind not in _BLOCKS:
            raise ExportError(f"{name}: block type {kind} is not supported by the Keras converter")
        if getattr(block, "conv_s2d", None) is not None:
            raise ExportError(f"{name}: space-to-depth stems are not supported")
        _require_identity(getattr(block, "aa", None), f"{name}.aa")
        shortcut = x
        if kind == "DepthwiseSeparableConv":
            x = self.bn_act(self.conv(x, block.conv_dw, f"{name}_conv_dw"), block.bn1, f"{name}_bn1")
            x = self.squeeze_excite(x, block.se, f"{name}_se")
            x = self.bn_act(self.conv(x, block.conv_pw, f"{name}_conv_pw"), block.bn2, f"{name}_bn2")
        elif kind == "InvertedResidual":
            x = self.bn_act(self.conv(x, block.conv_pw, f"{name}_conv_pw"), block.bn1, f"{name}_bn1")
            x = self.bn_act(self.conv(x, block.conv_dw, f"{name}_conv_dw"), block.bn2, f"{name}_bn2")
            x = self.squeeze_excite(x, block.se, f"{name}_se")
            x = self.bn_act(self.conv(x, block.conv_pwl, f"{name}_conv_pwl"), block.bn3, f"{name}_bn3")
        elif kind == "EdgeResidual":
            x = self.bn_act(self.conv(x, block.conv_exp, f"{name}_conv_exp"), block.bn1, f"{name}_bn1")
            x = self.squeeze_excite(x, block.se, f"{name}_se")
            x = self.bn_act(self.conv(x, block.conv_pwl, f"{name}_conv_pwl"), block.bn2, f"{name}_bn2")
        else:  # ConvBnAct
            x = self.bn_act(self.conv(x, block.conv, f"{name}_conv"), block.bn1, f"{name}_bn1")
        if block.has_skip:  # drop_path is the identity at inference
            x = self.layers.Add(name=f"{name}_add")([x, shortcut])
        return x

    def preprocess(self, x: Any, spec: ExportSpec) -> Any:
        """BGR 0..255 -> normalised RGB, as one fixed 1x1 convolution (no custom layer needed to load it)."""
        mean, std = np.asarray(spec.mean, np.float64), np.asarray(spec.std, np.float64)
        kernel = np.zeros((1, 1, 3, 3), np.float64)
        for rgb in range(3):
            kernel[0, 0, 2 - rgb, rgb] = 1.0 / (255.0 * std[rgb])  # input channel 2 - c is RGB channel c
        weights = [kernel.astype(np.float32), (-mean / std).astype(np.float32)]
        layer = self.layers.Conv2D(3, 1, use_bias=True, trainable=False, name="bgr_to_normalized_rgb")
        return self._place(layer, x, weights)

    def backbone(self, x: Any, net: nn.Module) -> Any:
        if type(net).__name__ != "EfficientNet":
            raise ExportError(f"the Keras converter supports timm EfficientNet backbones, not {type(net).__name__}")
        x = self.bn_act(self.conv(x, net.conv_stem, "conv_stem"), net.bn1, "bn1")
        for i, stage in enumerate(net.blocks):
            for j, block in enumerate(stage):
                x = self.block(x, block, f"blocks_{i}_{j}")
        if isinstance(net.conv_head, nn.Conv2d):
            x = self.bn_act(self.conv(x, net.conv_head, "conv_head"), net.bn2, "bn2")
        if getattr(net.global_pool, "pool_type", "avg") != "avg" or not isinstance(net.classifier, nn.Identity):
            raise ExportError("the backbone must end in global average pooling without its own classifier")
        return self.layers.GlobalAveragePooling2D(name="avg_pool")(x)


def build_keras_model(model: TumorClassifier, spec: ExportSpec) -> Any:
    """A tf_keras functional model computing the classifier's probabilities from BGR 0..255 pixels."""
    keras = import_keras()
    net = model.net.eval()
    conv = _Converter(keras)
    inputs = keras.Input((spec.input_size, spec.input_size, 3), name=INPUT_NAME, dtype="float32")
    x = conv.preprocess(inputs, spec)
    x = conv.backbone(x, net.backbone)
    x = keras.layers.Dropout(float(net.dropout.p), name="dropout")(x)  # identity at inference
    head = keras.layers.Dense(net.head.out_features, activation="softmax", name="predictions")
    weights = [_np(net.head.weight).T / spec.temperature, _np(net.head.bias) / spec.temperature]
    outputs = conv._place(head, x, [w.astype(np.float32) for w in weights])
    return keras.Model(inputs, outputs, name=f"tumorcls_{spec.backbone.split('.')[0]}")


def io_specs(spec: ExportSpec) -> tuple[dict, dict]:
    size = spec.input_size
    inp = {
        "name": INPUT_NAME,
        "shape": ["batch", size, size, 3],
        "layout": "NHWC",
        "dtype": "float32",
        "channel_order": "BGR",
        "value_range": [0, 255],
        "preprocessing": "in model: BGR->RGB, x/255, (x-mean)/std",
        "pixels": spec.input_pixels(),  # before the model: the crop and intensity of attribute 'preprocess'
    }
    out = {"name": "predictions", "shape": ["batch", len(spec.class_names)], "meaning": "softmax probabilities"}
    return inp, out


def make_portable(path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Make a tf_keras .h5 loadable by Keras 3 too (drop DepthwiseConv2D's ``groups``); add metadata attrs."""
    import h5py

    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "DepthwiseConv2D":
                layer["config"].pop("groups", None)
        f.attrs["model_config"] = json.dumps(config)
        for key, value in h5_attributes(metadata or {}).items():
            f.attrs[key] = value


def export_keras(
    model: TumorClassifier,
    path: str | Path,
    spec: ExportSpec,
    overwrite: bool = False,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write the .h5 atomically; ``check(tmp_path)`` runs before the rename and may refuse it."""
    path = ensure_writable(path, overwrite)
    if spec.has_preprocessing:
        log.warning(
            "%s expects images already prepared as its %spreprocess attribute says (crop=%s, intensity=%s), not "
            "the raw image the tutorial's app feeds it; tumorcls predict, evaluate and serve prepare them",
            path.name,
            H5_ATTR_PREFIX,
            spec.crop,
            spec.intensity,
        )
    keras_model = build_keras_model(model, spec)
    metadata = spec.metadata(*io_specs(spec))

    def write(tmp: Path) -> None:
        # Keras 3 loads legacy HDF5 only from a name ending in .h5: stage (and check) the file under one
        staged = tmp.with_name(tmp.name + ".h5")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "HDF5 is a legacy format": it is the point here
                keras_model.save(str(staged), save_format="h5", include_optimizer=False)
            make_portable(staged, metadata)
            if check is not None:
                check(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)

    return atomic_write(path, write)
