"""Which model answers: the description /api/model returns, every /api/predict answer carries and the page shows
(file, backend, classes, input and its preprocessing, temperature, and the training run and date from the model's
own metadata)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tumorcls.inference import Predictor
from tumorcls.training.layout import RunLayout

UPLOAD_FORMATS = (".jpg", ".jpeg", ".png", ".dcm")  # what the page offers; the decoder takes a few more


def describe_model(predictor: Predictor, path: Path, tta: bool, explanations: bool) -> dict[str, Any]:
    """The JSON description of the served model (the predictor's own, plus what the server adds)."""
    size = int(predictor.input_size)
    return {
        **predictor.describe(),
        "model": path.name,  # the file name only: the server's folders are none of a client's business
        "input": {"height": size, "width": size, "channels": 3, "color": "RGB", "dtype": "uint8", "range": [0, 255]},
        "upload_formats": list(UPLOAD_FORMATS),
        "tta": tta,
        "explanations": explanations,
        "metadata": {str(k): str(v) for k, v in predictor.metadata.items()},
    }


def _run_name(folder: str) -> str:
    return RunLayout.of_checkpoint(folder).root.name


def training_summary(metadata: dict[str, str]) -> str:
    """'run 2026-11-26_07-00-00, epoch 7, exported 2026-11-26T08:00:00+00:00' from what the metadata has."""
    try:
        run = json.loads(metadata.get("training_run", "{}"))
    except json.JSONDecodeError:
        run = {}
    run = run if isinstance(run, dict) else {}
    source = run.get("checkpoint") or metadata.get("source_checkpoint")
    epoch = run.get("epoch", metadata.get("epoch"))
    parts = [f"run {_run_name(str(source))}"] if source else []
    if epoch not in (None, ""):
        parts.append(f"epoch {epoch}")
    if metadata.get("export_date"):
        parts.append(f"exported {metadata['export_date']}")
    return ", ".join(parts) or "unknown (no training metadata in the file)"


def model_markdown(card: dict[str, Any]) -> str:
    """The page's 'which model answered' line."""
    temperature = card.get("temperature")
    temp = f"{temperature:.3f}" if isinstance(temperature, float) else "not recorded"
    tta = ", flip TTA" if card.get("tta") else ""
    return (
        f"**Model** `{card['model']}` · backend **{card['backend']}**{tta} · training: "
        f"{training_summary(card['metadata'])} · temperature {temp}{preprocess_summary(card)}"
    )


def preprocess_summary(card: dict[str, Any]) -> str:
    """' · inputs: crop head, intensity equalize' for a model trained with preprocessing (which the server
    applies to every upload), else nothing."""
    steps = [f"{key} {card[key]}" for key in ("crop", "intensity") if card.get(key, "none") != "none"]
    return f" · inputs: {', '.join(steps)}" if steps else ""
