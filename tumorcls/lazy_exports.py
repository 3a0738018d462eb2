"""Lazy re-exports for the subpackages' ``__init__``: ``from tumorcls.models import TumorClassifier`` works, but
importing a light module of a package (``tumorcls.models.probabilities``, numpy only, used by inference) does not
import torch and Lightning through its ``__init__`` (PEP 562 module ``__getattr__``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose public ``name`` lives in module ``exports[name]``."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module-level hook's required name
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(exports)

    return __getattr__, __dir__
