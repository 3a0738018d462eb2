"""Post-training int8 quantization of an exported ONNX model with ONNX Runtime (static, QDQ, per-channel).

Weights become int8 per output channel, activations uint8 with ranges calibrated on real training images
(percentile calibration: the largest activations are clipped instead of stretching the scale). The softmax
stays in float. The int8 graph is faster on CPUs with AVX2 / AVX512-VNNI but is not exact: ``export.py``
keeps it only if its top-1 class agrees with the float model's on at least ``int8_min_agreement`` (default 97%)
of the int8 check images, which are never calibration images (by default up to 256 of the run's val and test
images; fewer than 64 and the export is refused: an agreement measured on a handful of images means little).
Where the check images' classes are known, the gate also reports each class's recall with the float model and
with int8 (:func:`int8_gate`): a small loss of agreement can fall on one class.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tumorcls.errors import ExportError, first_line

log = logging.getLogger(__name__)

DEFAULT_PERCENTILE = 99.99
MIN_CALIBRATION_IMAGES = 8
DEFAULT_MIN_AGREEMENT = 0.97  # top-1 agreement with the float model the int8 file must reach
DEFAULT_CHECK_IMAGES = 256  # int8 check images by default (n_int8_check)
MIN_CHECK_IMAGES = 64  # fewer and the gate refuses: at 0.97, 64 images let through at most one disagreement


def _recall(predicted: np.ndarray, labels: np.ndarray, c: int) -> float:
    mask = labels == c
    return float(np.mean(predicted[mask] == c)) if mask.any() else 0.0


def int8_gate(
    reference: np.ndarray,
    int8: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    min_agreement: float,
) -> dict[str, Any]:
    """The int8 gate's report on the check images: top-1 agreement of the int8 probabilities with the float
    model's (``reference``) and whether it reaches ``min_agreement``; with ``labels``, accuracy and each class's
    recall for float and int8, and their change (int8 - float)."""
    float_pred, int8_pred = reference.argmax(1), int8.argmax(1)
    agreement = float(np.mean(float_pred == int8_pred))
    report: dict[str, Any] = {
        "check_images": len(reference),
        "top1_agreement": agreement,
        "min_agreement": float(min_agreement),
        "passed": agreement >= min_agreement,
    }
    if labels is not None:
        accuracy = {"float": float(np.mean(float_pred == labels)), "int8": float(np.mean(int8_pred == labels))}
        report["accuracy"] = {**accuracy, "delta": accuracy["int8"] - accuracy["float"]}
        report["recall"] = {}
        for c, name in enumerate(class_names):
            recall = {"float": _recall(float_pred, labels, c), "int8": _recall(int8_pred, labels, c)}
            support = int(np.sum(labels == c))
            report["recall"][name] = {**recall, "delta": recall["int8"] - recall["float"], "support": support}
    return report


def gate_summary(report: dict[str, Any]) -> str:
    """The report in one line: agreement, threshold, and the per-class recall change in points where known."""
    line = (
        f"top-1 agreement with the float model {report['top1_agreement']:.1%} of {report['check_images']} check "
        f"images (int8_min_agreement={report['min_agreement']:g})"
    )
    if "recall" in report:
        deltas = ", ".join(f"{name} {100 * r['delta']:+.1f}" for name, r in report["recall"].items())
        line += f"; recall change int8 - float (points): {deltas}"
    else:
        line += "; the check images' classes are unknown: no recall change"
    return line


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
