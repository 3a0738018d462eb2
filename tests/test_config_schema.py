"""The one config schema (tumorcls.config): every shipped config passes it, its keys and defaults are the YAML's,
its choices are those the code knows, and each kind of bad key or value is refused in one line before any work,
on the command line (before Hydra composes), after composition (``+key=``, a YAML file) and from the Python API."""

from __future__ import annotations

import dataclasses
import inspect
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from tests.helpers.paths import CONF, REPO
from tests.helpers.refusals import assert_script_refused
from tests.helpers.train_runs import compose_export, compose_train
from tumorcls.config.check import fields_of, plain_values
from tumorcls.config.command_line import bad_override, shipped_configs
from tumorcls.config.data import DataConfig
from tumorcls.config.export import ExportConfig, check_export_config
from tumorcls.config.model import ModelConfig
from tumorcls.config.rules import ByAnnotation, ConfigError, NamedTargets, Rule, TargetList
from tumorcls.config.train import PathsConfig, TrainConfig, TrainerConfig
from tumorcls.training.config_checks import check_config

ENV_DEFAULTS = ("TUMORCLS_DATA", "TUMORCLS_WEIGHTS", "TUMORCLS_CACHE")  # the YAML's ${oc.env:...} fall back without


def refusal(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        check_config(compose_train(overrides))
    assert "\n" not in str(info.value)
    return str(info.value)


# ------------------------------------------------------------------------- every config composes and passes


OPTIONS = [f"{g}={p.stem}" for g in ("data", "model", "trainer", "callbacks", "logger", "experiment", "debug")
           for p in sorted((CONF / g).glob("*.yaml"))]  # fmt: skip
COMBINATIONS = [["experiment=shift", "debug=overfit"], ["experiment=tutorial", "trainer=ddp", "logger=many"]]


@pytest.mark.parametrize("overrides", [[o] for o in OPTIONS] + COMBINATIONS, ids=str)
def test_every_shipped_config_composes_and_passes_the_schema(overrides: list[str]) -> None:
    check_config(compose_train(overrides))
    assert bad_override(overrides, "train", CONF) is None


@pytest.mark.parametrize("search", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_every_search_passes_the_schema_and_sweeps_keys_it_has(search: str) -> None:
    cfg = compose_train([f"hparams_search={search}"], hydra=True)
    check_config(cfg)  # the hydra node is Hydra's
    for key in cfg.hydra.sweeper.params:  # each swept key, as the sweeper hands it to a trial
        assert bad_override([f"{key}=1"], "train", CONF) is None, key


def test_the_export_config_passes_its_schema() -> None:
    check_export_config(plain_values(compose_export([])))
    check_export_config(plain_values(compose_export(["ckpt=[a.ckpt,b.ckpt]", "format=onnx_int8", "images=x"])))


# ---------------------------------------------------------------------- one place a default lives besides YAML


def _yaml_value(node: DictConfig, key: str) -> Any:
    """A key's YAML value: ``${oc.env:VAR,default}`` resolved (the variable unset), a reference to another key
    (``${paths.output_dir}``) as written."""
    raw = OmegaConf.to_container(node, resolve=False)[key]
    if isinstance(raw, str) and "${" in raw and "oc.env" not in raw:
        return raw
    return plain_values(node)[key]


def _leaf_fields(schema: type) -> list[str]:
    """The fields whose value the schema defines: not a group, not open content (the callbacks' nodes, the
    augmentation policy), which the YAML alone gives."""
    return [n for n, f in fields_of(schema).items() if isinstance(f.metadata.get("rule"), Rule | ByAnnotation)]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        ("", TrainConfig),
        ("data", DataConfig),
        ("model", ModelConfig),
        ("paths", PathsConfig),
        ("trainer", TrainerConfig),
    ],
)
def test_the_default_yaml_and_the_schema_have_the_same_keys_and_defaults(
    path: str, schema: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ENV_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    cfg = compose_train([])
    node = OmegaConf.select(cfg, path) if path else cfg
    assert set(node) == set(fields_of(schema))  # every YAML key is in the schema, every schema key in the YAML
    defaults = schema()
    leaves = _leaf_fields(schema)
    assert leaves and all(_yaml_value(node, key) == _plain(getattr(defaults, key)) for key in leaves), [
        (key, _yaml_value(node, key), getattr(defaults, key))
        for key in leaves
        if _yaml_value(node, key) != _plain(getattr(defaults, key))
    ]


def test_export_yaml_and_its_schema_have_the_same_keys_and_defaults() -> None:
    cfg = compose_export([])
    assert set(cfg) == set(fields_of(ExportConfig))
    assert plain_values(cfg) == {k: _plain(v) for k, v in dataclasses.asdict(ExportConfig()).items()}


def test_every_key_of_every_yaml_is_in_the_schema() -> None:
    """Each group file's keys, the option files' included (a key only ddp.yaml sets is a Trainer parameter)."""
    shipped = shipped_configs(CONF)
    keys = [f"{node}.{key}" for node, children in shipped.keys.items() for key in children if node]
    keys += [key for key in shipped.keys[""] if key not in ("hydra",)]
    for key in keys:
        assert bad_override([f"{key}=1"], "train", CONF) is None, key


def test_the_data_module_and_the_model_settings_take_the_schema_defaults() -> None:
    from tumorcls.data.datamodule import TumorDataModule
    from tumorcls.models.optim import OptimizerSettings, SchedulerSettings
    from tumorcls.models.settings import InputContract, RecipeSettings, RuntimeSettings

    data = DataConfig()
    params = inspect.signature(TumorDataModule.__init__).parameters
    taken = {n for n in params if n in fields_of(DataConfig)}
    assert taken == set(fields_of(DataConfig)) - {"_target_", "download"}  # download is train.py's
    assert all(params[n].default == getattr(data, n) for n in taken)
    model = ModelConfig()
    assert OptimizerSettings() == OptimizerSettings(
        model.optimizer, model.lr, model.weight_decay, model.backbone_lr_mult
    )
    assert SchedulerSettings().name == model.scheduler and SchedulerSettings().min_lr == model.min_lr
    assert RecipeSettings().label_smoothing == model.label_smoothing
    assert RuntimeSettings().channels_last is model.channels_last is True
    assert (InputContract().input_size, InputContract().crop) == (data.size, data.crop)


def test_the_choices_and_limits_are_those_the_code_knows() -> None:
    import torch._inductor

    from tumorcls.config import data as data_schema
    from tumorcls.config import export as export_schema
    from tumorcls.config.model import COMPILE_MODES
    from tumorcls.data import batch_augment, decode, download, transforms
    from tumorcls.export import int8, targets, to_onnx

    assert set(data_schema.INTERPOLATIONS) == set(decode._INTERPOLATIONS)  # each one a cv2 flag the decoder has
    assert data_schema.AUGMENT_ON == batch_augment.AUGMENT_ON
    assert (data_schema.IMAGENET_MEAN, data_schema.IMAGENET_STD) == (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
    assert DataConfig().max_pixels == decode.DEFAULT_MAX_PIXELS
    assert Path(DataConfig().root) == download.DEFAULT_DATA_ROOT
    assert set(COMPILE_MODES) <= set(torch._inductor.list_mode_options())
    assert (*targets.FORMATS, "all") == export_schema.FORMATS and export_schema.MIN_OPSET == to_onnx.MIN_OPSET
    assert export_schema.MIN_INT8_CHECK_IMAGES == int8.MIN_CHECK_IMAGES
    assert (ExportConfig().n_int8_check, ExportConfig().int8_min_agreement) == (
        int8.DEFAULT_CHECK_IMAGES,
        int8.DEFAULT_MIN_AGREEMENT,
    )


def test_every_field_has_a_rule_its_default_passes() -> None:
    for schema in (TrainConfig, DataConfig, ModelConfig, PathsConfig, TrainerConfig, ExportConfig):
        for name, f in fields_of(schema).items():
            rule = f.metadata.get("rule")
            assert "section" in f.metadata or rule is not None, f"{schema.__name__}.{name}"
            if isinstance(rule, Rule):
                assert rule.accepts(getattr(schema(), name)), f"{schema.__name__}.{name}"
            assert f.metadata.get("doc"), f"{schema.__name__}.{name} says what it is for"
    assert isinstance(fields_of(DataConfig)["train_augmentations"].metadata["rule"], TargetList)
    assert isinstance(fields_of(TrainConfig)["callbacks"].metadata["rule"], NamedTargets)


# ----------------------------------------------------------------- bad values, in one line, before any work


BAD_VALUES = {
    "data.interpolation=foo": "config: data.interpolation must be one of ['linear', 'area', 'cubic', 'nearest'], "
    "got 'foo'",
    "model.compile_mode=bogus": "config: model.compile_mode must be null or one of ['default', 'reduce-overhead', "
    "'max-autotune', 'max-autotune-no-cudagraphs'], got 'bogus'",
    "+data.sizee=64": "config: unknown key 'data.sizee'; did you mean 'data.size'?",
    "+data.lr=0.1": "config: unknown key 'data.lr'; did you mean 'model.lr'?",
    "+seedd=1": "config: unknown key 'seedd'; did you mean 'seed'?",
    "+trainer.max_epoch=3": "config: unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?",
    "+trainer.fast_dev_run=yes": "config: trainer.fast_dev_run must be an integer or true or false, got 'yes'",
    "trainer.devices=1.5": "config: trainer.devices must be a list of integers or a string or an integer, got 1.5",
    "+trainer.logger=false": "config: trainer.logger must be left unset (train.py passes the logger group), got False",
    "trainer.max_epochs=0": "config: trainer.max_epochs must be an integer >= 1, got 0",
    "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping": "config: callbacks.stop.monitor must be "
    "set (required by lightning.pytorch.callbacks.EarlyStopping), got nothing",
    "+callbacks.x._target_=nowhere.Missing": "config: callbacks.x._target_ must be an importable class or function, "
    "got 'nowhere.Missing' (No module named 'nowhere')",
    "+callbacks.model_checkpoint.monitr=x": "config: unknown key 'callbacks.model_checkpoint.monitr'; "
    "did you mean 'callbacks.model_checkpoint.monitor'?",
    "+data.train_augmentations.0.pp=1": "config: unknown key 'data.train_augmentations.0.pp'; "
    "did you mean 'data.train_augmentations.0.p'?",
    "data.protocol=grouped data.num_folds=3 data.fold=3": "config: data.fold must be an integer in [0, 2] "
    "(data.num_folds=3), got 3",
    "data.num_folds=3": "config: data.num_folds must be null for data.protocol='official' (k-fold cross-validation "
    "needs data.protocol=grouped), got 3",
}


@pytest.mark.parametrize(("override", "line"), BAD_VALUES.items(), ids=list(BAD_VALUES))
def test_a_bad_key_or_value_is_one_line_naming_it(override: str, line: str) -> None:
    assert refusal(override.split()) == line


def test_a_nested_augmentation_key_is_checked() -> None:
    line = refusal(["data=shift_augment", "+data.train_augmentations.2.transforms.0.clip_limt=2"])
    assert line == (
        "config: unknown key 'data.train_augmentations.2.transforms.0.clip_limt'; "
        "did you mean 'data.train_augmentations.2.transforms.0.clip_limit'?"
    )


def test_a_misspelt_key_in_a_yaml_file_is_refused_after_composition(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    data = conf / "data" / "default.yaml"
    data.write_text(data.read_text() + "batch_sise: 16\n")
    with pytest.raises(ConfigError, match=r"^config: unknown key 'data.batch_sise'; did you mean 'data.batch_size'\?$"):
        check_config(compose_train([], conf=conf))


def test_the_check_runs_before_the_run_folder_lock_and_the_dataset(tmp_path: Path) -> None:
    from tumorcls.run_layout import RunLayout
    from tumorcls.training.run import run

    cfg = compose_train(["data.interpolation=foo", f"data.root={tmp_path / 'nowhere'}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="^config: data.interpolation must be one of"):
        run(cfg, tmp_path / "run")  # not the DatasetError of the missing root
    assert not RunLayout(tmp_path / "run").lock_file.exists()


def test_the_python_api_refuses_the_same_values_in_the_same_line(synthetic_root: Path) -> None:
    from tumorcls.data.datamodule import TumorDataModule
    from tumorcls.data.splits import make_splits
    from tumorcls.export.run import export_checkpoint
    from tumorcls.models.lit_module import TumorClassifier

    with pytest.raises(ConfigError, match=r"^config: data.interpolation must be one of \['linear'"):
        TumorDataModule(synthetic_root, interpolation="foo")
    with pytest.raises(ConfigError, match=r"^config: unknown key 'data.train_augmentations.0.pp'; did you mean"):
        TumorDataModule(synthetic_root, train_augmentations=[{"_target_": "albumentations.HorizontalFlip", "pp": 1}])
    with pytest.raises(ConfigError, match=r"^config: model.compile_mode must be null or one of \['default'"):
        TumorClassifier(backbone="test_efficientnet", compile_mode="bogus")
    with pytest.raises(ConfigError, match=r"^config: data.fold must be an integer in \[0, 4\] \(data.num_folds=5\)"):
        make_splits("grouped", [0, 1], ["Training"] * 2, groups=[0, 1], num_folds=5, fold=5)
    with pytest.raises(ConfigError, match=r"^config: format must be one of \['onnx', 'keras', 'onnx_int8', 'all'\]"):
        export_checkpoint(None, "tflite")  # the options first: no checkpoint is looked for


# ------------------------------------------------------------------------------------------ the command line


MISSPELT_ON_THE_COMMAND_LINE = [
    (["data.sizee=64"], "config: unknown key 'data.sizee'; did you mean 'data.size'?"),
    (["-m", "data.size=32,64", "model.lrr=1e-3,3e-4"], "config: unknown key 'model.lrr'; did you mean 'model.lr'?"),
    (["data=strong_augmnt"], "config: unknown option 'data=strong_augmnt'; did you mean 'data=strong_augment'?"),
    (["paths.log_dirr=x"], "config: unknown key 'paths.log_dirr'; did you mean 'paths.log_dir'?"),
    (["trainer.max_epoch=3"], "config: unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?"),
    (
        ["callbacks.earl_stopping.patience=3"],
        "config: unknown key 'callbacks.earl_stopping'; did you mean 'callbacks.early_stopping'?",
    ),
    (
        ["callbacks=early_stopping", "callbacks.early_stopping.patiense=3"],
        "config: unknown key 'callbacks.early_stopping.patiense'; did you mean 'callbacks.early_stopping.patience'?",
    ),
    (  # a parameter of the Trainer that no shipped YAML sets: Hydra wants a plus
        ["trainer.limit_train_batches=5"],
        "config: no config in conf/ sets 'trainer.limit_train_batches'; add it with a plus: "
        "'+trainer.limit_train_batches=...'",
    ),
    (
        ["callbacks=ema", "callbacks.ema.update_every_n_steps=2"],
        "config: no config in conf/ sets 'callbacks.ema.update_every_n_steps'; add it with a plus: "
        "'+callbacks.ema.update_every_n_steps=...'",
    ),
    (
        ["+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping", "+callbacks.stop.monitr=x"],
        "config: unknown key 'callbacks.stop.monitr'; did you mean 'callbacks.stop.monitor'?",
    ),
]


@pytest.mark.parametrize(("overrides", "line"), MISSPELT_ON_THE_COMMAND_LINE, ids=lambda v: str(v)[:60])
def test_a_misspelt_command_line_key_is_found_before_hydra_composes(overrides: list[str], line: str) -> None:
    from hydra._internal.utils import get_args_parser

    assert bad_override(get_args_parser().parse_known_args(overrides)[0].overrides, "train", CONF) == line


def test_valid_command_lines_pass_and_hydra_keys_are_hydras() -> None:
    fine = ["data.size=64", "+trainer.enable_progress_bar=false", "+trainer.limit_train_batches=5"]
    fine += ["trainer.strategy=ddp", "callbacks.ema.decay=0.9"]
    fine += ["~callbacks.progress_bar", "experiment=null", "hydra.run.dir=x", "hydra/launcher=slurm", "seed=1,2"]
    fine += ["model.lr=interval(1e-4,1e-3)", "data.train_augmentations.0.p=0.2", "+callbacks.new._target_=x.Y"]
    assert bad_override(fine, "train", CONF) is None
    assert bad_override(["fromat=onnx"], "export", CONF) == "config: unknown key 'fromat'; did you mean 'format'?"
    assert bad_override(["ckpt=a.ckpt", "format=onnx", "hydra.run.dir=."], "export", CONF) is None


def test_the_command_line_check_loads_neither_torch_nor_lightning_for_common_keys() -> None:
    script = (
        "import sys; from pathlib import Path; from tumorcls.config.command_line import bad_override;"
        "assert bad_override(['data.sizee=1'], 'train', Path('conf'));"
        "assert bad_override(['data=strong_augment', 'model.lr=1e-4', 'trainer.max_epochs=2', 'trainer.devices=2',"
        " 'callbacks.ema.decay=0.9', '+trainer.fast_dev_run=true'], 'train', Path('conf')) is None;"
        "print(sorted(m for m in ('torch', 'lightning', 'albumentations', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_train_py_refuses_a_misspelt_key_in_one_line_before_hydra_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", "data.sizee=64", f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = assert_script_refused(proc, "config: unknown key 'data.sizee'; did you mean 'data.size'?")
    assert line == "error: config: unknown key 'data.sizee'; did you mean 'data.size'?"
    assert not run_dir.exists()  # refused before Hydra made the run folder
