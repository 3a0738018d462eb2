"""The open groups: a ``_target_`` node's keys are the parameters of what it names (a callback's, a logger's,
an albumentations transform's, Lightning's Trainer's). Here a node's ``_target_`` must be importable, each key
a parameter of its signature (a target taking ``**kwargs`` takes any key), its required parameters given, and
nested nodes (``OneOf.transforms``) the same. Importing a target loads its library: this runs after composition,
where the run loads it anyway; the command-line check calls it only for a key the shipped configs lack."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from tumorcls.config.annotations import describe, fits
from tumorcls.config.rules import NAME, ConfigError, must_be, unknown_key

HYDRA_KEYS = frozenset({"_target_", "_args_", "_partial_", "_convert_", "_recursive_"})
_NO_ANNOTATION = object()


def _reason(exc: BaseException) -> str:
    """The innermost cause's message as one line (Hydra's span several and end in a ``full_key:`` line)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("full_key:")]
    return " ".join(lines)[:200] or type(exc).__name__


def locate(path: Any, where: str) -> Any:
    """The class or function ``path`` names (``where`` names the node in the error line), found as
    ``hydra.utils.instantiate`` finds it, under the same rules for which targets may be loaded."""
    if not NAME.accepts(path):
        raise must_be(f"{where}._target_", "an importable class or function", path)
    from hydra._internal.instantiate._instantiate2 import _resolve_target

    try:
        return _resolve_target(str(path), f"{where}._target_")
    except Exception as exc:  # not importable, not allowed, not callable, or its module failed to import
        reason = _reason(exc)
        raise ConfigError(
            f"config: {where}._target_ must be an importable class or function, got {str(path)!r} ({reason})"
        ) from None


@functools.cache
def parameters(target: Any) -> Mapping[str, inspect.Parameter] | None:
    """The keyword parameters ``target`` takes, or None when it takes any (``**kwargs``) or has no signature."""
    try:
        found = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in found.values()):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p for name, p in found.items() if p.kind in keyword and name != "self"}


@functools.cache
def _hints(target: Any) -> Mapping[str, Any]:
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolvable forward references: nothing to check against
        return {}


def check_annotation(target: Any, key: str, value: Any, where: str, also: tuple[Any, ...] = ()) -> None:
    """``value`` fits ``target``'s annotation of parameter ``key`` (or is one of ``also``); one line else."""
    if any(value == a and type(value) is type(a) for a in also):
        return
    annotation = _hints(target).get(key, _NO_ANNOTATION)
    if annotation is not _NO_ANNOTATION and not fits(annotation, value):
        raise must_be(where, describe(annotation, also), value)


def _check_required(node: Mapping[str, Any], params: Mapping[str, inspect.Parameter], where: str) -> None:
    if node.get("_partial_") or "_args_" in node:
        return
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in node:
            raise ConfigError(f"config: {where}.{name} must be set (required by {node['_target_']}), got nothing")


def _check_nested(value: Any, where: str) -> None:
    """Nodes inside a node's arguments (``OneOf.transforms``) are nodes of their own."""
    if isinstance(value, Mapping) and "_target_" in value:
        check_target_node(value, where)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, item in enumerate(value):
            if isinstance(item, Mapping) and "_target_" in item:
                check_target_node(item, f"{where}.{i}")


def check_target_node(node: Any, where: str) -> None:
    """One ``_target_`` node: importable, every key a parameter, the required ones given."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise must_be(where, "a _target_ node", node)
    params = parameters(locate(node["_target_"], where))
    for key, value in node.items():
        if key in HYDRA_KEYS:
            continue
        if params is not None and key not in params:
            raise unknown_key(f"{where}.{key}", params)
        _check_nested(value, f"{where}.{key}")
    if params is not None:
        _check_required(node, params, where)


def check_target_list(value: Any, where: str) -> None:
    """A list of ``_target_`` nodes (objects already built, from the Python API, pass as they are)."""
    if not isinstance(value, list | tuple):
        raise must_be(where, "a list of _target_ nodes", value)
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            check_target_node(item, f"{where}.{i}")
        elif item is None or isinstance(item, str | int | float | bool | list | tuple):
            raise must_be(f"{where}.{i}", "a _target_ node", item)


def check_named_targets(value: Any, where: str) -> None:
    """A mapping of names to ``_target_`` nodes; null switches a name off."""
    if not isinstance(value, Mapping):
        raise must_be(where, "a mapping of names to _target_ nodes or null", value)
    for name, node in value.items():
        if node is not None:
            if not isinstance(node, Mapping) or "_target_" not in node:
                raise must_be(f"{where}.{name}", "null or a _target_ node", node)
            check_target_node(node, f"{where}.{name}")
