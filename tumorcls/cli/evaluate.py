"""Evaluate a model on a labelled folder-per-class dataset: metrics, report, confusion matrix, calibration.

The model is a .ckpt, .onnx or .h5 file, or an ensemble of them (``--model`` repeated: the mean of their
probabilities). The dataset is ROOT/<class>/* (class folders matched through aliases:
glioma, notumor, no, meningioma, pituitary...), or the Kaggle layout ROOT/{Training,Testing}/<class>/* with
--split Testing.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path

from tumorcls.errors import TumorclsError

# torch and the evaluation stage are imported in run(): `tumorcls evaluate --help` loads neither
DEFAULT_BINS = 15  # tumorcls.evaluation.calibration.DEFAULT_BINS (a test holds them equal)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        help="model file: .ckpt, .onnx or .h5; repeat it for an ensemble (the mean of the models' probabilities)",
    )
    parser.add_argument("--data", required=True, type=Path, help="dataset root (folder per class, or Kaggle layout)")
    parser.add_argument("--split", help="sub-folder of --data holding the class folders (e.g. Testing)")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: eval_<model name>; eval_ensemble<N>_<hash> for N models)"
    )
    parser.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="CPU threads for torch / ONNX Runtime")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (checkpoints only)")
    parser.add_argument(
        "--bins", type=int, default=DEFAULT_BINS, help="confidence bins for ECE and the reliability diagram"
    )


def default_out(models: Sequence[str | Path]) -> Path:
    """eval_<model name> for one model; for an ensemble eval_ensemble<N>_<8 hex digits of its members' paths>
    (the seeds of a recipe are often all named best.ckpt)."""
    if len(models) == 1:
        return Path(f"eval_{Path(models[0]).stem}")
    members = "\n".join(str(Path(m).expanduser().resolve()) for m in models)
    return Path(f"eval_ensemble{len(models)}_{hashlib.sha256(members.encode()).hexdigest()[:8]}")


def run(args: argparse.Namespace) -> int:
    from tumorcls.evaluation.evaluate import evaluate_dataset

    if args.batch_size < 1:
        raise TumorclsError("--batch-size must be at least 1")
    if args.bins < 1:
        raise TumorclsError("--bins must be at least 1")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise TumorclsError(f"--out '{args.out}' is a file; give a folder for the artifacts")
    out = args.out or default_out(args.model)
    metrics, result = evaluate_dataset(
        args.model,
        args.data,
        out,
        args.split,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        bins=args.bins,
    )
    cal = metrics["calibration"]
    before = f", ECE at T=1 {cal['ece_uncalibrated']:.4f}" if "ece_uncalibrated" in cal else ""
    print(
        f"{metrics['n']} images: accuracy {metrics['acc']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"ECE {cal['ece']:.4f}{before}; {len(result['failures'])} unreadable; artifacts in {out}"
    )
    return 0
