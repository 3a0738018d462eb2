"""Load a trained classifier from a Lightning checkpoint, safely and only if it is one of ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tumorcls.errors import CheckpointError
from tumorcls.labels import CLASS_NAMES
from tumorcls.lit_module import TumorClassifier

REQUIRED_HPARAMS = ("backbone", "num_classes", "class_names", "drop_rate")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, unpickled with ``weights_only=True`` (no arbitrary objects)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: '{path}'")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a loadable checkpoint"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint '{path}' safely: {first[:300]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"'{path}' is not a Lightning checkpoint (no state_dict)")
    hparams = ckpt.get("hyper_parameters") or {}
    missing = [k for k in REQUIRED_HPARAMS if k not in hparams]
    if missing:
        raise CheckpointError(f"'{path}' is not a tumorcls checkpoint (hyperparameters lack {missing})")
    return ckpt


def load_classifier(
    path: str | Path, expected_classes: tuple[str, ...] | None = CLASS_NAMES, map_location: str = "cpu"
) -> TumorClassifier:
    """Rebuild the model from the checkpoint's hyperparameters and load its weights strictly.

    The label map must equal ``expected_classes`` (the tutorial's order) unless that is None.
    """
    ckpt = read_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    classes = tuple(hparams["class_names"])
    if expected_classes is not None and classes != tuple(expected_classes):
        raise CheckpointError(
            f"checkpoint '{path}' has label map {list(classes)}, expected {list(expected_classes)}; refusing it"
        )
    hparams.update(pretrained=False, weights=None)  # the checkpoint carries every weight
    try:
        model = TumorClassifier(**hparams)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint '{path}' has hyperparameters this version does not know: {exc}") from None
    result = model.load_state_dict(ckpt["state_dict"], strict=False)
    wrong = [k for k in result.missing_keys if k.startswith("net.")] + [
        k for k in result.unexpected_keys if k.startswith("net.")
    ]
    if wrong:
        raise CheckpointError(
            f"checkpoint '{path}' does not match its own hyperparameters ({len(wrong)} tensors: {wrong[:3]})"
        )
    for key, value in (ckpt.get("tumorcls") or {}).items():
        setattr(model, key, value)
    return model.eval().to(map_location)
