"""Tiny ONNX graphs (built with onnx.helper, no training) and images for the inference tests: a well-formed
4-class model, and models that break the input/output contract in one way each."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image


def onnx_classifier(
    path: Path,
    n_classes: int = 4,
    input_shape: Sequence[int | str] = ("batch", 3, 32, 32),
    output_shape: Sequence[int | str] | None = None,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Softmax(Gemm(features)): features = the per-channel mean for a 4-D NCHW input, the input itself for 2-D."""
    rng = np.random.default_rng(seed)
    features, nodes, source = input_shape[1], [], "image"
    if len(input_shape) == 4:
        nodes += [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
        ]
        source = "flat"
    weight = numpy_helper.from_array(rng.normal(0, 0.05, (int(features), n_classes)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.5, (n_classes,)).astype(np.float32), "b")
    nodes += [
        helper.make_node("Gemm", [source, "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, list(output_shape or ["batch", n_classes]))],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def four_class_metadata(names: Sequence[str]) -> dict[str, str]:
    return {"class_names": json.dumps(list(names)), "temperature": "1.0"}


def write_images(folder: Path, n: int = 3, side: int = 32, seed: int = 0) -> list[Path]:
    """``n`` random RGB PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
