"""Small real checkpoints for the export tests: a TumorClassifier fitted for one step by a Lightning
Trainer and saved by it, with non-trivial BatchNorm statistics and a confident head."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.paths import REPO
from tests.helpers.trainers import quiet_trainer
from tumorcls.models.lit_module import TumorClassifier


def perturb(model: TumorClassifier, seed: int = 0, head_scale: float = 20.0) -> TumorClassifier:
    """Random BN statistics/affine parameters and a scaled head, so outputs are confident and differ
    between images: parity on near-uniform probabilities would prove little."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                module.weight.copy_(torch.rand(n, generator=g) + 0.5)
                module.bias.copy_(torch.randn(n, generator=g) * 0.2)
        model.net.head.weight.mul_(head_scale)
    return model.eval()


def make_checkpoint(
    run_dir: Path, backbone: str = "test_efficientnet", size: int = 64, seed: int = 0, **hparams
) -> Path:
    """``run_dir/checkpoints/best.ckpt`` written by ``Trainer.save_checkpoint`` after one training step."""
    torch.manual_seed(seed)
    model = TumorClassifier(backbone=backbone, input_size=size, scheduler="none", **hparams)
    data = TensorDataset(torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 3]))
    trainer = quiet_trainer(max_steps=1, enable_checkpointing=False)
    trainer.fit(model, DataLoader(data, batch_size=4))
    perturb(model, seed)
    path = run_dir / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


def export_run_dir(folder: Path, data_root: Path, seed: int = 0) -> Path:
    """A run folder as export.py finds it: ``checkpoints/best.ckpt`` and a ``splits.csv`` over ``data_root``."""
    make_checkpoint(folder, seed=seed)
    write_splits(folder, data_root)
    return folder


def write_splits(run_dir: Path, data_root: Path) -> list[str]:
    """A splits.csv like a training run's, listing the synthetic dataset's Testing images as the test split."""
    rows = [["path", "label", "class_name", "split"]]
    for label, folder in enumerate(sorted((data_root / "Testing").iterdir())):
        for image in sorted(folder.glob("*.jpg")):
            rows.append([str(image.relative_to(data_root)), label, folder.name, "test"])
    with open(run_dir / "splits.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return [r[0] for r in rows[1:]]


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "export.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
