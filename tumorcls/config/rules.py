"""What a config key may hold, said once for the checker and once for the user: a :class:`Rule` is a predicate and
the words of the error line (``config: data.size must be an integer in [32, 2048], got 7``); :func:`option` puts a
rule and its default on a schema dataclass field. The open kinds of value (``_target_`` nodes) are markers that
tumorcls.config.check hands to tumorcls.config.targets."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tumorcls.errors import TumorclsError


class ConfigError(TumorclsError, ValueError):
    """A config key that does not exist, or a value of the wrong type or out of its range (one line)."""


@dataclass(frozen=True)
class Rule:
    """``text`` completes "must be ..."; ``accepts`` says whether a (resolved, plain) value fits."""

    text: str
    accepts: Callable[[Any], bool]


@dataclass(frozen=True)
class TargetList:
    """A list of ``_target_`` nodes (``data.train_augmentations``): each importable, its keys its parameters."""

    text: str = "a list of _target_ nodes"


@dataclass(frozen=True)
class NamedTargets:
    """A mapping of names to ``_target_`` nodes or null (the callbacks and logger groups)."""

    text: str = "a mapping of names to _target_ nodes or null"


@dataclass(frozen=True)
class ByAnnotation:
    """A key of an open group checked against its ``_target_``'s annotation; ``also`` lists further values the
    project accepts and resolves itself (``trainer.precision: auto``)."""

    also: tuple[Any, ...] = ()


def option(default: Any, rule: Rule | TargetList | NamedTargets | ByAnnotation, doc: str = "") -> Any:
    """A schema field: its default (as the YAML's), its rule and a line saying what it is for."""
    meta = {"rule": rule, "doc": doc}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(schema: type, doc: str = "") -> Any:
    """A schema field that is a config group of its own (``data``, ``model``...)."""
    return field(default_factory=schema, metadata={"section": schema, "doc": doc})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int, hi: int | None = None) -> Rule:
    text = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return Rule(text, lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi))


def number(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Rule:
    if hi is None:
        text = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        text = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def ok(v: Any) -> bool:
        if not _is_number(v) or v < lo or (lo_open and v == lo):
            return False
        return hi is None or v < hi or (v == hi and not hi_open)

    return Rule(text, ok)


def one_of(*choices: Any) -> Rule:
    return Rule(f"one of {list(choices)}", lambda v: any(v == c and type(v) is type(c) for c in choices))


def optional(rule: Rule) -> Rule:
    return Rule(f"null or {rule.text}", lambda v: v is None or rule.accepts(v))


def either(*rules: Rule) -> Rule:
    return Rule(" or ".join(r.text for r in rules), lambda v: any(r.accepts(v) for r in rules))


def _is_name(v: Any) -> bool:
    return isinstance(v, str | os.PathLike) and bool(str(v).strip())


def _three_numbers(v: Any) -> bool:
    return isinstance(v, list | tuple) and len(v) == 3 and all(map(_is_number, v))


BOOL = Rule("true or false", lambda v: isinstance(v, bool))
NAME = Rule("a non-empty string", _is_name)  # a path object passes too: the Python API takes both


def _names(v: Any) -> bool:
    return _is_name(v) or (isinstance(v, list | tuple) and bool(v) and all(map(_is_name, v)))


NAMES = Rule("a non-empty string or a list of them", _names)
FRACTION = number(0.0, 1.0, lo_open=True, hi_open=True)
RATE = number(0.0, 1.0, hi_open=True)
THREE_NUMBERS = Rule("a list of 3 numbers", _three_numbers)
THREE_POSITIVE = Rule("a list of 3 positive numbers", lambda v: _three_numbers(v) and all(s > 0 for s in v))


def must_be(where: str, text: str, value: Any) -> ConfigError:
    """``config: <key> must be <text>, got <value>``: the one form of a bad value's line."""
    shown = repr(value)
    return ConfigError(f"config: {where} must be {text}, got {shown if len(shown) <= 200 else shown[:197] + '...'}")


def unknown_key(where: str, candidates: Iterable[str], elsewhere: Iterable[str] = ()) -> ConfigError:
    """``config: unknown key 'data.sizee'; did you mean 'data.size'?``: the nearest key of the same node (difflib),
    else a key of that name in another group (``data.lr`` -> ``model.lr``)."""
    parent, _, leaf = where.rpartition(".")
    near = difflib.get_close_matches(leaf, sorted(set(candidates)), n=1, cutoff=0.6)
    if near:
        return ConfigError(f"config: unknown key '{where}'; did you mean '{_join(parent, near[0])}'?")
    moved = sorted(key for key in elsewhere if key.rpartition(".")[2] == leaf and key != where)
    if moved:
        return ConfigError(f"config: unknown key '{where}'; did you mean '{moved[0]}'?")
    return ConfigError(f"config: unknown key '{where}' ({parent or 'the top level'} has no key like it)")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
