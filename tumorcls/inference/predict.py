"""Classify image files, folders (recursively) and globs with a trained model (.ckpt, .onnx or .h5).

Prints a table (default), JSON or CSV with every class's probability, the predicted class and its
confidence. An unreadable file gives one error line on stderr and exit status 1; the rest are still done.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.atomic_io import atomic_write_text
from tumorcls.errors import TumorclsError
from tumorcls.inference.backends import Predictor, TorchPredictor, load_predictor
from tumorcls.inference.batching import find_images, iter_batches, predict_batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--model", required=True, help="model file: .ckpt (checkpoint), .onnx, or .h5 (Keras)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--out", type=Path, help="write the output to this file (atomically) instead of stdout")
    parser.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    parser.add_argument("--cam", type=Path, metavar="DIR", help="write Grad-CAM overlays (PNG) here (.ckpt only)")
    parser.add_argument("--cam-layer", help="layer for Grad-CAM (default: the backbone's final feature map)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="CPU threads for torch / ONNX Runtime")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (checkpoints only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


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
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def _unique_png(folder: Path, path: Path, used: set[str]) -> Path:
    name, k = f"{path.stem}_cam.png", 1
    while name in used:
        name, k = f"{path.stem}_cam-{k}.png", k + 1
    used.add(name)
    return folder / name


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
    """Predict every file in batches; ``on_error(path, reason)`` is called once per unreadable file."""
    explainer = None
    if cam_dir is not None:
        if not isinstance(predictor, TorchPredictor):
            raise TumorclsError(f"--cam needs a checkpoint (.ckpt) model; this one is {predictor.backend}")
        from tumorcls.inference.gradcam import GradCamExplainer, save_overlay

        try:
            explainer = GradCamExplainer(predictor, cam_layer)
        except ValueError as exc:
            raise TumorclsError(f"Grad-CAM: {exc}") from None
    from tqdm import tqdm

    result = PredictRun()
    used: set[str] = set()
    started = time.perf_counter()
    bar = tqdm(total=len(files), unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for batch in iter_batches(files, predictor.input_size, batch_size):
            for path, reason in batch.errors:
                result.errors.append((path, reason))
                if on_error is not None:
                    on_error(path, reason)
            probs = predict_batch(predictor, batch.images, tta).probs
            cams = None
            if explainer is not None and len(batch.images):
                cams = explainer(batch.images, probs.argmax(axis=1))
            for i, path in enumerate(batch.paths):
                pred = Prediction(path, probs[i], list(predictor.class_names))
                if cams is not None:
                    pred.cam = save_overlay(_unique_png(cam_dir, path, used), batch.images[i], cams[i])
                result.predictions.append(pred)
            bar.update(len(batch.paths) + len(batch.errors))
    finally:
        bar.close()
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


def format_json(run: PredictRun, predictor: Predictor, model: Path, tta: bool) -> str:
    doc = {
        "model": str(model),
        "backend": predictor.backend,
        "class_names": list(predictor.class_names),
        "temperature": predictor.temperature,
        "tta": tta,
        "predictions": [p.as_dict() for p in run.predictions],
        "errors": [{"path": str(path), "error": reason} for path, reason in run.errors],
    }
    return json.dumps(doc, indent=2) + "\n"


def format_csv(predictions: list[Prediction], class_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "predicted", "confidence", *class_names])
    for p in predictions:
        d = p.as_dict()
        writer.writerow([d["path"], d["predicted"], f"{d['confidence']:.6f}", *(f"{v:.6f}" for v in p.probabilities)])
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise TumorclsError("--batch-size must be at least 1")
    if args.out is not None and args.out.is_dir():
        raise TumorclsError(f"--out '{args.out}' is a folder; give a file path")
    predictor = load_predictor(args.model, device=args.device, threads=args.threads)
    files, missing = find_images(args.paths)

    def report(path: Path, reason: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"error: {path}: {reason}", file=sys.stderr)

    for path, reason in missing:
        report(path, reason)
    if not files and not missing:
        raise TumorclsError(f"no image files found in {args.paths}")
    progress = not args.quiet and sys.stderr.isatty()
    result = run_predictions(
        predictor, files, args.batch_size, args.tta, args.cam, args.cam_layer, progress, on_error=report
    )
    result.errors = missing + result.errors
    names = list(predictor.class_names)
    if args.json:
        text = format_json(result, predictor, Path(args.model), args.tta)
    elif args.csv:
        text = format_csv(result.predictions, names)
    else:
        text = format_table(result.predictions, names)
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    n = len(result.predictions)
    if not args.quiet:
        rate = n / result.seconds if result.seconds > 0 else float("nan")
        print(
            f"{n} image(s) predicted in {result.seconds:.2f} s ({rate:.1f} images/s, {predictor.backend}); "
            f"{len(result.errors)} failed",
            file=sys.stderr,
        )
    return 1 if result.errors else 0
