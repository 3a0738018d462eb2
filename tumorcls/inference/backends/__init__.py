"""Model backends behind one interface (:class:`Predictor`), one module per runtime: ``.ckpt`` checkpoints
run with torch, ``.onnx`` with ONNX Runtime, ``.h5``/``.keras`` with Keras; :func:`load_predictor` picks one."""

from tumorcls.inference.backends.base import BatchOutput, ModelFileError, Predictor, softmax
from tumorcls.inference.backends.keras_h5 import KerasPredictor
from tumorcls.inference.backends.loader import BACKENDS, load_predictor
from tumorcls.inference.backends.onnx_runtime import OnnxPredictor
from tumorcls.inference.backends.torch_checkpoint import TorchPredictor

__all__ = [
    "BACKENDS",
    "BatchOutput",
    "KerasPredictor",
    "ModelFileError",
    "OnnxPredictor",
    "Predictor",
    "TorchPredictor",
    "load_predictor",
    "softmax",
]
