"""The checkpoint backend: a tumorcls Lightning checkpoint (.ckpt) run with torch.

Probabilities are softmax(logits / temperature), the temperature being the one calibration stored in the
checkpoint. It is the only backend with logits, so its TTA averages logits and it also reports the
uncalibrated probabilities; and the only one with gradients, so it offers Grad-CAM. ``export.py`` uses it
as the reference the exported files must reproduce. The crop and intensity normalisation a file goes through
before the network are the checkpoint's hyperparameters (``crop``, ``intensity``; "none" when absent).

``bf16=True`` runs the network under bfloat16 autocast on CUDA (the weights stay float32; logits are cast back
and probabilities are float64 as always; metrics.json's ``precision`` says so). It is off by default: this
backend is the float32 reference that training's test stage, ``tumorcls evaluate`` and the export parity checks
compare against, and bf16 (8 bits of mantissa) changes the probabilities; what it gains on a GPU (evaluation of
the same network ran 1.3x faster in bf16 than in float32 on an H200, README) is yet to be measured on this path.
On CPU it is ignored: the network runs in float32 there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tumorcls.inference.backends.base import DEFAULT_INPUT_SIZE, BatchOutput, Predictor, check_batch, softmax

if TYPE_CHECKING:
    from tumorcls.models.checkpoint import CheckpointInfo
    from tumorcls.models.lit_module import TumorClassifier


def autocast_dtype(device_type: str, bf16: bool) -> Any:
    """The dtype the network is autocast to: bfloat16 when asked for on CUDA, else None (float32)."""
    if not bf16 or device_type != "cuda":
        return None
    import torch

    return torch.bfloat16


class TorchPredictor(Predictor):
    """A TumorClassifier in eval mode on ``device``, with what its checkpoint said besides the weights."""

    backend = "checkpoint"
    suffixes = (".ckpt",)

    def __init__(
        self,
        model: TumorClassifier,
        device: str = "cpu",
        info: CheckpointInfo | None = None,
        path: Path | None = None,
        bf16: bool = False,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype(self.device.type, bf16)
        self.precision = "bfloat16 autocast (float32 weights)" if self.autocast_dtype is not None else None
        hp = model.hparams
        temperature = float(info.temperature) if info is not None else 1.0
        metadata = {"temperature": repr(temperature)}
        if path is not None:
            metadata["source_checkpoint"] = str(path)
        progress = {"epoch": info.epoch, "global_step": info.global_step} if info is not None else {}
        metadata.update({key: str(value) for key, value in progress.items() if value is not None})
        size = int(hp.get("input_size", DEFAULT_INPUT_SIZE))
        # the preprocessing it was trained with; a checkpoint older than the setting was trained without any
        preprocess = {"crop": hp.get("crop", "none"), "intensity": hp.get("intensity", "none")}
        super().__init__(path, hp.class_names, size, temperature, metadata, **preprocess)
        self.mean = torch.tensor(hp.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(hp.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_file(
        cls, path: Path, device: str = "cpu", threads: int | None = None, bf16: bool = False
    ) -> TorchPredictor:
        import torch

        from tumorcls.device import resolve_device
        from tumorcls.models.checkpoint import load_checkpoint

        device = resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        model, info = load_checkpoint(path, expected_classes=None, map_location=device)
        return cls(model, device, info, path, bf16=bf16)

    def preprocess(self, images: np.ndarray) -> Any:
        """uint8 NHWC RGB -> normalised float NCHW tensor, as the training transforms do."""
        arr = np.ascontiguousarray(check_batch(images))
        if not arr.flags.writeable:  # e.g. a flipped view for TTA; torch wants writable memory
            arr = arr.copy()
        x = self.torch.from_numpy(arr).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) logits, float64."""
        if len(check_batch(images)) == 0:
            return np.zeros((0, len(self.class_names)))
        dtype = self.autocast_dtype  # None: no autocast context at all (the float32 path as it always ran)
        amp = self.torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with self.torch.inference_mode(), amp:
            logits = self.model(self.preprocess(images)).float()
        return logits.cpu().numpy().astype(np.float64)

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.predict_logits(images), self.temperature)

    def predict_views(self, views: Sequence[np.ndarray]) -> BatchOutput:
        """Mean of the views' logits, then the temperature; also the probabilities at temperature 1."""
        logits = np.mean([self.predict_logits(v) for v in views], axis=0)
        return BatchOutput(softmax(logits, self.temperature), softmax(logits))

    def grad_cam(self, layer: str | None = None) -> Callable[[np.ndarray, Sequence[int]], np.ndarray]:
        from tumorcls.errors import TumorclsError
        from tumorcls.inference.gradcam import GradCamExplainer

        try:
            return GradCamExplainer(self.model.net, self.preprocess, layer)
        except ValueError as exc:
            raise TumorclsError(f"Grad-CAM: {exc}") from None
