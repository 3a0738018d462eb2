"""Lazy re-exports for the subpackages' ``__init__``: ``from tumorcls.models import TumorClassifier`` works, but
importing a light module of a package (``tumorcls.models.probabilities``, numpy only, used by inference) does not
import torch and Lightning through its ``__init__`` (PEP 562 module ``__getattr__``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, modules: dict[str, tuple[str, ...]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``, whose submodule ``m`` defines ``modules[m]``."""
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module-level hook's required name
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(exports)

    return list(exports), __getattr__, __dir__
