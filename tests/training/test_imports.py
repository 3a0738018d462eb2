"""What a train.py process imports, seen in fresh interpreters as a user runs it: ``--help`` and ``--cfg`` load no
framework, and a training run loads its figure and TensorBoard code only when it uses them, never TensorFlow,
the exporters, ONNX Runtime or Gradio.

What is not asserted, on purpose: ``matplotlib`` itself. torchmetrics imports ``matplotlib.pyplot`` whenever
matplotlib is installed (``torchmetrics.utilities.plot``), and Lightning imports torchmetrics, so every training
process has it; what the run defers is its own drawing code (tumorcls.evaluation.plots) and matplotlib's Agg
renderer (``matplotlib.backends.backend_agg``), which only drawing a figure loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.import_time import imported_modules, top_level
from tests.helpers.paths import REPO
from tests.helpers.refusals import TRACEBACK, assert_refused
from tests.helpers.train_runs import small_run_args, train

FRAMEWORKS = ("torch", "lightning", "numpy", "matplotlib", "tensorboard", "tensorflow", "timm", "albumentations")
NEVER_IN_TRAINING = ("tensorflow", "onnxruntime", "onnx", "gradio", "tumorcls.export", "tumorcls.serve")
DRAWING = ("tumorcls.evaluation.plots", "matplotlib.backends.backend_agg")
TENSORBOARD = ("tensorboard", "torch.utils.tensorboard")
PROBE = "+callbacks.modules._target_=tests.helpers.import_probe.ModulesAtFirstStep"


def imported_by(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime train.py ARGS``; its result and the top-level names of every module it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return proc, imported_modules(proc.stderr)


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]])
def test_help_and_cfg_answer_without_torch_or_lightning(args: list[str]) -> None:
    proc, names = imported_by(args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hydra" in top_level(names)  # the probe sees imports
    assert top_level(names) & set(FRAMEWORKS) == set()
    assert ("train is powered by Hydra." if args == ["--help"] else "task_name: train") in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("data.interpolation=foo", "config: data.interpolation must be one of"),
        ("model.lr=-1", "config: model.lr must be a number > 0, got -1"),
        ("data.root=MISSING", "dataset not found at"),
    ],
)
def test_a_bad_value_or_a_missing_dataset_is_refused_before_torch_loads(
    bad: str, needle: str, synthetic_root: Path, tmp_path: Path
) -> None:
    """tumorcls.training.preflight: the refusal comes before torch, Lightning, timm and albumentations load."""
    root = tmp_path / "missing" if "MISSING" in bad else synthetic_root
    args = [f"data.root={root}", bad.replace("MISSING", str(root)), f"hydra.run.dir={tmp_path / 'run'}"]
    proc, names = imported_by(args)
    assert TRACEBACK not in proc.stderr, proc.stderr[-2000:]
    assert_refused(proc.returncode, proc.stdout, needle)  # Hydra's job log: the one [ERROR] line, on stdout
    assert "hydra" in top_level(names) and top_level(names) & {"torch", "lightning", "timm", "albumentations"} == set()


def modules_of_run(root: Path, run_dir: Path, extra: list[str]) -> dict[str, set[str]]:
    """The modules a tiny train.py run has loaded at its first training step and at exit (ModulesAtFirstStep)."""
    train([*small_run_args(root), "trainer.max_epochs=1", "calibrate=false", PROBE, *extra, f"hydra.run.dir={run_dir}"])
    seen = json.loads((run_dir / "modules.json").read_text())
    return {when: set(names) for when, names in seen.items()}


@pytest.mark.slow
def test_a_csv_run_loads_drawing_code_only_for_its_artifacts(synthetic_root: Path, tmp_path: Path) -> None:
    no_figure_callbacks = ["logger=csv", "~callbacks.confusion_matrix", "~callbacks.sample_grid"]
    seen = modules_of_run(synthetic_root, tmp_path / "run", no_figure_callbacks)
    assert "tumorcls.models.lit_module" in seen["first_step"]  # the probe ran inside the training process
    assert seen["first_step"] & {*DRAWING, *TENSORBOARD, *NEVER_IN_TRAINING} == set()
    assert set(DRAWING) <= seen["exit"]  # the artifacts' figures drew: the probe would see an eager import
    assert seen["exit"] & {*TENSORBOARD, *NEVER_IN_TRAINING} == set()
    assert (tmp_path / "run" / "confusion_matrix.png").is_file()


@pytest.mark.slow
def test_a_tensorboard_run_loads_tensorboard_but_no_drawing_code_before_its_first_step(
    synthetic_root: Path, tmp_path: Path
) -> None:
    seen = modules_of_run(synthetic_root, tmp_path / "run", ["logger=tensorboard"])  # figure callbacks included
    assert set(TENSORBOARD) <= seen["first_step"]
    assert seen["first_step"] & {*DRAWING, *NEVER_IN_TRAINING} == set()
    assert seen["exit"] & set(NEVER_IN_TRAINING) == set()
