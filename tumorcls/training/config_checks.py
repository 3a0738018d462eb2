"""Check the composed training config against the schema (tumorcls.config) before anything expensive runs: an
unknown or misspelt key (``config: unknown key 'data.sizee'; did you mean 'data.size'?``), a value of the wrong
type or out of its range (``config: data.size must be an integer in [32, 2048], got 7``), a ``_target_`` that
cannot be imported or a key its signature does not take are refused in one line that names the key, before the
run folder is locked, the dataset looked at or an image decoded.

The data group goes through the data stage's own entry point (tumorcls.data.config_check), the one
TumorDataModule uses when built in Python; Hydra's own ``hydra`` node is Hydra's to check. The command line is
checked earlier still, before Hydra composes (tumorcls.config.command_line)."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from tumorcls.config.check import check_section, closed_keys, plain_values
from tumorcls.config.rules import ConfigError, must_be
from tumorcls.config.train import TrainConfig
from tumorcls.data.config_check import check_data_settings

__all__ = ["ConfigError", "check_config", "check_values"]

# their keys are the parameters of a _target_ (Lightning's Trainer, each callback's and logger's class): checking
# them imports it, and with it torch and Lightning
OPEN_GROUPS = ("trainer", "callbacks", "logger")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError (one line, naming the key) for the first key or value the schema refuses."""
    _check(cfg, targets=True)


def check_values(cfg: DictConfig) -> None:
    """check_config without what needs an import: every key of the closed groups (data, model, paths) and of
    train.yaml, and the rules that tie keys together, but not the open groups' keys nor ``_target_`` nodes.
    train.py runs it before torch and Lightning load, so a bad value is refused in about a second."""
    _check(cfg, targets=False)


def _check(cfg: DictConfig, targets: bool) -> None:
    values = plain_values(cfg, skip=("hydra",))  # Hydra's own node (with return_hydra_config) is Hydra's
    check_section(TrainConfig, values, skip=("data",) if targets else ("data", *OPEN_GROUPS))
    data = values.get("data")
    if data is not None:
        if not isinstance(data, Mapping):
            raise must_be("data", "a mapping of the data group's keys", data)
        check_data_settings(data, everywhere=tuple(closed_keys(TrainConfig)), targets=targets)
