"""Evaluate a model on a labelled folder-per-class dataset: metrics, report, confusion matrix, calibration.

ROOT/<class>/* (class folders matched through aliases: glioma, notumor, no, meningioma, pituitary...), or
the Kaggle layout ROOT/{Training,Testing}/<class>/* with --split Testing. The model is one file or several, an
ensemble evaluated as one model (the mean of the members' probabilities). The command line is
tumorcls.cli.evaluate; the images go through the one evaluation loop (evaluation.loop) that training's test stage
runs too, and the files written are evaluation.artifacts'.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.data.class_folders import canonical_class, class_index_map, map_class_folders
from tumorcls.data.files import FOLDER_LAYOUT, SINGLE_SPLIT, list_class_folders, walk_dataset
from tumorcls.errors import DatasetError
from tumorcls.evaluation.calibration import DEFAULT_BINS
from tumorcls.evaluation.loop import PLAIN, TTA, LabelledBatch, score, write_report
from tumorcls.inference.backends import Predictor, load_model, model_field
from tumorcls.inference.backends.loader import ModelPaths
from tumorcls.inference.batching import iter_batches

log = logging.getLogger(__name__)


def dataset_files(root: Path, split: str | None = None) -> tuple[list[Path], list[str], list[Path]]:
    """(image files, canonical class of each, skipped non-image files) of a folder-per-class dataset,
    found by the data stage's one finder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: '{root}'")
    base = root / split if split else root
    if not base.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(f"split folder '{base}' not found; '{root}' holds {found}")
    folders = list_class_folders(base)
    if not folders:
        raise DatasetError(f"no class folders in '{base}'; expected {base}/<class>/<image>")
    if not split and not any(canonical_class(f.name) for f in folders):
        raise DatasetError(
            f"'{base}' holds {sorted(f.name for f in folders)}, not class folders; "
            f"pick a split with --split {sorted(f.name for f in folders)[0]}"
        )
    map_class_folders(folders)  # unknown or doubled class folders: one line
    dataset = walk_dataset(root, [(split or SINGLE_SPLIT, base)], FOLDER_LAYOUT)
    files = [f.path for f in dataset.images]
    if not files:
        raise DatasetError(f"no image files under '{base}'")
    return files, [str(f.label) for f in dataset.images], dataset.non_images


def labelled_batches(
    predictor: Predictor, files: list[Path], labels: list[str], batch_size: int, failures: list[tuple[Path, str]]
) -> Iterator[LabelledBatch]:
    """The files decoded as the model's users decode them, with their class indices; an unreadable file is
    warned about, recorded in ``failures`` and skipped."""
    index = class_index_map(predictor.class_names)
    label_of = dict(zip(files, labels))
    for batch in iter_batches(files, predictor.decode_options(), batch_size):
        for path, reason in batch.errors:
            print(f"warning: {path}: {reason} (skipped)", file=sys.stderr)
            failures.append((path, reason))
        truth = np.asarray([index[label_of[p]] for p in batch.paths], dtype=np.int64)
        yield LabelledBatch(batch.images, truth, batch.paths)


def evaluate(
    predictor: Predictor,
    files: list[Path],
    labels: list[str],
    batch_size: int = 32,
    tta: bool = False,
) -> dict[str, Any]:
    """The evaluation loop's scores (plain, and with ``tta`` also flip-averaged), and of the mode asked for: its
    probabilities (temperature included), uncalibrated ones (T = 1, when known), true indices; failures."""
    index = class_index_map(predictor.class_names)
    missing = sorted({c for c in labels if c not in index})
    if missing:
        raise DatasetError(f"the model has no output for class(es) {missing}; its classes: {predictor.class_names}")
    failures: list[tuple[Path, str]] = []
    scores = score(predictor, labelled_batches(predictor, files, labels, batch_size, failures), tta)
    if scores.n == 0:
        raise DatasetError(f"none of the {len(files)} image files could be decoded")
    mode = TTA if tta else PLAIN
    return {
        "probs": scores.probs[mode],
        "raw_probs": scores.raw_probs[mode],
        "labels": scores.labels,
        "paths": scores.paths,
        "failures": failures,
        "scores": scores,
        "mode": mode,
    }


def evaluate_dataset(
    model: ModelPaths,
    data: Path,
    out: Path,
    split: str | None = None,
    *,
    tta: bool = False,
    batch_size: int = 32,
    device: str = "cpu",
    threads: int | None = None,
    bins: int = DEFAULT_BINS,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate the model file (or the ensemble of several) on the dataset and write the artifacts to ``out``;
    returns (metrics, result)."""
    files, labels, skipped = dataset_files(data, split)
    if skipped:
        log.warning("skipped %d non-image file(s) (e.g. %s)", len(skipped), ", ".join(p.name for p in skipped[:3]))
    predictor = load_model(model, device=device, threads=threads)
    result = evaluate(predictor, files, labels, batch_size, tta)
    data = Path(data) / split if split else Path(data)
    info = {
        "model": model_field(model),
        "backend": predictor.backend,
        "data": str(data),
        "failed_files": [str(p) for p, _ in result["failures"]],
    }
    title = f"{data.name} ({predictor.backend})"
    metrics = write_report(
        out, result["scores"], predictor.class_names, info, reported=result["mode"], title=title, bins=bins
    )
    return metrics, result
