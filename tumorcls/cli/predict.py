"""Classify image files, folders (recursively) and globs with a trained model (.ckpt, .onnx or .h5), or an
ensemble of them (``--model`` repeated: the mean of their probabilities).

Prints a table (default) or a JSON document (``--json``), both written once every image is done, or streams CSV
(``--csv``) or JSON Lines (``--jsonl``) rows as each batch finishes. With ``--out FILE`` the rows go to
``FILE.partial``, renamed to FILE when complete; Ctrl-C or SIGTERM keeps every finished row, and ``--resume``
finishes an interrupted (or extends a complete) file. ``--shard i/n`` predicts the i-th of n contiguous parts of
the input (array jobs). An unreadable file gives one error line on stderr and exit status 1; the rest are still
done.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorcls.cli.interrupts import Interrupted, StopSignals, stop_on_signals
from tumorcls.errors import OutputError, TumorclsError

# the model runtimes (torch, ONNX Runtime, TensorFlow) are imported in run(): `tumorcls predict --help` loads none


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
    fmt.add_argument("--json", action="store_true", help="print one JSON document (written when all are done)")
    fmt.add_argument("--csv", action="store_true", help="stream CSV rows as batches finish")
    fmt.add_argument("--jsonl", action="store_true", help="stream JSON Lines rows (one object per image)")
    parser.add_argument(
        "--out", type=Path, help="write to this file instead of stdout (--csv/--jsonl: via FILE.partial)"
    )
    parser.add_argument("--overwrite", action="store_true", help="let --out replace an existing file")
    parser.add_argument(
        "--resume", action="store_true", help="--csv/--jsonl with --out: skip the files already in it and append"
    )
    parser.add_argument("--shard", metavar="I/N", help="predict only the I-th of N contiguous parts (I from 0)")
    parser.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    parser.add_argument("--cam", type=Path, metavar="DIR", help="write Grad-CAM overlays (PNG) here (.ckpt only)")
    parser.add_argument("--cam-layer", help="layer for Grad-CAM (default: the backbone's final feature map)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="CPU threads for torch / ONNX Runtime")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (checkpoints only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


@dataclass
class _Tally:
    """How far the run got, for the summary line and for the line an interrupt prints."""

    total: int = 0  # images this command covers (its shard)
    before: int = 0  # already in the output (--resume)
    predicted: int = 0
    failed: int = 0
    partial: Path | None = None  # where streamed rows go, when they go to a file
    started: float = 0.0
    missing: list[tuple[Path, str]] = field(default_factory=list)  # arguments that name no file


def _report(path: Path, reason: str) -> None:
    print(f"error: {path}: {reason}", file=sys.stderr, flush=True)  # above the progress bar while it draws


def _row_format(args: argparse.Namespace) -> str | None:
    return "csv" if args.csv else "jsonl" if args.jsonl else None


def _check_options(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise TumorclsError("--batch-size must be at least 1")
    if args.resume and (_row_format(args) is None or args.out is None):
        raise TumorclsError(
            "--resume needs --csv or --jsonl with --out (the table and the --json document are written once, "
            "at the end, so there is nothing to resume)"
        )
    if args.resume and args.overwrite:
        raise TumorclsError("--resume keeps the rows in --out and --overwrite replaces them; choose one")


def _check_out(args: argparse.Namespace, files: list[Path]) -> None:
    """Refused now, not after every image has been predicted."""
    from tumorcls.inference.predict import check_output
    from tumorcls.inference.streaming import refuse_stale_partial

    if args.out is None:
        return
    check_output(args.out, True, args.model, files)  # never a model or an input, whatever the options say
    if args.out.exists() and not (args.resume or args.overwrite):
        if _row_format(args) is None:
            raise OutputError(f"--out '{args.out}' exists; pass --overwrite to replace it")
        raise OutputError(f"--out '{args.out}' exists; pass --resume to add the rows it lacks or --overwrite")
    if _row_format(args) is not None:
        refuse_stale_partial(args.out, args.resume, args.overwrite)


def _meta(args: argparse.Namespace, class_names: list[str]) -> dict[str, Any]:
    """What wrote a partial file: a resume by other models or options would mix two answers in one file."""
    from tumorcls.inference.backends import model_paths

    paths = [p.expanduser().resolve() for p in model_paths(args.model)]
    return {
        "model": [str(p) for p in paths],
        "model_bytes": [p.stat().st_size for p in paths],
        "tta": args.tta,
        "format": _row_format(args),
        "shard": args.shard,
        "class_names": class_names,
    }


def _stream(args: argparse.Namespace, predictor: Any, files: list[Path], tally: _Tally, signals: StopSignals) -> None:
    """Predict ``files`` and write their rows batch by batch (CSV or JSON Lines)."""
    from tumorcls.inference.predict import predict_batches, progress_bar
    from tumorcls.inference.streaming import open_rows

    names = list(predictor.class_names)
    writer = open_rows(args.out, _row_format(args), names, args.resume, _meta(args, names))
    tally.partial = writer.partial
    todo = [f for f in files if str(f) not in writer.done]
    tally.before = len(files) - len(todo)
    try:
        with progress_bar(_progress(args), len(todo)) as advance:
            for batch in predict_batches(predictor, todo, args.batch_size, args.tta, args.cam, args.cam_layer):
                with signals.deferred():  # a stop waits for the batch's rows to be written whole
                    for path, reason in batch.errors:
                        _report(path, reason)
                    writer.write(batch.predictions)
                    tally.predicted += len(batch.predictions)
                    tally.failed += len(batch.errors)
                advance(batch.size)
    except OutputError as exc:  # e.g. the disk is full: the whole rows written so far stay for --resume
        if writer.partial is None:
            raise
        with contextlib.suppress(OutputError):  # the error being reported says it already
            writer.close()
        kept = f"the finished rows stay in '{writer.partial}': run the same command with --resume to finish"
        raise OutputError(f"{exc}; {kept}") from None
    except BaseException:
        writer.close()
        raise
    writer.finish()


def _collect(args: argparse.Namespace, predictor: Any, files: list[Path], tally: _Tally) -> None:
    """Predict ``files`` keeping every prediction, then write the table or the JSON document."""
    from tumorcls.atomic_io import atomic_write_text
    from tumorcls.inference.predict import PredictRun, format_json, format_table, predict_batches, progress_bar

    result = PredictRun(errors=list(tally.missing))
    with progress_bar(_progress(args), len(files)) as advance:
        for batch in predict_batches(predictor, files, args.batch_size, args.tta, args.cam, args.cam_layer):
            for path, reason in batch.errors:
                _report(path, reason)
            result.predictions += batch.predictions
            result.errors += batch.errors
            tally.predicted += len(batch.predictions)
            tally.failed += len(batch.errors)
            advance(batch.size)
    if args.json:
        text = format_json(result, predictor, args.model, args.tta)
    else:
        text = format_table(result.predictions, list(predictor.class_names))
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _predict(args: argparse.Namespace, tally: _Tally, signals: StopSignals) -> int:
    from tumorcls.data.files import find_images
    from tumorcls.inference.backends import load_model
    from tumorcls.inference.shards import parse_shard, shard_of

    shard = parse_shard(args.shard) if args.shard else None
    files, missing = find_images(args.paths)
    if shard is not None:
        files = shard_of(files, *shard)
    _check_out(args, files)
    predictor = load_model(args.model, device=args.device, threads=args.threads)
    for path, reason in missing:
        _report(path, reason)
    if not files and not missing and shard is None:
        raise TumorclsError(f"no image files found in {args.paths}")
    tally.total, tally.missing, tally.started = len(files), missing, time.perf_counter()
    if _row_format(args) is not None:
        _stream(args, predictor, files, tally, signals)
    else:
        _collect(args, predictor, files, tally)
    if not args.quiet:
        _summary(tally, predictor.backend)
    return 1 if tally.failed or missing else 0


def _summary(tally: _Tally, backend: str) -> None:
    seconds = time.perf_counter() - tally.started
    rate = tally.predicted / seconds if seconds > 0 else float("nan")
    kept = f"; {tally.before} already in the output" if tally.before else ""
    print(
        f"{tally.predicted} image(s) predicted in {seconds:.2f} s ({rate:.1f} images/s, {backend}); "
        f"{tally.failed + len(tally.missing)} failed{kept}",
        file=sys.stderr,
    )


def _interrupted(stop: Interrupted, tally: _Tally, args: argparse.Namespace) -> str:
    done = f"after {tally.before + tally.predicted} of {tally.total} image(s)" if tally.total else "before predicting"
    if tally.partial is not None:
        kept = (
            f"the finished rows are in '{tally.partial}'; run the same command with --resume to finish "
            f"(it becomes '{args.out}' when complete)"
        )
    elif _row_format(args) is not None:
        kept = "every finished row was printed; with --out FILE a later --resume can finish the job"
    else:
        kept = "nothing was written (the table and --json are written at the end; --csv/--jsonl stream rows)"
    return f"error: interrupted by {stop} {done}; {kept}"


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    tally = _Tally()
    try:
        with stop_on_signals() as signals:
            return _predict(args, tally, signals)
    except Interrupted as stop:
        print(_interrupted(stop, tally, args), file=sys.stderr, flush=True)
        return stop.exit_status
