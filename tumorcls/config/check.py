"""Check values against a schema dataclass: the one validation entry point of the training config
(tumorcls.training.config_checks), the data module and the classifier's settings built in Python, the split code and
the export. Each problem is one ConfigError line: ``config: unknown key 'data.sizee'; did you mean 'data.size'?``
or ``config: data.size must be an integer in [32, 2048], got 7``.

A schema is a frozen dataclass whose fields carry a default and a rule (tumorcls.config.rules); a field may be a
group of its own (``section``), a list or mapping of ``_target_`` nodes, or, in an ``OPEN`` schema (the trainer),
a key checked against the ``_target_``'s annotation; keys beyond the fields of an open schema are the target's
parameters. A schema's ``RELATIONS`` check keys together (the split fractions, the folds).

Why stdlib dataclasses rather than Hydra structured configs or pydantic: OmegaConf's typed nodes know no ranges,
no Literal choices and no unions such as ``auto | int`` (num_workers, download, cuda_graphs), so a second checker
would still be needed, and their errors surface inside Hydra's composition (a multi-line report, exit 1) before
any of our code runs; registering them in the ConfigStore would also put a schema entry in every YAML defaults
list. pydantic is only in the serve extra: a core dependency and ~0.1 s of import for what ~150 lines do here,
with its own error texts to translate. A dataclass also serves the Python API as it is: its instance is the
defaults (``DataConfig().size``), which TumorDataModule and the model settings take as theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from tumorcls.config import targets
from tumorcls.config.rules import (
    NAME,
    ByAnnotation,
    ConfigError,
    NamedTargets,
    Rule,
    TargetList,
    must_be,
    unknown_key,
)
from tumorcls.errors import first_line

UNREADABLE = object()  # an interpolation only a running Hydra job resolves (``${hydra:runtime.output_dir}``)


def fields_of(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


def defaults_of(schema: type) -> dict[str, Any]:
    """Each field's default (a group's as its schema's defaults)."""
    return {name: getattr(schema(), name) for name in fields_of(schema)}


def closed_keys(schema: type, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the closed groups under ``schema`` (for suggestions across groups)."""
    for name, f in fields_of(schema).items():
        key = f"{prefix}.{name}" if prefix else name
        yield key
        if "section" in f.metadata:
            yield from closed_keys(f.metadata["section"], key)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _open_target(schema: type, values: Mapping[str, Any], prefix: str) -> Any:
    """The ``_target_`` of an open schema's node, imported (its signature gives the node's other keys)."""
    if not getattr(schema, "OPEN", False):
        return None
    path = values.get("_target_", fields_of(schema)["_target_"].default)
    return targets.locate(path, prefix) if path is not UNREADABLE else None


def _check_field(f: dataclasses.Field, value: Any, where: str, target: Any, everywhere: tuple[str, ...]) -> None:
    if value is UNREADABLE:
        return
    if "section" in f.metadata:
        if not isinstance(value, Mapping):
            raise must_be(where, f"a mapping of the {where} group's keys", value)
        check_section(f.metadata["section"], value, where, everywhere=everywhere)
        return
    rule = f.metadata["rule"]
    if isinstance(rule, Rule) and not rule.accepts(value):
        raise must_be(where, rule.text, value)
    if isinstance(rule, TargetList):
        targets.check_target_list(value, where)
    elif isinstance(rule, NamedTargets):
        targets.check_named_targets(value, where)
    elif isinstance(rule, ByAnnotation) and target is not None:
        targets.check_annotation(target, f.name, value, where, rule.also)


def _check_open_key(schema: type, target: Any, key: str, value: Any, where: str, everywhere: tuple[str, ...]) -> None:
    """A key beyond the fields: refused unless the schema is open and ``key`` is its target's parameter."""
    reserved = getattr(schema, "RESERVED", {})
    if key in reserved:
        raise must_be(where, f"left unset ({reserved[key]})", value)
    params = targets.parameters(target) if target is not None else {}
    if not getattr(schema, "OPEN", False) or (params is not None and key not in params):
        raise unknown_key(where, [*fields_of(schema), *(params or ())], everywhere)
    if value is not UNREADABLE:
        targets.check_annotation(target, key, value, where)


def check_section(
    schema: type,
    values: Mapping[str, Any],
    prefix: str = "",
    skip: tuple[str, ...] = (),
    everywhere: tuple[str, ...] | None = None,
) -> None:
    """Raise ConfigError (one line) for the first unknown key or bad value of ``values`` (plain, resolved:
    see :func:`plain_values`), whose keys sit under ``prefix``; keys in ``skip`` are checked elsewhere. Keys
    ``values`` lacks are not checked (they take their defaults)."""
    everywhere = tuple(closed_keys(schema, prefix)) if everywhere is None else everywhere
    known = fields_of(schema)
    if "_target_" in values and "_target_" in known and not NAME.accepts(values["_target_"]):
        raise must_be(_join(prefix, "_target_"), NAME.text, values["_target_"])
    target = _open_target(schema, values, prefix)
    for key, value in values.items():
        if key in skip:
            continue
        where = _join(prefix, str(key))
        if key in known:
            _check_field(known[key], value, where, target, everywhere)
        else:
            _check_open_key(schema, target, str(key), value, where, everywhere)
    merged = {**defaults_of(schema), **values}
    for relation in getattr(schema, "RELATIONS", ()):
        message = relation(merged, f"{prefix}." if prefix else "")
        if message:
            raise ConfigError(message)


def check_settings(settings: Any, schema: type, prefix: str) -> None:
    """A settings dataclass built in Python (``OptimizerSettings("lamb")``) against the schema of its keys; a
    field's ``key`` metadata names its config key when the names differ (``name`` -> ``optimizer``)."""
    known = fields_of(schema)
    values = {}
    for f in dataclasses.fields(settings):
        key = f.metadata.get("key", f.name)
        if key in known:
            values[key] = getattr(settings, f.name)
    check_section(schema, values, prefix)


def _inside_hydra_job() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def _child(node: DictConfig | ListConfig, key: Any, where: str) -> Any:
    try:
        value = node[key]
    except InterpolationResolutionError as exc:
        if not _inside_hydra_job():  # composed by the compose API (tests, tools): ${hydra:...} is not set
            return UNREADABLE
        raise ConfigError(f"config: {where} cannot be read: {first_line(exc)}") from None
    except OmegaConfBaseException as exc:  # ??? (a missing mandatory value), a bad interpolation
        raise ConfigError(f"config: {where} cannot be read: {first_line(exc)}") from None
    return plain_values(value, where)


def plain_values(node: Any, where: str = "", skip: tuple[str, ...] = ()) -> Any:
    """A composed config as plain dicts and lists, each interpolation resolved (keys in ``skip`` left out); one
    line naming the key whose value cannot be read."""
    if isinstance(node, DictConfig):
        return {str(key): _child(node, key, _join(where, str(key))) for key in node if key not in skip}
    if isinstance(node, ListConfig):
        return [_child(node, i, _join(where, str(i))) for i in range(len(node))]
    return node
