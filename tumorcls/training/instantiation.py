"""``hydra.utils.instantiate`` with the project's error style: a failure inside a config's ``_target_`` (an
unknown backbone, a bad augmentation, a class that is not there) reaches the user as one line, not wrapped in
Hydra's "Error in call to target" lines; a TumorclsError raised inside surfaces as itself."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tumorcls.errors import TumorclsError, first_line
from tumorcls.training.config_checks import ConfigError


def _one_line(exc: BaseException) -> str:
    """The message's first line, joined with the next when it ends in a colon (Hydra's "Error loading 'x':")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text[:300]


def unwrap_instantiation_error(exc: InstantiationException, what: str) -> TumorclsError:
    """The error to show for ``exc``: the TumorclsError inside it, else ConfigError naming ``what``."""
    cause: BaseException = exc
    while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
        cause = cause.__cause__  # nested nodes (an augmentation inside the data module) wrap once per level
    if isinstance(cause, TumorclsError):
        return cause
    if isinstance(cause, InstantiationException):  # Hydra's own: a _target_ that cannot be located
        return ConfigError(f"cannot build {what}: {_one_line(cause)}")
    return ConfigError(f"cannot build {what}: {type(cause).__name__}: {_one_line(cause)}")


def instantiate_node(node: Any, what: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; ``what`` names the node in the error line (e.g. "the model")."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        raise unwrap_instantiation_error(exc, what) from None
    except OmegaConfBaseException as exc:  # an interpolation that cannot be resolved, a missing value
        raise ConfigError(f"cannot build {what}: {first_line(exc)}") from None


def instantiate_group(group: DictConfig | None, kind: str) -> list[Any]:
    """Every entry of a config group that has a ``_target_`` (null entries switch one off)."""
    if not group:
        return []
    return [
        instantiate_node(node, f"{kind} '{name}'")
        for name, node in group.items()
        if isinstance(node, DictConfig) and "_target_" in node
    ]
