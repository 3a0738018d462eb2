"""ONNX export: one graph from RGB pixels (0..255, N x 3 x H x W float32) to softmax probabilities,
scaling and normalisation included, with a dynamic batch axis and the model's description in metadata_props
(among it ``preprocess``: the crop and intensity normalisation the pixels need before the graph, which
`tumorcls predict`, `evaluate` and `serve` apply). An ensemble of checkpoints (an :class:`EnsembleSpec`) is one
graph too: each member's probability model (its own normalisation and temperature), then their mean."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from tumorcls.atomic_io import atomic_write
from tumorcls.errors import ExportError
from tumorcls.export.static_graph import static_network
from tumorcls.export.targets import ensure_writable
from tumorcls.model_file import EnsembleSpec, ExportSpec
from tumorcls.models.lit_module import TumorClassifier

MIN_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class ProbabilityModel(nn.Module):
    """x / 255 -> (x - mean) / std -> network -> logits / temperature -> softmax."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.temperature = float(temperature)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels / 255.0 - self.mean) / self.std
        logits = self.net(x)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return torch.softmax(logits, dim=1)


class MeanProbabilityModel(nn.Module):
    """An ensemble's graph: the arithmetic mean of its members' probabilities."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(pixels) for member in self.members]).mean(dim=0)


ExportModel = TumorClassifier | Sequence[TumorClassifier]  # one checkpoint's model, or an ensemble's members


def probability_model(model: TumorClassifier, temperature: float = 1.0) -> ProbabilityModel:
    """The exported computation, as an eval-mode PyTorch module (also the benchmark's eager baseline);
    ``temperature`` is the checkpoint's calibration (``CheckpointInfo.temperature``, ``ExportSpec.temperature``)."""
    hp = model.hparams
    return ProbabilityModel(model.net, hp.mean, hp.std, float(temperature)).eval()


def _static_probability_model(model: TumorClassifier, spec: ExportSpec) -> ProbabilityModel:
    wrapper = probability_model(model, spec.temperature).cpu()
    wrapper.net = static_network(wrapper.net, spec.input_size)  # same numbers, a static graph
    return wrapper


def exported_module(model: ExportModel, spec: ExportSpec | EnsembleSpec) -> nn.Module:
    """What is traced: the model's probability model, or for an ensemble the mean of its members' (each with
    its own normalisation and temperature)."""
    if isinstance(spec, EnsembleSpec):
        return MeanProbabilityModel([_static_probability_model(m, s) for m, s in zip(model, spec.members)]).eval()
    return _static_probability_model(model, spec)


def io_specs(spec: ExportSpec | EnsembleSpec) -> tuple[dict, dict]:
    """The input and output contract written into the file."""
    size = spec.input_size
    inp = {
        "name": INPUT_NAME,
        "shape": ["batch", 3, size, size],
        "layout": "NCHW",
        "dtype": "float32",
        "channel_order": "RGB",
        "value_range": [0, 255],
        "preprocessing": "in graph: x/255, (x-mean)/std",
        "pixels": spec.input_pixels(),  # before the graph: the crop and intensity of metadata 'preprocess'
    }
    out = {"name": OUTPUT_NAME, "shape": ["batch", len(spec.class_names)], "meaning": "softmax probabilities"}
    return inp, out


def onnx_bytes(model: ExportModel, spec: ExportSpec | EnsembleSpec, opset: int = MIN_OPSET) -> bytes:
    """Trace the probability model (of one checkpoint, or an ensemble's mean) and return the serialized, checked
    ONNX model with metadata."""
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use opset >= {MIN_OPSET}")
    wrapper = exported_module(model, spec)
    dummy = torch.zeros(2, 3, spec.input_size, spec.input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        # the TorchScript exporter needs no extra package (the dynamo one needs onnxscript)
        warnings.simplefilter("ignore", DeprecationWarning)
        # the static pads' Slice(step=-1) is folded by ONNX Runtime instead; the tracer says so at length
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            wrapper,
            (dummy,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    inp, out = io_specs(spec)
    onnx.helper.set_model_props(proto, spec.metadata(inp, out))
    proto.producer_name = "tumorcls"
    what = f"ensemble of {len(spec.members)} ({spec.backbone})" if isinstance(spec, EnsembleSpec) else spec.backbone
    proto.doc_string = f"{what} brain-MRI tumour classifier; outputs {list(spec.class_names)}"
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def export_onnx(
    model: ExportModel,
    path: str | Path,
    spec: ExportSpec | EnsembleSpec,
    opset: int = MIN_OPSET,
    overwrite: bool = False,
    check: Callable[[Path], None] | None = None,
    calibration: np.ndarray | None = None,
) -> Path:
    """Write the ONNX file atomically; ``check(tmp_path)`` runs before the rename and may refuse it.
    With ``calibration`` (uint8 RGB NHWC training images) the file is the int8 quantized graph."""
    path = ensure_writable(path, overwrite)
    data = onnx_bytes(model, spec, opset)
    if calibration is not None:
        from tumorcls.export.int8 import quantize_onnx_bytes

        data = quantize_onnx_bytes(data, calibration)

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)
        if check is not None:
            check(tmp)

    return atomic_write(path, write)
