"""Run train.py as a user does (a subprocess in the repository) on small settings, and compose its config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.helpers.paths import CONF, REPO


def small_run_args(root: Path) -> list[str]:
    return [
        f"data.root={root}",
        "data.size=48",
        "data.batch_size=16",
        "model.backbone=test_efficientnet",
        "model.pretrained=false",
        "model.weights=null",
        "trainer.accelerator=cpu",
        "callbacks=plain",
        "+trainer.enable_progress_bar=false",
    ]


def train(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def compose_train(overrides: list[str], hydra: bool = False, conf: Path = CONF) -> DictConfig:
    """``conf``/train.yaml composed as train.py composes it (with Hydra's own node when ``hydra``)."""
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def compose_export(overrides: list[str]) -> DictConfig:
    """conf/export.yaml composed as export.py composes it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="export", overrides=overrides)
