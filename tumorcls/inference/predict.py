"""Classify decoded image files with a predictor: batches through the backend, optional TTA and Grad-CAM
overlays, yielded batch by batch so that rows can be written as they finish, and the output formats of
``tumorcls predict`` (table, JSON document, CSV and JSON Lines rows; its command-line front-end is
:mod:`tumorcls.cli.predict`, the streamed files :mod:`tumorcls.inference.streaming`). Also the rule for
``--out``: never an input or a model file (any member of an ensemble).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.atomic_io import check_writable
from tumorcls.errors import OutputError
from tumorcls.inference.backends import Predictor
from tumorcls.inference.backends.loader import ModelPaths, model_field, model_paths
from tumorcls.inference.batching import iter_batches, predict_batch


@dataclass
class Prediction:
    path: Path
    probabilities: np.ndarray
    class_names: list[str]
    cam: Path | None = None

    @property
    def index(self) -> int:
        return int(np.argmax(self.probabilities))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": str(self.path),
            "predicted": self.class_names[self.index],
            "confidence": float(self.probabilities[self.index]),
            "probabilities": {n: float(p) for n, p in zip(self.class_names, self.probabilities)},
        }
        if self.cam is not None:
            out["cam"] = str(self.cam)
        return out


@dataclass
class PredictRun:
    """What a run collected: every prediction (the table and the ``--json`` document need them all at the end)."""

    predictions: list[Prediction] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class BatchPredictions:
    """One finished batch: its predictions in input order, and the files of it that could not be read."""

    predictions: list[Prediction]
    errors: list[tuple[Path, str]]

    @property
    def size(self) -> int:
        return len(self.predictions) + len(self.errors)


def _unique_png(folder: Path, path: Path, used: set[str]) -> Path:
    name, k = f"{path.stem}_cam.png", 1
    while name in used:
        name, k = f"{path.stem}_cam-{k}.png", k + 1
    used.add(name)
    return folder / name


def predict_batches(
    predictor: Predictor,
    files: Sequence[Path],
    batch_size: int = 32,
    tta: bool = False,
    cam_dir: Path | None = None,
    cam_layer: str | None = None,
) -> Iterator[BatchPredictions]:
    """Predict ``files`` in batches, yielding each batch as soon as it is done (nothing is kept here), so that a
    caller can write its rows at once; unreadable files come back in the batch's ``errors``."""
    explainer = predictor.grad_cam(cam_layer) if cam_dir is not None else None
    if explainer is not None:
        from tumorcls.inference.gradcam import save_overlay
    used: set[str] = set()
    names = list(predictor.class_names)
    for batch in iter_batches(files, predictor.decode_options(), batch_size):
        probs = predict_batch(predictor, batch.images, tta).probs
        cams = None
        if explainer is not None and len(batch.images):
            cams = explainer(batch.images, probs.argmax(axis=1))
        predictions = []
        for i, path in enumerate(batch.paths):
            pred = Prediction(path, probs[i], names)
            if cams is not None:
                pred.cam = save_overlay(_unique_png(cam_dir, path, used), batch.images[i], cams[i])
            predictions.append(pred)
        yield BatchPredictions(predictions, list(batch.errors))


@contextmanager
def progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """rich's bar on stderr, as training's; while it draws, writes to stderr (the error lines) print above it.
    Yields ``advance(n)``."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), disable=not enabled) as bar:
        task = bar.add_task("predicting", total=total)
        yield lambda n: bar.advance(task, n)


def run_predictions(
    predictor: Predictor,
    files: list[Path],
    batch_size: int = 32,
    tta: bool = False,
    cam_dir: Path | None = None,
    cam_layer: str | None = None,
    progress: bool = False,
    on_error: Any = None,
) -> PredictRun:
    """Predict every file and keep every prediction (what the table and ``--json`` show);
    ``on_error(path, reason)`` is called once per unreadable file."""
    result = PredictRun()
    started = time.perf_counter()
    with progress_bar(progress, len(files)) as advance:
        for batch in predict_batches(predictor, files, batch_size, tta, cam_dir, cam_layer):
            for path, reason in batch.errors:
                result.errors.append((path, reason))
                if on_error is not None:
                    on_error(path, reason)
            result.predictions += batch.predictions
            advance(batch.size)
    result.seconds = time.perf_counter() - started
    return result


def format_table(predictions: list[Prediction], class_names: list[str]) -> str:
    width = max([len("file")] + [len(str(p.path)) for p in predictions])
    cols = [max(len(n), 6) for n in class_names]
    head = f"{'file':<{width}}  {'predicted':<16}  {'conf':>6}  " + "  ".join(
        f"{n:>{w}}" for n, w in zip(class_names, cols)
    )
    lines = [head]
    for p in predictions:
        d = p.as_dict()
        probs = "  ".join(f"{v:>{w}.4f}" for v, w in zip(p.probabilities, cols))
        lines.append(f"{str(p.path):<{width}}  {d['predicted']:<16}  {d['confidence']:>6.4f}  {probs}")
    return "\n".join(lines) + "\n"


def format_json(run: PredictRun, predictor: Predictor, model: ModelPaths, tta: bool) -> str:
    """The JSON document; ``model``: the file (its path) or an ensemble's members (the list of their paths)."""
    doc = {
        **predictor.describe(),
        "model": model_field(model),
        "tta": tta,
        "predictions": [p.as_dict() for p in run.predictions],
        "errors": [{"path": str(path), "error": reason} for path, reason in run.errors],
    }
    return json.dumps(doc, indent=2) + "\n"


def csv_header(class_names: Sequence[str]) -> list[str]:
    return ["path", "predicted", "confidence", *class_names]


def csv_rows(predictions: Iterable[Prediction]) -> str:
    """CSV lines (no header) for these predictions."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for p in predictions:
        d = p.as_dict()
        writer.writerow([d["path"], d["predicted"], f"{d['confidence']:.6f}", *(f"{v:.6f}" for v in p.probabilities)])
    return buffer.getvalue()


def jsonl_rows(predictions: Iterable[Prediction]) -> str:
    """JSON Lines: one prediction object (as in the ``--json`` document) per line."""
    return "".join(json.dumps(p.as_dict()) + "\n" for p in predictions)


def format_csv(predictions: list[Prediction], class_names: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(csv_header(class_names))
    return buffer.getvalue() + csv_rows(predictions)


def check_output(out: Path, overwrite: bool, model: ModelPaths | None = None, inputs: Iterable[Path] = ()) -> Path:
    """Refuse, before any work, an ``--out`` that is the model file (or any member of an ensemble) or one of the
    input images (whatever ``overwrite`` says), an existing file unless ``overwrite``, and a place that cannot be
    written."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise OutputError(f"--out '{out}' is a folder; give a file path")
    target = out.resolve()
    models = model_paths(model) if model is not None else []
    for path in models:
        if target == path.expanduser().resolve():
            what = "the model file" if len(models) == 1 else "a member of the ensemble"
            raise OutputError(f"--out '{out}' is {what}; refusing to overwrite it")
    for path in inputs:
        if target == Path(path).resolve():
            raise OutputError(f"--out '{out}' is one of the input images; refusing to overwrite it")
    if out.exists() and not overwrite:
        raise OutputError(f"--out '{out}' exists; pass --overwrite to replace it")
    return check_writable(out)
