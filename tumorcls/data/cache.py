"""Decode a list of image files once, in parallel, into one in-memory uint8 array.

Each file is read once: the same bytes give the SHA-256, the perceptual hash and the resized RGB
pixels. Unreadable files are skipped, counted and logged once, so training never meets them.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorcls.data.decode import DecodeOptions, ImageDecodeError, load_image, prepare_rgb, read_file_bytes
from tumorcls.data.hashing import phash, sha256_bytes
from tumorcls.data.scan import ImageRecord
from tumorcls.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass
class DecodedImages:
    records: list[ImageRecord]  # the readable ones, aligned with the arrays below
    images: np.ndarray  # (N, size, size, 3) uint8 RGB
    labels: np.ndarray  # (N,) int64
    sha256: list[str]
    phashes: np.ndarray  # (N,) uint64
    failures: list[tuple[Path, str]]  # (path, one-line reason) of the skipped files


def _decode_one(record: ImageRecord, options: DecodeOptions) -> tuple[np.ndarray, str, np.uint64] | str:
    try:
        data = read_file_bytes(record.path)
        image = load_image(data, options, record.path.name)
    except ImageDecodeError as exc:
        return str(exc)
    return prepare_rgb(image.rgb, options), sha256_bytes(data), phash(image.rgb)


def decode_records(records: list[ImageRecord], options: DecodeOptions = DecodeOptions()) -> DecodedImages:
    """Decode every record; raises DatasetError when none is readable."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda r: _decode_one(r, options), records))
    kept, images, shas, hashes, failures = [], [], [], [], []
    for record, result in zip(records, results):
        if isinstance(result, str):
            failures.append((record.path, result))
            continue
        kept.append(record)
        images.append(result[0])
        shas.append(result[1])
        hashes.append(result[2])
    if failures:
        examples = "; ".join(f"{p.name}: {why}" for p, why in failures[:3])
        log.warning("skipped %d unreadable image file(s) of %d (%s)", len(failures), len(records), examples)
    if not kept:
        raise DatasetError(f"none of the {len(records)} image files could be decoded (e.g. {failures[0][1]})")
    return DecodedImages(
        records=kept,
        images=np.stack(images),
        labels=np.array([r.label for r in kept], dtype=np.int64),
        sha256=shas,
        phashes=np.array(hashes, dtype=np.uint64),
        failures=failures,
    )
