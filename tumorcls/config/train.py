"""The schema of train.py's config (conf/train.yaml and the groups it composes). data, model and paths are closed
groups: their keys are the fields below. trainer, callbacks and logger are open: their keys are the parameters of
a ``_target_`` (Lightning's Trainer; each callback's and logger's class), checked against its signature.
experiment, hparams_search and debug only set keys of the others; ``hydra`` is Hydra's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tumorcls.config.data import DataConfig
from tumorcls.config.model import ModelConfig
from tumorcls.config.rules import (
    BOOL,
    NAME,
    ByAnnotation,
    NamedTargets,
    integer,
    option,
    optional,
    section,
)

GROUPS = ("data", "model", "trainer", "callbacks", "logger", "paths", "experiment", "hparams_search", "debug")


@dataclass(frozen=True)
class PathsConfig:
    """conf/paths: where runs go."""

    log_dir: str = option("logs", NAME, "runs go under <log_dir>/<task_name>/")
    output_dir: str = option("${hydra:runtime.output_dir}", NAME, "this job's run folder")


@dataclass(frozen=True)
class TrainerConfig:
    """conf/trainer: keyword arguments of Lightning's Trainer. Any parameter of the ``_target_`` is a key, its
    value checked against the parameter's annotation where that is cheap (int, float, bool, str, Literal, lists);
    the fields below are the keys conf/trainer/default.yaml sets, some with the project's own rules."""

    OPEN: ClassVar[bool] = True  # more keys: the parameters of _target_
    RESERVED: ClassVar[dict[str, str]] = {
        "callbacks": "train.py passes the callbacks group",
        "logger": "train.py passes the logger group",
        "plugins": "train.py passes its atomic checkpoint writer",
    }

    _target_: str = option("lightning.pytorch.trainer.Trainer", NAME, "the Trainer class")
    default_root_dir: str = option("${paths.output_dir}", ByAnnotation(), "Lightning's own files")
    max_epochs: int = option(12, integer(1), "epochs")
    accelerator: str = option("auto", ByAnnotation(), "auto | cpu | gpu | ...")
    devices: Any = option(1, ByAnnotation(), "devices of this node")
    precision: Any = option("auto", ByAnnotation(also=("auto",)), "auto: bf16-mixed on CUDA, 32-true elsewhere")
    check_val_every_n_epoch: int = option(1, ByAnnotation(), "validate every n epochs")
    log_every_n_steps: int = option(10, ByAnnotation(), "log every n steps")
    deterministic: bool = option(False, ByAnnotation(), "deterministic algorithms")
    benchmark: bool | None = option(None, ByAnnotation(), "cuDNN autotuning; null: off")


@dataclass(frozen=True)
class TrainConfig:
    """conf/train.yaml's own keys and its groups."""

    task_name: str = option("train", NAME, "runs go under logs/<task_name>/")
    seed: int | None = option(42, optional(integer(0)), "seed of everything; null: unseeded")
    ckpt_path: str | None = option(None, optional(NAME), "resume: a .ckpt, or last")
    train: bool = option(True, BOOL, "fit")
    calibrate: bool = option(True, BOOL, "fit a softmax temperature on the val split")
    test: bool = option(True, BOOL, "test the kept checkpoint")
    optimized_metric: str | None = option("val/acc", optional(NAME), "what train.py returns to sweepers")
    data: DataConfig = section(DataConfig, "conf/data")
    model: ModelConfig = section(ModelConfig, "conf/model")
    trainer: TrainerConfig = section(TrainerConfig, "conf/trainer")
    callbacks: dict[str, Any] = option({}, NamedTargets(), "conf/callbacks: name -> _target_ node or null")
    logger: dict[str, Any] = option({}, NamedTargets(), "conf/logger: name -> _target_ node or null")
    paths: PathsConfig = section(PathsConfig, "conf/paths")
