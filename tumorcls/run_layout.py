"""The one description of a run folder: what ``train.py`` writes where, and what export, evaluation and the
benchmarks read back. Every other module asks ``RunLayout`` instead of joining file names itself.

    <run>/splits.csv                  the split of every image (data.manifest_path)
    <run>/checkpoints/best.ckpt       best val/acc (conf/callbacks: model_checkpoint)
    <run>/checkpoints/last.ckpt       every epoch, what ckpt_path=last resumes (conf/callbacks: last_checkpoint)
    <run>/metrics.json, classification_report.txt, confusion_matrix.png, curves.png
    <run>/tensorboard/                the TensorBoard logger (conf/logger/tensorboard.yaml)
    <run>/export/model.onnx ...       export.py's default outputs
    <run>/.hydra/config.yaml          the composed config, written by Hydra
    <run>/.train.lock                 held by the train.py job that uses the folder
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHECKPOINTS_DIR = "checkpoints"
BEST_NAME = "best"  # ModelCheckpoint filename (".ckpt" is added by Lightning)
LAST_NAME = "last"
CHECKPOINT_SUFFIX = ".ckpt"
TENSORBOARD_DIR = "tensorboard"
EXPORT_DIR = "export"
METRICS_JSON = "metrics.json"
CLASSIFICATION_REPORT = "classification_report.txt"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
CURVES_PNG = "curves.png"


class InRun:
    """A path inside the run folder, read as an attribute of a :class:`RunLayout` (``layout.metrics_json``)."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, layout: RunLayout | None, owner: type | None = None) -> Path:
        if layout is None:  # looked up on the class itself
            return Path(*self.parts)
        return layout.root.joinpath(*self.parts)


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder (``root``); nothing is created or checked here."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of_checkpoint(cls, ckpt: str | Path) -> RunLayout:
        """The run a checkpoint belongs to: ``<run>/checkpoints/x.ckpt`` -> ``<run>``; else its own folder."""
        parent = Path(ckpt).parent
        return cls(parent.parent if parent.name == CHECKPOINTS_DIR else parent)

    splits_csv = InRun("splits.csv")
    checkpoints_dir = InRun(CHECKPOINTS_DIR)
    best_checkpoint = InRun(CHECKPOINTS_DIR, f"{BEST_NAME}{CHECKPOINT_SUFFIX}")
    last_checkpoint = InRun(CHECKPOINTS_DIR, f"{LAST_NAME}{CHECKPOINT_SUFFIX}")
    metrics_json = InRun(METRICS_JSON)
    classification_report = InRun(CLASSIFICATION_REPORT)
    confusion_matrix_png = InRun(CONFUSION_MATRIX_PNG)
    curves_png = InRun(CURVES_PNG)
    tensorboard_dir = InRun(TENSORBOARD_DIR)
    export_dir = InRun(EXPORT_DIR)
    hydra_config = InRun(".hydra", "config.yaml")
    lock_file = InRun(".train.lock")
