"""Post-training int8 quantization of an exported ONNX model with ONNX Runtime (static, QDQ, per-channel).

Weights become int8 per output channel, activations uint8 with ranges calibrated on real training images
(percentile calibration: the largest activations are clipped instead of stretching the scale). The softmax
stays in float. The int8 graph is faster on CPUs with AVX2 / AVX512-VNNI but is not exact: ``export.py``
keeps it only if its top-1 predictions agree with PyTorch on the parity images (``int8_min_agreement``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from tumorcls.errors import ExportError, first_line

log = logging.getLogger(__name__)

DEFAULT_PERCENTILE = 99.99
MIN_CALIBRATION_IMAGES = 8


def _batches(pixels: np.ndarray, input_name: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """uint8 NHWC RGB -> the graph's float32 NCHW 0..255 input, a batch at a time."""
    for start in range(0, len(pixels), batch_size):
        chunk = np.asarray(pixels[start : start + batch_size], dtype=np.float32).transpose(0, 3, 1, 2)
        yield {input_name: np.ascontiguousarray(chunk)}


def _quantize(
    source: Path,
    target: Path,
    calibration: np.ndarray,
    input_name: str,
    batch_size: int,
    keep_float: list[str],
    percentile: float | None,
) -> None:
    """One ``quantize_static`` call: percentile calibration, or min-max when ``percentile`` is None."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(calibration, input_name, batch_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    method = CalibrationMethod.MinMax if percentile is None else CalibrationMethod.Percentile
    extra = {} if percentile is None else {"CalibPercentile": float(percentile)}
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
        quantize_static(
            str(source),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=method,
            nodes_to_exclude=keep_float,
            extra_options=extra,
        )


def quantize_onnx_bytes(
    fp32: bytes, calibration: np.ndarray, percentile: float = DEFAULT_PERCENTILE, batch_size: int = 32
) -> bytes:
    """The int8 version of a tumorcls ONNX model; ``calibration`` is (N, H, W, 3) uint8 RGB."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) < MIN_CALIBRATION_IMAGES:
        raise ExportError(
            f"int8 quantization needs at least {MIN_CALIBRATION_IMAGES} calibration images, got {len(calibration)}"
        )
    if not 90.0 <= percentile <= 100.0:
        raise ExportError(f"calibration percentile must be in [90, 100], got {percentile}")
    # ONNX Runtime's histogram calibrators need batches of one shape: drop the remainder
    batch_size = min(batch_size, len(calibration))
    calibration = calibration[: len(calibration) - len(calibration) % batch_size]
    source = onnx.load_from_string(fp32)
    input_name = source.graph.input[0].name
    keep_float = [node.name for node in source.graph.node if node.op_type == "Softmax"]

    with tempfile.TemporaryDirectory(prefix="tumorcls-int8-") as tmp:
        fp32_path, pre_path, int8_path = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32_path.write_bytes(fp32)
        try:
            quant_pre_process(str(fp32_path), str(pre_path))  # shape inference + graph folding first
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's tools raise many types
            raise ExportError(f"int8 quantization failed: {first_line(exc)}") from None
        calibrated = f"percentile {percentile}"
        try:
            _quantize(pre_path, int8_path, calibration, input_name, batch_size, keep_float, percentile)
        except Exception as exc:  # noqa: BLE001
            # the histogram calibrator refuses activations whose range is (nearly) a point; min-max does not
            log.warning("percentile calibration failed (%s); calibrating with min-max instead", first_line(exc))
            calibrated = f"min-max (percentile failed: {first_line(exc)})"
            try:
                _quantize(pre_path, int8_path, calibration, input_name, batch_size, keep_float, None)
            except Exception as exc2:  # noqa: BLE001
                raise ExportError(f"int8 quantization failed: {first_line(exc2)}") from None
        proto = onnx.load(str(int8_path))
    props = {p.key: p.value for p in source.metadata_props}
    props["quantization"] = json.dumps(
        {
            "method": "onnxruntime static QDQ",
            "weights": "int8 per channel",
            "activations": "uint8",
            "calibration": calibrated,
            "calibration_images": len(calibration),
        }
    )
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = source.producer_name
    proto.doc_string = source.doc_string + " (int8)"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
