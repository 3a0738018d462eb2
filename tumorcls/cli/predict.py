"""Classify image files, folders (recursively) and globs with a trained model (.ckpt, .onnx or .h5), or an
ensemble of them (``--model`` repeated: the mean of their probabilities).

Prints a table (default), JSON or CSV with every class's probability, the predicted class and its
confidence. An unreadable file gives one error line on stderr and exit status 1; the rest are still done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumorcls.atomic_io import atomic_write_text
from tumorcls.data.files import find_images
from tumorcls.errors import TumorclsError
from tumorcls.inference.backends import Predictor, load_model
from tumorcls.inference.predict import PredictRun, check_output, format_csv, format_json, format_table, run_predictions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        help="model file: .ckpt (checkpoint), .onnx, or .h5 (Keras); repeat it for an ensemble (the mean of the "
        "models' probabilities)",
    )
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--out", type=Path, help="write the output to this file (atomically) instead of stdout")
    parser.add_argument("--overwrite", action="store_true", help="let --out replace an existing file")
    parser.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    parser.add_argument("--cam", type=Path, metavar="DIR", help="write Grad-CAM overlays (PNG) here (.ckpt only)")
    parser.add_argument("--cam-layer", help="layer for Grad-CAM (default: the backbone's final feature map)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="CPU threads for torch / ONNX Runtime")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (checkpoints only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


def _report(path: Path, reason: str) -> None:
    print(f"error: {path}: {reason}", file=sys.stderr, flush=True)  # above the progress bar while it draws


def _render(args: argparse.Namespace, result: PredictRun, predictor: Predictor) -> str:
    names = list(predictor.class_names)
    if args.json:
        return format_json(result, predictor, args.model, args.tta)
    if args.csv:
        return format_csv(result.predictions, names)
    return format_table(result.predictions, names)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise TumorclsError("--batch-size must be at least 1")
    files, missing = find_images(args.paths)
    if args.out is not None:  # refused now, not after every image has been predicted
        check_output(args.out, args.overwrite, args.model, files)
    predictor = load_model(args.model, device=args.device, threads=args.threads)
    for path, reason in missing:
        _report(path, reason)
    if not files and not missing:
        raise TumorclsError(f"no image files found in {args.paths}")
    progress = not args.quiet and sys.stderr.isatty()
    result = run_predictions(
        predictor, files, args.batch_size, args.tta, args.cam, args.cam_layer, progress, on_error=_report
    )
    result.errors = missing + result.errors
    text = _render(args, result, predictor)
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
