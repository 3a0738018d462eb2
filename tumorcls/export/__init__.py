"""Export: checkpoint -> verified ONNX, int8 ONNX and Keras .h5 files with their metadata. Public names are
re-exported lazily (see tumorcls.lazy_exports), so reading metadata never imports the exporters."""

from tumorcls.lazy_exports import lazy_exports

_EXPORTS = {
    "export_checkpoint": "run",
    "ExportResult": "run",
    "ExportSpec": "spec",
    "spec_for": "spec",
    "read_metadata": "spec",
    "export_onnx": "to_onnx",
    "export_keras": "to_keras",
    "quantize_onnx_bytes": "int8",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
