"""Content hashes for duplicate detection: SHA-256 of the bytes and a 64-bit perceptual hash (pHash).

pHash follows the usual recipe: greyscale, 32x32 Lanczos resize, 2-D DCT-II, keep the 8x8 lowest
frequencies, threshold at their median. Near-duplicate search compares packed 64-bit hashes with a
vectorised popcount in row blocks, so it needs no Python loop over pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from PIL import Image

_HASH_SIDE = 32
_LOW = 8


def _dct_rows(n: int, keep: int) -> np.ndarray:
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = _dct_rows(_HASH_SIDE, _LOW)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def phash(img: Image.Image) -> np.uint64:
    """64-bit perceptual hash of a PIL image, as an unsigned integer."""
    gray = np.asarray(img.convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT @ gray @ _DCT.T
    bits = (low > np.median(low)).ravel()
    return np.uint64(np.sum(_BIT_WEIGHTS[bits], dtype=np.uint64))


def hamming_pairs(hashes: np.ndarray, max_distance: int, block: int = 1024) -> np.ndarray:
    """All index pairs (i < j) whose hashes differ in at most ``max_distance`` bits, as an (M, 2) array."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    found: list[np.ndarray] = []
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        dist = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        ii = ii + start
        keep = jj > ii
        found.append(np.stack([ii[keep], jj[keep]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def connected_groups(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Component id per item (0..G-1, numbered by first appearance) given linked pairs."""
    uf = _UnionFind(n)
    for a, b in pairs:
        uf.union(int(a), int(b))
    roots = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    _, ids = np.unique(roots, return_inverse=True)
    return ids.astype(np.int64)


def duplicate_groups(sha256: list[str], phashes: np.ndarray, max_distance: int | None) -> np.ndarray:
    """Group ids linking exact duplicates (same bytes) and, unless ``max_distance`` is None,
    near duplicates (pHash within ``max_distance`` bits)."""
    n = len(sha256)
    pairs: list[tuple[int, int]] = []
    first_seen: dict[str, int] = {}
    for i, digest in enumerate(sha256):
        if digest in first_seen:
            pairs.append((first_seen[digest], i))
        else:
            first_seen[digest] = i
    if max_distance is not None and n:
        pairs.extend(map(tuple, hamming_pairs(np.asarray(phashes, dtype=np.uint64), max_distance)))
    return connected_groups(n, pairs)
