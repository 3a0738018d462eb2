"""Decode a list of image files once, in parallel, each straight into its row of one uint8 array.

Each file is read once: the same bytes give the SHA-256, the perceptual hash and the resized RGB
pixels. Unreadable files are skipped, counted and logged once, so training never meets them. Where the
rows go is the caller's: an array in memory (:func:`decode_records`) or the on-disk cache file
(``tumorcls.data.disk_cache``); no per-image list is kept and nothing is stacked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.data.decode import DecodeOptions, ImageDecodeError, load_image, prepare_rgb, read_file_bytes
from tumorcls.data.hashing import phash, sha256_bytes
from tumorcls.data.mapped_arrays import picklable_array, unpickled_array
from tumorcls.data.scan import ImageRecord
from tumorcls.errors import DatasetError

log = logging.getLogger(__name__)

# rows handed to the thread pool at a time: bounds the queued futures, whatever the dataset's size
_CHUNK = 2048

RowWriter = Callable[[int, np.ndarray], None]  # (row, (size, size, 3) uint8 pixels) -> stored
Decoded = tuple[str, np.uint64] | str  # (sha256, phash) of a decoded file, or why it was skipped


@dataclass
class DecodedImages:
    records: list[ImageRecord]  # the readable ones, aligned with the arrays below
    images: np.ndarray  # (N, size, size, 3) uint8 RGB: in memory, or a read-only np.memmap of the cache file
    labels: np.ndarray  # (N,) int64
    sha256: list[str]
    phashes: np.ndarray  # (N,) uint64
    failures: list[tuple[Path, str]]  # (path, one-line reason) of the skipped files

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (spawned workers, ddp_spawn), a memory-mapped array travels as its file, not its pixels."""
        return {**self.__dict__, "images": picklable_array(self.images)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, images=unpickled_array(state["images"]))


def _decode_one(record: ImageRecord, options: DecodeOptions, row: int, write: RowWriter) -> Decoded:
    try:
        data = read_file_bytes(record.path)
        image = load_image(data, options, record.path.name)
    except ImageDecodeError as exc:
        return str(exc)
    write(row, np.ascontiguousarray(prepare_rgb(image.rgb, options)))
    return sha256_bytes(data), phash(image.rgb)


def decode_into(records: list[ImageRecord], options: DecodeOptions, write: RowWriter) -> list[Decoded]:
    """Decode record ``i`` into row ``i`` through ``write`` (threads: the decoders release the GIL); the
    hashes or the reason, per record. Rows of skipped files are left unwritten."""
    results: list[Decoded] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(records), _CHUNK):
            rows = range(start, min(start + _CHUNK, len(records)))
            results.extend(pool.map(lambda i: _decode_one(records[i], options, i, write), rows))
    return results


def log_failures(failures: list[tuple[Path, str]], total: int) -> None:
    """The one warning about the skipped files (by a decode, or read back from the cache)."""
    if failures:
        examples = "; ".join(f"{p.name}: {why}" for p, why in failures[:3])
        log.warning("skipped %d unreadable image file(s) of %d (%s)", len(failures), total, examples)


def kept_rows(records: list[ImageRecord], results: list[Decoded]) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """The rows that decoded, and (path, reason) of those that did not (logged once; none: DatasetError)."""
    failures = [(r.path, why) for r, why in zip(records, results) if isinstance(why, str)]
    log_failures(failures, len(records))
    if len(failures) == len(records):
        raise DatasetError(f"none of the {len(records)} image files could be decoded (e.g. {failures[0][1]})")
    return np.array([i for i, r in enumerate(results) if not isinstance(r, str)], dtype=np.int64), failures


def compact_rows(images: np.ndarray, kept: np.ndarray, block: int = 256) -> None:
    """Move rows ``kept`` (increasing) to the front of ``images``, in place and in blocks: a skipped file
    leaves no gap. Every source row is at or after its destination, so no block overwrites a row still to move."""
    moved = np.flatnonzero(kept != np.arange(len(kept)))
    for start in range(int(moved[0]) if len(moved) else len(kept), len(kept), block):
        rows = kept[start : start + block]
        images[start : start + len(rows)] = images[rows]


def decoded_images(
    records: list[ImageRecord], results: list[Decoded], images: np.ndarray, kept: np.ndarray
) -> DecodedImages:
    """The readable records with their rows ``images[:len(kept)]`` (already compacted) and hashes."""
    ok = [results[i] for i in kept]
    kept_records = [records[i] for i in kept]
    return DecodedImages(
        records=kept_records,
        images=images[: len(kept)],
        labels=np.array([r.label for r in kept_records], dtype=np.int64),
        sha256=[sha for sha, _ in ok],
        phashes=np.array([h for _, h in ok], dtype=np.uint64),
        failures=[(records[i].path, results[i]) for i in range(len(records)) if isinstance(results[i], str)],
    )


def decode_records(records: list[ImageRecord], options: DecodeOptions = DecodeOptions()) -> DecodedImages:
    """Decode every record into one array in memory (no cache); raises DatasetError when none is readable."""
    images = np.empty((len(records), options.size, options.size, 3), dtype=np.uint8)

    def write(row: int, pixels: np.ndarray) -> None:
        images[row] = pixels

    results = decode_into(records, options, write)
    kept, _ = kept_rows(records, results)
    compact_rows(images, kept)
    return decoded_images(records, results, images, kept)
