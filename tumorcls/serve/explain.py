"""Grad-CAM on the page: the predictor's own explainer (only a checkpoint has one), run on the model worker."""

from __future__ import annotations

import numpy as np

from tumorcls.serve.engine import InferenceEngine

NEEDS_CHECKPOINT = "Grad-CAM explanations need the model's checkpoint (.ckpt); this server runs its {backend} export."
NEEDS_CHECKPOINTS = "Grad-CAM explanations of an ensemble need every member's checkpoint (.ckpt)."


def cam_note(backend: str) -> str:
    """What the page says where a Grad-CAM overlay would be."""
    return NEEDS_CHECKPOINTS if backend == "ensemble" else NEEDS_CHECKPOINT.format(backend=backend)


class CamOverlays:
    """Heatmap overlays for the predicted class; building one raises TumorclsError for a model without
    gradients (ONNX, Keras)."""

    def __init__(self, engine: InferenceEngine, layer: str | None = None) -> None:
        self.explainer = engine.predictor.grad_cam(layer)
        self.engine = engine

    def __call__(self, image: np.ndarray, class_index: int) -> np.ndarray:
        """The uint8 RGB input with the class's heatmap blended over it."""
        from tumorcls.inference.gradcam import overlay

        cams = self.engine.run_exclusive(lambda: self.explainer(image[None], [class_index]))
        return overlay(image, cams[0])
