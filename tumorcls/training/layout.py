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

    @property
    def splits_csv(self) -> Path:
        return self.root / "splits.csv"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints_dir / f"{BEST_NAME}{CHECKPOINT_SUFFIX}"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / f"{LAST_NAME}{CHECKPOINT_SUFFIX}"

    @property
    def metrics_json(self) -> Path:
        return self.root / METRICS_JSON

    @property
    def classification_report(self) -> Path:
        return self.root / CLASSIFICATION_REPORT

    @property
    def confusion_matrix_png(self) -> Path:
        return self.root / CONFUSION_MATRIX_PNG

    @property
    def curves_png(self) -> Path:
        return self.root / CURVES_PNG

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def export_dir(self) -> Path:
        return self.root / EXPORT_DIR

    @property
    def hydra_config(self) -> Path:
        return self.root / ".hydra" / "config.yaml"

    @property
    def lock_file(self) -> Path:
        return self.root / ".train.lock"
