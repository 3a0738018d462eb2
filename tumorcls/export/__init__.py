"""Export: checkpoint -> verified ONNX, int8 ONNX and Keras .h5 files with their metadata. Public names are
re-exported lazily (see tumorcls.lazy_exports), so reading metadata never imports the exporters."""

from tumorcls.lazy_exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "run": ("export_checkpoint", "ExportResult"),
        "spec": ("ExportSpec", "spec_for", "read_metadata"),
        "to_onnx": ("export_onnx",),
        "to_keras": ("export_keras",),
        "int8": ("quantize_onnx_bytes",),
    },
)
