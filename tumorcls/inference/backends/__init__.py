"""Model backends behind one interface (:class:`Predictor`), one module per runtime: ``.ckpt`` checkpoints
run with torch, ``.onnx`` with ONNX Runtime, ``.h5``/``.keras`` with Keras; :func:`load_predictor` picks one,
and :func:`load_model` turns several files into their ensemble (:class:`EnsemblePredictor`)."""

from tumorcls.inference.backends.base import BatchOutput, ModelFileError, Predictor, softmax
from tumorcls.inference.backends.ensemble import EnsemblePredictor
from tumorcls.inference.backends.keras_h5 import KerasPredictor
from tumorcls.inference.backends.loader import BACKENDS, load_model, load_predictor, model_field, model_paths
from tumorcls.inference.backends.onnx_runtime import OnnxPredictor
from tumorcls.inference.backends.torch_checkpoint import TorchPredictor

__all__ = [
    "BACKENDS",
    "BatchOutput",
    "EnsemblePredictor",
    "KerasPredictor",
    "ModelFileError",
    "OnnxPredictor",
    "Predictor",
    "TorchPredictor",
    "load_model",
    "load_predictor",
    "model_field",
    "model_paths",
    "softmax",
]
