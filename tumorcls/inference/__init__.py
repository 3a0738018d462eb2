"""Inference: model file -> class probabilities (one backend per runtime), batching, Grad-CAM."""
