"""The schema of export.py's config (conf/export.yaml): which checkpoint(s), which formats, where to, and how
closely each file must reproduce the PyTorch model. ``tumorcls.export.run.export_checkpoint`` checks its
arguments through it too, so the script and the Python API refuse the same values in the same words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tumorcls.config.check import check_section
from tumorcls.config.rules import (
    BOOL,
    NAME,
    NAMES,
    integer,
    number,
    one_of,
    option,
    optional,
)

FORMATS = ("onnx", "keras", "onnx_int8", "all")  # tumorcls.export.targets.FORMATS, and all = onnx + keras
MIN_OPSET = 17  # tumorcls.export.to_onnx.MIN_OPSET
MIN_INT8_CHECK_IMAGES = 64  # tumorcls.export.int8.MIN_CHECK_IMAGES: fewer and the gate refuses


@dataclass(frozen=True)
class ExportConfig:
    """conf/export.yaml."""

    ckpt: str | list[str] | None = option(None, optional(NAMES), "a checkpoint, or a list: an ensemble")
    format: str = option("all", one_of(*FORMATS), "onnx | keras | all (= onnx + keras) | onnx_int8")
    out: str | None = option(None, optional(NAME), "the file (one format) or folder (all)")
    overwrite: bool = option(False, BOOL, "replace an existing file")
    opset: int = option(MIN_OPSET, integer(MIN_OPSET), "ONNX opset")
    images: str | list[str] | None = option(None, optional(NAMES), "parity images: files or folders")
    data_root: str | None = option(None, optional(NAME), "where the run's splits.csv paths are")
    n_check: int = option(32, integer(1), "parity images")
    atol: float = option(1e-4, number(0.0, lo_open=True), "max |dp| a file may differ by")
    calibration: str | list[str] | None = option(None, optional(NAMES), "int8 calibration images")
    n_calibrate: int = option(128, integer(1), "int8 calibration images used")
    n_int8_check: int = option(256, integer(MIN_INT8_CHECK_IMAGES), "int8 gate images")
    int8_min_agreement: float = option(0.97, number(0.0, 1.0, lo_open=True), "int8 gate: top-1 agreement")


DEFAULTS = ExportConfig()


def check_export_config(values: Mapping[str, Any]) -> None:
    """Raise ConfigError (one line naming the key) for the first unknown key or bad value of export.py's config
    (composed, as plain values without Hydra's own node) or of ``export_checkpoint``'s arguments."""
    check_section(ExportConfig, values)
