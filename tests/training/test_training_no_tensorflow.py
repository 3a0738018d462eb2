"""Importing tumorcls changes no global state, and training's TensorBoard logging never imports TensorFlow
(installed here with the keras extra): the marker that keeps it out is set when the logger is built."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.paths import REPO

pytest.importorskip("tensorflow", reason="only meaningful where TensorFlow is installed (the keras extra)")


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_importing_tumorcls_leaves_sys_modules_alone() -> None:
    proc = python(
        "import sys, tumorcls;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'torch', 'lightning')));"
        "print(tumorcls.NUM_CLASSES, tumorcls.__version__, sorted(tumorcls.__all__))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "4 0.1.0 ['CLASS_NAMES', 'NUM_CLASSES', '__version__', 'load']"]


@pytest.mark.slow  # a fresh interpreter logging a training run
def test_tensorboard_logging_of_a_training_run_does_not_import_tensorflow(tmp_path) -> None:  # noqa: ANN001
    code = f"""
import sys
from hydra import compose, initialize_config_dir
from tumorcls.training.loggers import build_loggers
with initialize_config_dir(config_dir={str(REPO / "conf")!r}, version_base="1.3"):
    cfg = compose(config_name="train", overrides=["logger=many", "paths.output_dir={tmp_path}"])
loggers = build_loggers(cfg.logger)
tensorboard = loggers[0]
tensorboard.log_metrics({{"train/loss": 1.0}}, step=0)
tensorboard.log_hyperparams({{"lr": 0.001}}, {{"hparams/test_acc": 0.5}})
tensorboard.experiment.flush()
print(type(tensorboard).__name__, "tensorflow" in sys.modules, "tensorboard.compat.notf" in sys.modules)
"""
    proc = python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["TensorBoardLogger", "False", "True"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
