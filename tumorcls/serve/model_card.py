"""Which model answers: the description /api/model returns, every /api/predict answer carries and the page shows
(file, backend, classes, input and its preprocessing, temperature, and the training run and date from the model's
own metadata). An ensemble is described by its members (file names, backends, temperatures, training runs), and
an exported ensemble file by the members its metadata names. No path of the machine it was trained or is served
on reaches a client: every absolute path in the metadata is cut to its last part (``source_checkpoint``, the
``training_run`` checkpoint and ``run_dir``), and the training line is worked out here, from the full paths."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from tumorcls.inference import Predictor
from tumorcls.inference.backends.loader import ModelPaths, model_field
from tumorcls.run_layout import RunLayout

UPLOAD_FORMATS = (".jpg", ".jpeg", ".png", ".dcm")  # what the page offers; the decoder takes a few more


def describe_model(predictor: Predictor, model: ModelPaths, tta: bool, explanations: bool) -> dict[str, Any]:
    """The JSON description of the served model (the predictor's own, plus what the server adds); ``model`` is
    its file, or the members of an ensemble."""
    size = int(predictor.input_size)
    card = predictor.describe()
    if "members" in card:  # an ensemble: each member named by its file name, as the model itself is
        card["members"] = [
            {**m, "model": Path(m["model"]).name, "training": training_summary(m["metadata"]),
             "metadata": without_paths(m["metadata"])}
            for m in card["members"]
        ]  # fmt: skip
    metadata = {str(k): str(v) for k, v in predictor.metadata.items()}
    return {
        **card,
        "model": model_field(model, name_only=True),  # file names only: the server's folders are not a client's
        "input": {"height": size, "width": size, "channels": 3, "color": "RGB", "dtype": "uint8", "range": [0, 255]},
        "upload_formats": list(UPLOAD_FORMATS),
        "tta": tta,
        "explanations": explanations,
        "training": training_summary(metadata),
        "metadata": without_paths(metadata),
    }


def _is_absolute(text: str) -> bool:
    return "\n" not in text and (PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute())


def _cut_paths(value: Any) -> Any:
    if isinstance(value, str):
        return PureWindowsPath(value).name if _is_absolute(value) else value
    if isinstance(value, dict):
        return {k: _cut_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_paths(v) for v in value]
    return value


def without_paths(metadata: dict[str, Any]) -> dict[str, str]:
    """The metadata with every absolute path (also inside JSON values) cut to its last part."""
    cut = {}
    for key, raw in metadata.items():
        text = str(raw)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            cut[str(key)] = json.dumps(_cut_paths(parsed))
        else:
            cut[str(key)] = _cut_paths(text)
    return cut


def _run_name(folder: str) -> str:
    return RunLayout.of_checkpoint(folder).root.name


def _json_object(raw: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _run_parts(source: Any, epoch: Any) -> list[str]:
    parts = [f"run {_run_name(str(source))}"] if source else []
    return parts + ([f"epoch {epoch}"] if epoch not in (None, "") else [])


def training_summary(metadata: dict[str, str]) -> str:
    """'run 2026-11-26_07-00-00, epoch 7, exported 2026-11-26T08:00:00+00:00' from what the metadata has; for an
    exported ensemble 'ensemble of 3: run A, epoch 7; run B, epoch 5; ..., exported ...'."""
    members = _json_object(metadata.get("ensemble")).get("members")
    if isinstance(members, list) and members:
        runs = [_run_parts(m.get("checkpoint"), m.get("epoch")) for m in members if isinstance(m, dict)]
        parts = [f"ensemble of {len(members)}: {'; '.join(', '.join(run) for run in runs)}"]
    else:
        run = _json_object(metadata.get("training_run"))
        source = run.get("checkpoint") or metadata.get("source_checkpoint")
        parts = _run_parts(source, run.get("epoch", metadata.get("epoch")))
    if metadata.get("export_date"):
        parts.append(f"exported {metadata['export_date']}")
    return ", ".join(parts) or "unknown (no training metadata in the file)"


def _temperature(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "not recorded"


def model_markdown(card: dict[str, Any]) -> str:
    """The page's 'which model answered' line; for an ensemble, one entry per member."""
    tta = ", flip TTA" if card.get("tta") else ""
    if card.get("members"):
        members = "; ".join(
            f"`{m['model']}` ({m['backend']}, training: {m.get('training') or training_summary(m['metadata'])}, "
            f"temperature {_temperature(m['temperature'])})"
            for m in card["members"]
        )
        head = f"**Ensemble** of {len(card['members'])} models, the mean of their probabilities{tta}"
        return f"{head} · {members}{preprocess_summary(card)}"
    training = card.get("training") or training_summary(card["metadata"])
    return (
        f"**Model** `{card['model']}` · backend **{card['backend']}**{tta} · training: {training} · "
        f"temperature {_temperature(card.get('temperature'))}{preprocess_summary(card)}"
    )


def preprocess_summary(card: dict[str, Any]) -> str:
    """' · inputs: crop head, intensity equalize' for a model trained with preprocessing (which the server
    applies to every upload), else nothing."""
    steps = [f"{key} {card[key]}" for key in ("crop", "intensity") if card.get(key, "none") != "none"]
    return f" · inputs: {', '.join(steps)}" if steps else ""
