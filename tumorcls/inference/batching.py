"""Stream image files through a predictor in batches: decode the next batch while this one runs (with the
model's own decode options, so its crop and intensity normalisation are applied), keep going past unreadable
files, optionally average over horizontal flips (TTA)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorcls.data.decode import DecodeOptions, ImageDecodeError, decode_image, read_file_bytes
from tumorcls.inference.backends.base import BatchOutput, Predictor


@dataclass
class DecodedBatch:
    paths: list[Path]
    images: np.ndarray  # (n, size, size, 3) uint8 RGB, one per path
    errors: list[tuple[Path, str]] = field(default_factory=list)  # files of this batch that failed


def _decode(paths: Sequence[Path], options: DecodeOptions) -> DecodedBatch:
    good: list[Path] = []
    images: list[np.ndarray] = []
    errors: list[tuple[Path, str]] = []
    for path in paths:
        try:  # read_image's steps, without the path it would put in front of the reason
            images.append(decode_image(read_file_bytes(Path(path)), options, Path(path).name))
            good.append(path)
        except ImageDecodeError as exc:
            errors.append((path, str(exc)))
    side = options.size
    stack = np.stack(images) if images else np.zeros((0, side, side, 3), dtype=np.uint8)
    return DecodedBatch(good, stack, errors)


def iter_batches(paths: Sequence[Path], options: DecodeOptions, batch_size: int = 32) -> Iterator[DecodedBatch]:
    """Decoded batches in order, each file prepared as ``options`` say (the model's own, from
    ``Predictor.decode_options()``: size, crop, intensity); the next batch is decoded in a thread while the
    caller handles this one."""
    if not isinstance(options, DecodeOptions):  # a bare size would silently drop the model's preprocessing
        raise TypeError(f"iter_batches takes the model's DecodeOptions, got {type(options).__name__}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
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
    """Probabilities for a uint8 RGB batch; with ``tta`` the image and its mirror image are combined the way
    the backend combines views (see :meth:`Predictor.predict_views`)."""
    views = [images, np.ascontiguousarray(images[:, :, ::-1])] if tta else [images]
    return predictor.predict_views(views)
