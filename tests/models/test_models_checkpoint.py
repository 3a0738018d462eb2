"""load_checkpoint: the model plus a typed CheckpointInfo (temperature, calibration, progress), and
checkpoints in the flat-hyperparameter format of earlier releases still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tumorcls.errors import CheckpointError
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.checkpoint import CHECKPOINT_KEY, CheckpointInfo, load_checkpoint
from tumorcls.models.lit_module import TumorClassifier

# hyper_parameters exactly as TumorClassifier.save_hyperparameters wrote them before the settings were grouped
OLD_FORMAT_HPARAMS = {
    "backbone": "test_efficientnet",
    "num_classes": 4,
    "class_names": list(CLASS_NAMES),
    "drop_rate": 0.5,
    "pretrained": True,  # with a weights file that no longer exists: the loader must not look for it
    "weights": "/gone/tf_efficientnet_b0.safetensors",
    "optimizer": "adam",
    "lr": 0.001,
    "weight_decay": 0.0,
    "scheduler": "plateau",
    "plateau_factor": 0.3,
    "plateau_patience": 2,
    "min_lr": 1e-06,
    "warmup_epochs": 0,
    "label_smoothing": 0.0,
    "backbone_lr_mult": 1.0,
    "freeze_backbone_epochs": 0,
    "tta": False,
    "channels_last": True,
    "compile": False,
    "compile_mode": None,
    "input_size": 64,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def _old_checkpoint(path: Path, extra: dict | None = None, **hparams: object) -> tuple[Path, dict]:
    torch.manual_seed(0)
    source = TumorClassifier(backbone="test_efficientnet", input_size=64)
    ckpt = {
        "epoch": 3,
        "global_step": 42,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": source.state_dict(),
        "hyper_parameters": {**OLD_FORMAT_HPARAMS, **hparams},
    }
    if extra is not None:
        ckpt[CHECKPOINT_KEY] = extra
    torch.save(ckpt, path)
    return path, source.state_dict()


def test_old_format_checkpoint_loads_with_its_weights_and_info(tmp_path: Path) -> None:
    calibration = {"temperature": 1.7, "n": 16, "ece_before": 0.2, "ece_after": 0.1}
    path, state = _old_checkpoint(tmp_path / "old.ckpt", {"temperature": 1.7, "calibration": calibration})
    model, info = load_checkpoint(path)
    assert info == CheckpointInfo(temperature=1.7, calibration=calibration, epoch=3, global_step=42)
    assert not model.training and model.hparams.input_size == 64 and model.class_names == list(CLASS_NAMES)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.settings.runtime.channels_last and model.settings.inputs.mean == (0.485, 0.456, 0.406)
    # the info is data returned beside the model, not attributes glued onto it
    assert not hasattr(model, "temperature") and not hasattr(model, "calibration")


def test_uncalibrated_checkpoint_has_default_info(tmp_path: Path) -> None:
    path, _ = _old_checkpoint(tmp_path / "plain.ckpt")
    _, info = load_checkpoint(path, expected_classes=None)
    assert (info.temperature, info.calibration, info.epoch, info.global_step) == (1.0, None, 3, 42)
    with pytest.raises(AttributeError):
        info.temperature = 2.0  # frozen


@pytest.mark.parametrize("temperature", [-1.0, 0.0, float("inf"), True, "2"])
def test_invalid_temperature_is_a_one_line_checkpoint_error(tmp_path: Path, temperature: object) -> None:
    path, _ = _old_checkpoint(tmp_path / "bad.ckpt", {"temperature": temperature})
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*bad\.ckpt' holds an invalid calibration temperature"):
        load_checkpoint(path)


def test_label_map_other_than_expected_is_refused(tmp_path: Path) -> None:
    names = ["no_tumor", "glioma_tumor", "meningioma_tumor", "pituitary_tumor"]
    path, _ = _old_checkpoint(tmp_path / "swapped.ckpt", class_names=names)
    with pytest.raises(CheckpointError, match=r"has label map \['no_tumor', 'glioma_tumor'.*refusing it$"):
        load_checkpoint(path)
    model, _ = load_checkpoint(path, expected_classes=None)
    assert model.class_names == names


def test_hyperparameters_this_version_cannot_use_are_one_line(tmp_path: Path) -> None:
    path, _ = _old_checkpoint(tmp_path / "future.ckpt", scheduler="onecycle")
    expected = r"^checkpoint '.*' has hyperparameters this version cannot use: .*onecycle"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
