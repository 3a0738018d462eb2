"""Evaluate a model on a labelled folder-per-class dataset: metrics, report, confusion matrix, calibration.

ROOT/<class>/* (class folders matched through aliases: glioma, notumor, no, meningioma, pituitary...), or
the Kaggle layout ROOT/{Training,Testing}/<class>/* with --split Testing.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.atomic_io import atomic_write_json, atomic_write_text
from tumorcls.data.class_folders import canonical_class, class_index_map, map_class_folders
from tumorcls.data.decode import is_image_path
from tumorcls.errors import DatasetError, TumorclsError
from tumorcls.inference.backends import Predictor, load_predictor, softmax
from tumorcls.inference.batching import iter_batches, predict_batch

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model file: .ckpt, .onnx or .h5")
    parser.add_argument("--data", required=True, type=Path, help="dataset root (folder per class, or Kaggle layout)")
    parser.add_argument("--split", help="sub-folder of --data holding the class folders (e.g. Testing)")
    parser.add_argument("--out", type=Path, help="output folder (default: eval_<model name>)")
    parser.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="CPU threads for torch / ONNX Runtime")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (checkpoints only)")
    parser.add_argument("--bins", type=int, default=15, help="confidence bins for ECE and the reliability diagram")


def dataset_files(root: Path, split: str | None = None) -> tuple[list[Path], list[str], list[Path]]:
    """(image files, canonical class of each, skipped non-image files) of a folder-per-class dataset."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: '{root}'")
    base = root / split if split else root
    if not base.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(f"split folder '{base}' not found; '{root}' holds {found}")
    folders = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise DatasetError(f"no class folders in '{base}'; expected {base}/<class>/<image>")
    if not split and not any(canonical_class(f.name) for f in folders):
        raise DatasetError(
            f"'{base}' holds {sorted(f.name for f in folders)}, not class folders; "
            f"pick a split with --split {sorted(f.name for f in folders)[0]}"
        )
    files: list[Path] = []
    labels: list[str] = []
    skipped: list[Path] = []
    for folder, canonical in map_class_folders(folders).items():
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            if is_image_path(path):
                files.append(path)
                labels.append(canonical)
            else:
                skipped.append(path)
    if not files:
        raise DatasetError(f"no image files under '{base}'")
    return files, labels, skipped


def uncalibrated(probs: np.ndarray, temperature: float | None) -> np.ndarray | None:
    """softmax(logits) from softmax(logits / T): log p is logits / T up to a per-row constant."""
    if temperature is None:
        return None
    if temperature == 1.0:
        return probs
    return softmax(np.log(np.clip(probs, 1e-300, None)) * temperature)


def evaluate(
    predictor: Predictor,
    files: list[Path],
    labels: list[str],
    batch_size: int = 32,
    tta: bool = False,
) -> dict[str, Any]:
    """Probabilities (temperature included), uncalibrated ones (T = 1, when known), true indices, failures."""
    index = class_index_map(predictor.class_names)
    missing = sorted({c for c in labels if c not in index})
    if missing:
        raise DatasetError(f"the model has no output for class(es) {missing}; its classes: {predictor.class_names}")
    label_of = dict(zip(files, labels))
    probs, raw, truth, kept, failures = [], [], [], [], []
    for batch in iter_batches(files, predictor.input_size, batch_size):
        for path, reason in batch.errors:
            print(f"warning: {path}: {reason} (skipped)", file=sys.stderr)
            failures.append((path, reason))
        out = predict_batch(predictor, batch.images, tta)
        probs.append(out.probs)
        raw.append(out.raw_probs if out.raw_probs is not None else uncalibrated(out.probs, predictor.temperature))
        truth.extend(index[label_of[p]] for p in batch.paths)
        kept.extend(batch.paths)
    if not kept:
        raise DatasetError(f"none of the {len(files)} image files could be decoded")
    n_classes = len(predictor.class_names)
    return {
        "probs": np.concatenate(probs) if probs else np.zeros((0, n_classes)),
        "raw_probs": None if any(r is None for r in raw) else np.concatenate(raw),
        "labels": np.asarray(truth, dtype=np.int64),
        "paths": kept,
        "failures": failures,
    }


def _predictions_csv(paths: list[Path], labels: np.ndarray, probs: np.ndarray, names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "true", "predicted", "confidence", *names])
    for path, y, p in zip(paths, labels, probs):
        k = int(np.argmax(p))
        writer.writerow([str(path), names[y], names[k], f"{p[k]:.6f}", *(f"{v:.6f}" for v in p)])
    return buffer.getvalue()


def write_artifacts(out: Path, result: dict[str, Any], predictor: Predictor, info: dict[str, Any], bins: int) -> dict:
    from tumorcls.evaluation.calibration import expected_calibration_error, reliability_figure
    from tumorcls.evaluation.plots import confusion_matrix_figure, save_figure
    from tumorcls.evaluation.reports import classification_report, summary_metrics

    names = list(predictor.class_names)
    probs, labels, raw = result["probs"], result["labels"], result["raw_probs"]
    n = len(names)
    confmat = np.bincount(labels * n + probs.argmax(axis=1), minlength=n * n).reshape(n, n)
    metrics = summary_metrics(confmat, names)
    nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, None))))
    calibration: dict[str, Any] = {
        "temperature": predictor.temperature,
        "ece": expected_calibration_error(probs, labels, bins),
        "nll": nll,
        "bins": bins,
    }
    series = {f"model (T={predictor.temperature:.3f})" if predictor.temperature else "model": probs}
    if raw is not None and predictor.temperature not in (None, 1.0):
        calibration["ece_uncalibrated"] = expected_calibration_error(raw, labels, bins)
        series = {"T=1 (uncalibrated)": raw, **series}
    metrics.update(calibration=calibration, **info, failed_files=[str(p) for p, _ in result["failures"]])
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "classification_report.txt", classification_report(confmat, names))
    atomic_write_text(out / "predictions.csv", _predictions_csv(result["paths"], labels, probs, names))
    title = f"{Path(info['data']).name} ({info['backend']})"
    save_figure(confusion_matrix_figure(confmat, names, title), out / "confusion_matrix.png")
    save_figure(reliability_figure(series, labels, bins, title="Reliability"), out / "reliability_diagram.png")
    return metrics


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise TumorclsError("--batch-size must be at least 1")
    if args.bins < 1:
        raise TumorclsError("--bins must be at least 1")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise TumorclsError(f"--out '{args.out}' is a file; give a folder for the artifacts")
    files, labels, skipped = dataset_files(args.data, args.split)
    if skipped:
        log.warning("skipped %d non-image file(s) (e.g. %s)", len(skipped), ", ".join(p.name for p in skipped[:3]))
    predictor = load_predictor(args.model, device=args.device, threads=args.threads)
    out = args.out or Path(f"eval_{Path(args.model).stem}")
    result = evaluate(predictor, files, labels, args.batch_size, args.tta)
    data = Path(args.data) / args.split if args.split else Path(args.data)
    info = {"model": str(args.model), "backend": predictor.backend, "data": str(data), "tta": args.tta}
    metrics = write_artifacts(out, result, predictor, info, args.bins)
    cal = metrics["calibration"]
    before = f", ECE at T=1 {cal['ece_uncalibrated']:.4f}" if "ece_uncalibrated" in cal else ""
    print(
        f"{metrics['n']} images: accuracy {metrics['acc']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"ECE {cal['ece']:.4f}{before}; {len(result['failures'])} unreadable; artifacts in {out}"
    )
    return 0
