"""A tiny classifier (timm ``test_efficientnet``) trained in seconds on the synthetic images, saved as a
real Lightning checkpoint: what the predict / evaluate / Grad-CAM / calibration tests run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.synthetic import synthetic_image
from tests.helpers.trainers import quiet_trainer
from tumorcls.inference.backends import TorchPredictor
from tumorcls.models.lit_module import TumorClassifier

SIDE = 64


def synthetic_batch(per_class: int, seed: int, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(N, side, side, 3) uint8 images and their labels, class by class."""
    rng = np.random.default_rng(seed)
    images = np.stack([synthetic_image(label, rng, side) for label in range(4) for _ in range(per_class)])
    return images, np.repeat(np.arange(4), per_class)


def train_tiny(path: Path, seed: int = 0, epochs: int = 8, per_class: int = 16) -> Path:
    """Train on synthetic images with a Lightning Trainer and save the checkpoint at ``path``."""
    L.seed_everything(seed, workers=True)
    model = TumorClassifier(
        backbone="test_efficientnet", pretrained=False, drop_rate=0.0, lr=3e-3, scheduler="none", input_size=SIDE
    )
    images, labels = synthetic_batch(per_class, seed)
    x = TorchPredictor(model).preprocess(images)
    loader = DataLoader(TensorDataset(x, torch.as_tensor(labels)), batch_size=16, shuffle=True)
    trainer = quiet_trainer(max_epochs=epochs, enable_checkpointing=False)
    trainer.fit(model, train_dataloaders=loader)
    trainer.save_checkpoint(path)
    return path


_CACHE: dict[str, Path] = {}


def tiny_checkpoint(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest.TempPathFactory
    """One trained tiny checkpoint per test session, shared by the modules that need it."""
    if "ckpt" not in _CACHE:
        _CACHE["ckpt"] = train_tiny(tmp_path_factory.mktemp("tiny_model") / "tiny.ckpt")
    return _CACHE["ckpt"]
