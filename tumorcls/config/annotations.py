"""Does a config value fit a Python annotation, and how to say the annotation in words: the cheap type check of
an open group's keys (``trainer.max_time``, ``trainer.precision``...) against the ``_target_``'s own type hints.

What a YAML file can hold is checked: integers, numbers, booleans, strings, null, Literal choices, lists and
mappings. A parameter annotated with some other class (an ``Accelerator``, a ``Profiler``) takes a ``_target_``
node, so a mapping passes and a scalar does not; an annotation this module does not understand accepts anything.
"""

from __future__ import annotations

import collections.abc
import types
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping)


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _fits_class(annotation: type, value: Any) -> bool:
    """A plain class: the scalars by their type (bool is no int here), a path as a string, others as a node."""
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (list, tuple):
        return isinstance(value, list | tuple)
    if annotation is dict:
        return isinstance(value, Mapping)
    if issubclass(annotation, PurePath):
        return isinstance(value, str | PurePath)
    return isinstance(value, (Mapping, annotation))


def fits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` (plain: lists, dicts, scalars) can be passed where ``annotation`` is declared."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return True
    if _is_union(annotation):
        return any(fits(arg, value) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin in _SEQUENCES:
        items = [a for a in args if a is not Ellipsis]
        return isinstance(value, list | tuple) and all(fits(items[0], v) for v in value) if items else True
    if origin in _MAPPINGS:
        return isinstance(value, Mapping)
    if isinstance(annotation, type):
        return _fits_class(annotation, value)
    return True  # a TypeVar, a forward reference, a generic alias of another kind: not checked


def _word(annotation: Any) -> str:
    origin = get_origin(annotation)
    if annotation is type(None):
        return "null"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    if annotation in words:
        return words[annotation]
    if origin in _SEQUENCES or annotation in (list, tuple):
        items = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"a list of {_word(items[0]).removeprefix('a ').removeprefix('an ')}s" if items else "a list"
    if origin in _MAPPINGS:
        return "a mapping"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "a path"
    return f"a {getattr(annotation, '__name__', str(annotation))} (_target_ node)"


def _collect(annotation: Any, literals: list[Any], words: list[str]) -> None:
    if _is_union(annotation):
        for arg in get_args(annotation):
            _collect(arg, literals, words)
    elif get_origin(annotation) is Literal:
        literals.extend(a for a in get_args(annotation) if a not in literals)
    elif (word := _word(annotation)) not in words:
        words.append(word)


def describe(annotation: Any, also: tuple[Any, ...] = ()) -> str:
    """``one of ['auto', 64, '32-true', ...] or null``: the choices first, null last."""
    literals, words = list(also), []
    _collect(annotation, literals, words)
    words.sort(key=lambda word: word == "null")
    return " or ".join(([f"one of {literals}"] if literals else []) + words)
