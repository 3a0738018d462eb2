"""Load a trained classifier from a Lightning checkpoint, safely and only if it is one of ours, with what the
checkpoint carries besides weights (calibration temperature, training progress) as a typed CheckpointInfo."""

from __future__ import annotations

import logging
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tumorcls.errors import CheckpointError, WeightsError, existing_checkpoint
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.lit_module import TumorClassifier

REQUIRED_HPARAMS = ("backbone", "num_classes", "class_names", "drop_rate")
CHECKPOINT_KEY = "tumorcls"  # the checkpoint entry holding calibration and other tumorcls extras


def _load_failure(exc: Exception) -> str:
    """One telling line for a torch.load failure. torch's own message starts with several lines of generic
    advice (some with terminal colour codes); what matters is the global a pickle wanted to import, or else
    that the file is no PyTorch checkpoint at all."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    refused_global = next((line for line in lines if "GLOBAL" in line), None)
    if refused_global:
        return f"it holds pickled objects, which are never loaded ({refused_global[:200]})"
    specific = next((line for line in lines if line.startswith("Unsupported")), None)
    detail = specific or (lines[0].split(". ")[0] if isinstance(exc, RuntimeError) and lines else "")
    if not detail and lines and not isinstance(exc, pickle.UnpicklingError):
        detail = lines[0]
    return f"not a PyTorch checkpoint file ({type(exc).__name__}{': ' + detail[:200] if detail else ''})"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, unpickled with ``weights_only=True`` (no arbitrary objects)."""
    path = existing_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a loadable checkpoint"
        raise CheckpointError(f"cannot read checkpoint '{path}' safely: {_load_failure(exc)}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"'{path}' is not a Lightning checkpoint (no state_dict)")
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams, dict) or not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"'{path}' is not a tumorcls checkpoint (malformed hyperparameters or state_dict)")
    missing = [k for k in REQUIRED_HPARAMS if k not in hparams]
    if missing:
        raise CheckpointError(f"'{path}' is not a tumorcls checkpoint (hyperparameters lack {missing})")
    return ckpt


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint carries besides weights and hyperparameters: the calibration temperature (1.0 when
    never calibrated), the calibration summary ``tumorcls calibrate`` stored, and the training progress."""

    temperature: float = 1.0
    calibration: dict | None = None
    epoch: int | None = None
    global_step: int | None = None


def checkpoint_info(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> CheckpointInfo:
    """The :class:`CheckpointInfo` of an already read checkpoint dict; an invalid temperature is refused (a
    negative one would silently reverse the class ranking)."""
    extra = ckpt.get(CHECKPOINT_KEY) or {}
    temperature = extra.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature < math.inf:
        raise CheckpointError(f"checkpoint '{path}' holds an invalid calibration temperature {temperature!r}")
    calibration = extra.get("calibration")
    return CheckpointInfo(
        temperature=float(temperature),
        calibration=dict(calibration) if isinstance(calibration, dict) else None,
        epoch=ckpt.get("epoch"),
        global_step=ckpt.get("global_step"),
    )


def _build_model(path: str | Path, hparams: dict[str, Any]) -> TumorClassifier:
    """The network the hyperparameters describe, without fetching any pretrained weights (the checkpoint
    carries every weight)."""
    hparams = {**hparams, "pretrained": False, "weights": None}
    network_log = logging.getLogger("tumorcls.models.network")  # "starts from random weights": not news here
    level = network_log.level
    network_log.setLevel(logging.ERROR)
    try:
        return TumorClassifier(**hparams)
    except (TypeError, ValueError, WeightsError) as exc:
        raise CheckpointError(f"checkpoint '{path}' has hyperparameters this version cannot use: {exc}") from None
    finally:
        network_log.setLevel(level)


def _load_weights(path: str | Path, model: TumorClassifier, state_dict: dict[str, torch.Tensor]) -> None:
    """Load the network's tensors; any missing, unexpected or misshapen ``net.`` tensor is refused."""
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # a tensor whose shape differs from the one its hyperparameters build
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
        raise CheckpointError(f"checkpoint '{path}' does not match its own hyperparameters: {detail[:300]}") from None
    wrong = [k for k in (*result.missing_keys, *result.unexpected_keys) if k.startswith("net.")]
    if wrong:
        raise CheckpointError(
            f"checkpoint '{path}' does not match its own hyperparameters ({len(wrong)} tensors: {wrong[:3]})"
        )


def load_checkpoint(
    path: str | Path, expected_classes: tuple[str, ...] | None = CLASS_NAMES, map_location: str = "cpu"
) -> tuple[TumorClassifier, CheckpointInfo]:
    """Rebuild the model from the checkpoint's hyperparameters, load its weights strictly, and return it in
    eval mode on ``map_location`` together with the checkpoint's :class:`CheckpointInfo`.

    The label map must equal ``expected_classes`` (the tutorial's order) unless that is None. Checkpoints
    with flat hyperparameters (every release so far) load: only the architecture and input contract are read.
    """
    ckpt = read_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    classes = tuple(hparams["class_names"])
    if expected_classes is not None and classes != tuple(expected_classes):
        raise CheckpointError(
            f"checkpoint '{path}' has label map {list(classes)}, expected {list(expected_classes)}; refusing it"
        )
    info = checkpoint_info(ckpt, path)
    model = _build_model(path, hparams)
    _load_weights(path, model, ckpt["state_dict"])
    return model.eval().to(map_location), info
