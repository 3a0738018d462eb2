"""Export: checkpoint -> verified ONNX, int8 ONNX and Keras .h5 files with their metadata (the contract they
carry is tumorcls.model_file)."""

from tumorcls.export.int8 import quantize_onnx_bytes
from tumorcls.export.run import ExportResult, export_checkpoint
from tumorcls.export.spec import load_for_export, spec_for
from tumorcls.export.to_keras import export_keras
from tumorcls.export.to_onnx import export_onnx

__all__ = [
    "ExportResult",
    "export_checkpoint",
    "export_keras",
    "export_onnx",
    "load_for_export",
    "quantize_onnx_bytes",
    "spec_for",
]
