"""Stream image files through a predictor in batches: decode the next batch while this one runs,
keep going past unreadable files, optionally average over horizontal flips (TTA)."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorcls.data.decode import DecodeOptions, ImageDecodeError, is_image_path, read_image
from tumorcls.inference.backends import Predictor, TorchPredictor, softmax

GLOB_CHARS = frozenset("*?[")


def find_images(args: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to predict, in order and without repeats, and the arguments that name nothing.

    A folder is searched recursively for image files (by extension); a file named explicitly, or
    matched by a glob pattern, is taken whatever its extension (decoding decides); a pattern is
    expanded here too, so quoted globs work (``**`` recursive).
    """
    files: dict[Path, None] = {}
    missing: list[tuple[Path, str]] = []

    def add(path: Path) -> None:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if found.is_file() and is_image_path(found):
                    files.setdefault(found, None)
        else:
            files.setdefault(path, None)

    for arg in args:
        path = Path(arg).expanduser()
        if path.exists():
            add(path)
        elif GLOB_CHARS & set(str(arg)):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                missing.append((path, "no file matches this pattern"))
            for match in matches:
                add(Path(match))
        else:
            missing.append((path, "no such file or directory"))
    return list(files), missing


@dataclass
class DecodedBatch:
    paths: list[Path]
    images: np.ndarray  # (n, size, size, 3) uint8 RGB, one per path
    errors: list[tuple[Path, str]] = field(default_factory=list)  # files of this batch that failed


@dataclass
class BatchOutput:
    probs: np.ndarray  # what the model says, temperature included
    raw_probs: np.ndarray | None = None  # at temperature 1, where the backend exposes logits


def _decode(paths: Sequence[Path], options: DecodeOptions) -> DecodedBatch:
    good: list[Path] = []
    images: list[np.ndarray] = []
    errors: list[tuple[Path, str]] = []
    for path in paths:
        try:
            images.append(read_image(path, options))
            good.append(path)
        except ImageDecodeError as exc:
            message = str(exc)
            prefix = f"{path}: "
            errors.append((path, message[len(prefix) :] if message.startswith(prefix) else message))
    side = options.size
    stack = np.stack(images) if images else np.zeros((0, side, side, 3), dtype=np.uint8)
    return DecodedBatch(good, stack, errors)


def iter_batches(paths: Sequence[Path], size: int, batch_size: int = 32) -> Iterator[DecodedBatch]:
    """Decoded batches in order; the next batch is decoded in a thread while the caller handles this one."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    options = DecodeOptions(size=size)
    chunks = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_decode, chunks[0], options)
        for nxt in chunks[1:]:
            batch = pending.result()
            pending = pool.submit(_decode, nxt, options)
            yield batch
        yield pending.result()


def predict_batch(predictor: Predictor, images: np.ndarray, tta: bool = False) -> BatchOutput:
    """Probabilities for a uint8 RGB batch. With ``tta`` the image and its mirror image are combined as training
    does (mean of the logits): for a backend that only gives probabilities, the renormalised geometric mean of the
    probabilities, which is the same thing (log-softmax differs from the logits by one constant per image)."""
    if len(images) == 0:
        n = len(predictor.class_names)
        return BatchOutput(np.zeros((0, n)), np.zeros((0, n)) if isinstance(predictor, TorchPredictor) else None)
    views = [images, np.ascontiguousarray(images[:, :, ::-1])] if tta else [images]
    if isinstance(predictor, TorchPredictor):
        logits = np.mean([predictor.predict_logits(v) for v in views], axis=0)
        return BatchOutput(softmax(logits, predictor.temperature), softmax(logits))
    if len(views) == 1:
        return BatchOutput(predictor.predict_proba(images))
    log_probs = np.mean([np.log(np.clip(predictor.predict_proba(v), 1e-30, None)) for v in views], axis=0)
    return BatchOutput(softmax(log_probs))
