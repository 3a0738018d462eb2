"""The experiment loggers of a training run (TensorBoard, CSV), built so that TensorBoard never imports
TensorFlow: training does not need it, and importing it (the ``keras`` extra installs it) costs seconds and
floods the log."""

from __future__ import annotations

import sys
import types
from typing import Any

from omegaconf import DictConfig

from tumorcls.training.instantiation import instantiate_group

NO_TENSORFLOW_MARKER = "tensorboard.compat.notf"


def keep_tensorboard_off_tensorflow() -> None:
    """TensorBoard imports TensorFlow, when installed, unless the marker module ``tensorboard.compat.notf``
    exists; then it uses its own stub. Called when a TensorBoard logger is built, never at import."""
    sys.modules.setdefault(NO_TENSORFLOW_MARKER, types.ModuleType(NO_TENSORFLOW_MARKER))


def _is_tensorboard(node: Any) -> bool:
    return isinstance(node, DictConfig) and "TensorBoard" in str(node.get("_target_", ""))


def build_loggers(group: DictConfig | None) -> list[Any]:
    """The loggers of the ``logger`` config group."""
    if group and any(_is_tensorboard(node) for node in group.values()):
        keep_tensorboard_off_tensorflow()
    return instantiate_group(group, "logger")
