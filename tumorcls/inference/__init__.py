"""Inference: model file(s) -> class probabilities (one backend per runtime, several files as their ensemble),
batching, Grad-CAM."""

from tumorcls.inference.backends import EnsemblePredictor, ModelFileError, Predictor, load_model, load_predictor
from tumorcls.inference.batching import predict_batch
from tumorcls.inference.classifier import Classifier, Result

__all__ = [
    "Classifier",
    "EnsemblePredictor",
    "ModelFileError",
    "Predictor",
    "load_model",
    "load_predictor",
    "predict_batch",
    "Result",
]
