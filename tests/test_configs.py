"""Every option of every config group composes with Hydra's compose API, passes the config checks, and builds
what it promises (data module, model on CPU with a tiny backbone, callbacks, loggers, CPU trainer). A new
option file without an expectation here fails: each one is listed in EXPECTED."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.helpers.paths import CONF
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.run_layout import RunLayout
from tumorcls.training.build import build_callbacks, build_datamodule, build_model, build_trainer
from tumorcls.training.config_checks import check_config
from tumorcls.training.loggers import build_loggers

GROUPS = ("data", "model", "trainer", "callbacks", "logger", "experiment", "hparams_search", "debug")
DEFAULT_CALLBACKS = {
    "ModelCheckpoint",
    "LearningRateMonitor",
    "RichProgressBar",
    "EpochHistory",
    "ConfusionMatrixLogger",
    "AugmentedSampleGrid",
}
# what each option must produce: checked by the test of its group below
EXPECTED: dict[str, dict[str, Any]] = {
    "data/default": {"augmentations": ["HorizontalFlip", "Affine", "RandomBrightnessContrast"], "augment_on": "cpu"},
    "data/no_augment": {"augmentations": [], "augment_on": "cpu"},
    "data/strong_augment": {
        "augmentations": ["HorizontalFlip", "Affine", "RandomBrightnessContrast", "RandomGamma"],
        "augment_on": "cpu",
    },
    "data/shift_augment": {
        "augmentations": ["HorizontalFlip", "Affine", "OneOf", "RandomGamma", "RandomBrightnessContrast"],
        "augment_on": "cpu",
    },
    "model/effnet_b0": {"backbone": "tf_efficientnet_b0.aa_in1k"},
    "model/effnet_b0_timm": {"backbone": "efficientnet_b0"},
    "trainer/default": {"strategy": "SingleDeviceStrategy", "precision": "32-true"},
    "trainer/cpu": {"strategy": "SingleDeviceStrategy", "precision": "32-true"},
    "trainer/gpu": {"strategy": "SingleDeviceStrategy", "precision": "bf16-mixed"},
    "trainer/ddp": {"strategy": "DDPStrategy", "precision": "32-true"},
    "callbacks/default": {"classes": DEFAULT_CALLBACKS},
    "callbacks/plain": {"classes": DEFAULT_CALLBACKS - {"RichProgressBar"}},
    "callbacks/early_stopping": {"classes": DEFAULT_CALLBACKS | {"EarlyStopping"}},
    "callbacks/ema": {"classes": DEFAULT_CALLBACKS | {"EMAWeightAveraging"}},
    "logger/tensorboard": {"classes": ["TensorBoardLogger"]},
    "logger/csv": {"classes": ["CSVLogger"]},
    "logger/many": {"classes": ["TensorBoardLogger", "CSVLogger"]},
    "experiment/best": {"data.protocol": "grouped", "model.scheduler": "cosine", "trainer.max_epochs": 20},
    "experiment/shift": {
        "data.protocol": "grouped",
        "data.crop": "head",
        "data.intensity": "equalize",
        "model.scheduler": "cosine",
        "model.label_smoothing": 0.1,
        "trainer.max_epochs": 20,
    },
    "experiment/tutorial": {"data.protocol": "seed", "model.scheduler": "plateau", "trainer.max_epochs": 12},
    "hparams_search/lr_grid": {"params": {"model.lr", "data.batch_size"}},
    "hparams_search/kfold": {"params": {"data.fold"}},
    "hparams_search/optuna": {"params": {"model.lr", "model.weight_decay", "data.batch_size"}},
    "debug/default": {"fast_dev_run": False, "overfit_batches": 0.0, "max_epochs": 12, "test": True},
    "debug/fast_dev_run": {"fast_dev_run": True, "overfit_batches": 0.0, "max_epochs": 1, "test": True},
    "debug/overfit": {"fast_dev_run": False, "overfit_batches": 1, "max_epochs": 30, "test": False},
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL_OPTIONS = [f"{group}/{option}" for group in GROUPS for option in options(group)]


def compose_with(overrides: list[str], tmp_path: Path, hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        local = [f"data.root={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'run'}"]
        return compose(config_name="train", overrides=[*overrides, *local], return_hydra_config=hydra)


def cpu_trainer(cfg: DictConfig, tmp_path: Path) -> L.Trainer:
    cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
    return build_trainer(cfg.trainer, [], [])


def tiny_model(cfg: DictConfig, datamodule: TumorDataModule) -> TumorClassifier:
    cfg.model.backbone, cfg.model.pretrained, cfg.model.weights = "test_efficientnet", False, None
    return build_model(cfg.model, datamodule)


def test_every_option_has_an_expectation() -> None:
    assert sorted(ALL_OPTIONS) == sorted(EXPECTED)
    assert all(options(group) for group in GROUPS)


@pytest.mark.parametrize("choice", [o for o in ALL_OPTIONS if not o.startswith("hparams_search/")])
def test_every_option_composes_and_passes_the_config_checks(choice: str, tmp_path: Path) -> None:
    group, option = choice.split("/")
    cfg = compose_with([f"{group}={option}"], tmp_path)
    check_config(cfg)
    assert cfg.data._target_.endswith("TumorDataModule") and cfg.trainer._target_.endswith("Trainer")


@pytest.mark.parametrize("option", options("data"))
def test_data_options_build_the_data_module(option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"data={option}"], tmp_path)
    dm = build_datamodule(cfg.data, RunLayout(tmp_path / "run"))
    assert isinstance(dm, TumorDataModule) and not dm.datasets  # built, nothing decoded
    assert (dm.root, dm.size, dm.batch_size, dm.protocol) == (tmp_path / "data", 150, 32, "official")
    assert dm.manifest_path == tmp_path / "run" / "splits.csv"
    assert dm.augment_on == EXPECTED[f"data/{option}"]["augment_on"] and dm.batch_augment is None
    names = [type(t).__name__ for t in dm.train_transform.transforms]
    wanted = EXPECTED[f"data/{option}"]["augmentations"]
    assert [n for n in names if n in wanted or n.startswith("Random")][: len(wanted)] == wanted
    assert (dm.decode_options.crop, dm.decode_options.intensity) == ("none", "none")
    if not wanted:
        assert not set(names) & {"HorizontalFlip", "Affine", "RandomBrightnessContrast"}


@pytest.mark.parametrize("option", options("model"))
def test_model_options_build_the_classifier_on_cpu(option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"model={option}"], tmp_path)
    assert cfg.model.backbone == EXPECTED[f"model/{option}"]["backbone"]
    dm = build_datamodule(cfg.data, RunLayout(tmp_path / "run"))
    model = tiny_model(cfg, dm)
    assert isinstance(model, TumorClassifier) and model.weights_source == "random-init"
    assert model.hparams.backbone == "test_efficientnet" and model.hparams.input_size == 150
    assert model.hparams.drop_rate == cfg.model.drop_rate == 0.5
    assert model.class_names == list(CLASS_NAMES)


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options_build_a_cpu_trainer(option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"trainer={option}"], tmp_path)
    trainer = cpu_trainer(cfg, tmp_path)
    expected = EXPECTED[f"trainer/{option}"]
    assert type(trainer.strategy).__name__ == expected["strategy"]
    assert trainer.precision == expected["precision"] and trainer.max_epochs == 12
    assert trainer.default_root_dir == str(tmp_path / "run")


@pytest.mark.parametrize("option", options("callbacks"))
def test_callback_options_build_their_callbacks(option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"callbacks={option}"], tmp_path)
    callbacks = build_callbacks(cfg.callbacks)
    assert {type(c).__name__ for c in callbacks} == EXPECTED[f"callbacks/{option}"]["classes"]
    layout = RunLayout(tmp_path / "run")
    checkpoints = {Path(c.dirpath) / f"{c.filename}.ckpt" for c in callbacks if type(c).__name__ == "ModelCheckpoint"}
    assert checkpoints == {layout.best_checkpoint, layout.last_checkpoint}
    stop = next((c for c in callbacks if type(c).__name__ == "EarlyStopping"), None)
    assert stop is None or (stop.monitor, stop.patience) == ("val/acc", 5)


@pytest.mark.parametrize("option", options("logger"))
def test_logger_options_write_into_the_run_folder(option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"logger={option}"], tmp_path)
    loggers = build_loggers(cfg.logger)
    assert [type(lg).__name__ for lg in loggers] == EXPECTED[f"logger/{option}"]["classes"]
    layout = RunLayout(tmp_path / "run")
    dirs = {type(lg).__name__: Path(lg.log_dir) for lg in loggers}
    assert dirs.get("TensorBoardLogger", layout.tensorboard_dir) == layout.tensorboard_dir
    assert dirs.get("CSVLogger", layout.root / "csv") == layout.root / "csv"


@pytest.mark.parametrize("option", options("experiment"))
def test_experiments_set_their_recipe_and_build(option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"experiment={option}"], tmp_path)
    for key, value in EXPECTED[f"experiment/{option}"].items():
        group, name = key.split(".")
        assert cfg[group][name] == value, key
    dm = build_datamodule(cfg.data, RunLayout(tmp_path / "run"))
    model = tiny_model(cfg, dm)
    assert model.hparams.scheduler == cfg.model.scheduler and dm.protocol == cfg.data.protocol
    # the preprocessing is part of the model's input contract: its checkpoints record the data module's
    assert (model.hparams.crop, model.hparams.intensity) == (cfg.data.crop, cfg.data.intensity)
    assert (model.settings.inputs.crop, model.settings.inputs.intensity) == (cfg.data.crop, cfg.data.intensity)
    assert build_callbacks(cfg.callbacks) and cpu_trainer(cfg, tmp_path).max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("option", options("hparams_search"))
def test_hparams_searches_compose_with_their_sweeper(option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"hparams_search={option}"], tmp_path, hydra=True)
    sweeper = cfg.hydra.sweeper
    assert EXPECTED[f"hparams_search/{option}"]["params"] <= set(sweeper.params)
    if option == "optuna":
        assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
        assert cfg.optimized_metric == "val/acc" and sweeper.n_trials == 20
    if option == "kfold":
        assert (cfg.data.protocol, cfg.data.num_folds) == ("grouped", 5)
        assert sweeper.params["data.fold"] == "0,1,2,3,4"


@pytest.mark.parametrize("option", options("debug"))
def test_debug_options_build_their_trainer(option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"debug={option}"], tmp_path)
    assert cfg.task_name == "debug" and cfg.data.num_workers == 0 and cfg.calibrate is False
    trainer = cpu_trainer(cfg, tmp_path)
    expected = EXPECTED[f"debug/{option}"]
    assert bool(trainer.fast_dev_run) == expected["fast_dev_run"]
    assert trainer.overfit_batches == expected["overfit_batches"] and trainer.max_epochs == expected["max_epochs"]
    assert cfg.test == expected["test"]
    if option == "overfit":
        assert list(cfg.data.train_augmentations) == [] and cfg.model.drop_rate == 0.0


def test_debug_wins_over_an_experiment(tmp_path: Path) -> None:
    cfg = compose_with(["experiment=best", "debug=overfit"], tmp_path)
    assert cfg.trainer.max_epochs == 30 and list(cfg.data.train_augmentations) == [] and cfg.model.scheduler == "none"
