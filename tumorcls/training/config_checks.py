"""Check the composed training config before anything expensive runs: a value of the wrong type or out of
its range (``data.batch_size=abc``, ``model.lr=-0.001``, ``data.size=7``, ``trainer.max_epochs=0``) is refused
in one line that names the key, instead of a traceback after the dataset has been decoded or, worse, a run
that silently trains nothing."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tumorcls.data.batch_augment import AUGMENT_ON, unsupported_augmentations
from tumorcls.data.preprocess import CROPS, INTENSITIES
from tumorcls.data.splits import PROTOCOLS
from tumorcls.errors import TumorclsError, first_line
from tumorcls.labels import NUM_CLASSES

MIN_IMAGE_SIZE = 32  # EfficientNet's five stride-2 stages leave 1x1 below this
MAX_IMAGE_SIZE = 2048
_MISSING = object()


class ConfigError(TumorclsError):
    """A config value of the wrong type or out of its range."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int, hi: int | None = None) -> tuple[str, Callable[[Any], bool]]:
    text = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return text, lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi)


def number(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> tuple[str, Callable]:
    if hi is None:
        text = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        text = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def ok(v: Any) -> bool:
        if not _is_number(v) or v < lo or (lo_open and v == lo):
            return False
        return hi is None or v < hi or (v == hi and not hi_open)

    return text, ok


def one_of(*choices: Any) -> tuple[str, Callable[[Any], bool]]:
    return f"one of {list(choices)}", lambda v: any(v == c and type(v) is type(c) for c in choices)


def optional(rule: tuple[str, Callable[[Any], bool]]) -> tuple[str, Callable[[Any], bool]]:
    text, ok = rule
    return f"null or {text}", lambda v: v is None or ok(v)


def either(*rules: tuple[str, Callable[[Any], bool]]) -> tuple[str, Callable[[Any], bool]]:
    return " or ".join(text for text, _ in rules), lambda v: any(ok(v) for _, ok in rules)


BOOL = ("true or false", lambda v: isinstance(v, bool))
NAME = ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
FRACTION = number(0.0, 1.0, lo_open=True, hi_open=True)
RATE = number(0.0, 1.0, hi_open=True)
THREE_FLOATS = ("a list of 3 numbers", lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_number, v)))

# key -> rule; keys absent from the config are skipped (a group may not define them)
RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "seed": optional(integer(0)),
    "train": BOOL,
    "test": BOOL,
    "calibrate": BOOL,
    "ckpt_path": optional(NAME),
    "data.root": NAME,
    "data.download": one_of("auto", True, False),
    "data.protocol": one_of(*PROTOCOLS),
    "data.size": integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    "data.batch_size": integer(1),
    "data.eval_batch_size": optional(integer(1)),
    "data.num_workers": either(one_of("auto"), integer(0)),
    "data.pin_memory": optional(BOOL),
    "data.augment_on": one_of(*AUGMENT_ON),
    "data.crop": one_of(*CROPS),
    "data.intensity": one_of(*INTENSITIES),
    "data.split_seed": integer(0),
    "data.test_fraction": FRACTION,
    "data.val_fraction": FRACTION,
    "data.near_dup_distance": optional(integer(0, 64)),
    "data.num_folds": optional(integer(2)),
    "data.fold": integer(0),
    "data.min_image_side": integer(1),
    "data.max_pixels": integer(1),
    "data.cache": BOOL,
    "data.cache_dir": optional(NAME),
    "data.cache_max_gb": number(0.0, lo_open=True),
    "data.mean": THREE_FLOATS,
    "data.std": ("a list of 3 positive numbers", lambda v: THREE_FLOATS[1](v) and all(s > 0 for s in v)),
    "model.backbone": NAME,
    "model.num_classes": one_of(NUM_CLASSES),
    "model.drop_rate": RATE,
    "model.pretrained": BOOL,
    "model.weights": optional(NAME),
    "model.optimizer": one_of("adam", "adamw", "sgd"),
    "model.lr": number(0.0, lo_open=True),
    "model.weight_decay": number(0.0),
    "model.scheduler": one_of("plateau", "cosine", "none"),
    "model.plateau_factor": FRACTION,
    "model.plateau_patience": integer(0),
    "model.min_lr": number(0.0),
    "model.warmup_epochs": integer(0),
    "model.label_smoothing": RATE,
    "model.backbone_lr_mult": number(0.0, 1.0),
    "model.freeze_backbone_epochs": integer(0),
    "model.cuda_graphs": one_of("auto", True, False),
    "trainer.max_epochs": integer(1),
}


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config: {key} cannot be read: {first_line(exc)}") from None
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError (one line, naming the key) for the first value out of its range."""
    for key, (expected, ok) in RULES.items():
        value = _value(cfg, key)
        if value is not _MISSING and not ok(value):
            raise ConfigError(f"config: {key} must be {expected}, got {value!r}")
    data = cfg.get("data") or {}
    _check_device_augmentation(cfg)
    fractions = [data.get(k) for k in ("test_fraction", "val_fraction")]
    if data.get("protocol") != "official" and all(map(_is_number, fractions)) and sum(fractions) >= 1:
        raise ConfigError(f"config: data.test_fraction + data.val_fraction must be < 1, got {sum(fractions):g}")


def _check_device_augmentation(cfg: DictConfig) -> None:
    """``data.augment_on=device`` runs only the transforms that data.batch_augment implements."""
    if _value(cfg, "data.augment_on") != "device":
        return
    augmentations = _value(cfg, "data.train_augmentations")
    if augmentations is _MISSING or augmentations is None:
        return
    try:
        reason = unsupported_augmentations(augmentations)
    except Exception as exc:  # a malformed entry: the data module would fail on it too
        raise ConfigError(f"config: data.train_augmentations cannot be built: {first_line(exc)}") from None
    if reason:
        raise ConfigError(f"config: data.augment_on=device: {reason}")
