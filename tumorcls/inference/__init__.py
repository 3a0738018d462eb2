"""Inference: model file -> class probabilities (one backend per runtime), batching, Grad-CAM."""

from tumorcls.inference.backends import ModelFileError, Predictor, load_predictor
from tumorcls.inference.batching import predict_batch

__all__ = ["ModelFileError", "Predictor", "load_predictor", "predict_batch"]
