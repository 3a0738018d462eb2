"""Content hashes for duplicate detection: SHA-256 of the bytes and a 64-bit perceptual hash (pHash).

pHash follows the usual recipe: greyscale, 32x32 Lanczos resize, 2-D DCT-II, keep the 8x8 lowest
frequencies, threshold at their median. Near-duplicate search compares packed 64-bit hashes with a
vectorised popcount in row blocks, so it needs no Python loop over pairs; for many hashes and a small
distance, multi-index hashing (pigeonhole on d+1 bit chunks) only verifies pairs that share a chunk.
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


def phash(img: Image.Image | np.ndarray) -> np.uint64:
    """64-bit perceptual hash of a PIL image or a uint8 (H, W) / (H, W, 3) RGB array, as an unsigned integer.
    An array hashes like the PIL image it came from: greyscale by PIL's own RGB -> L conversion."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    gray = np.asarray(img.convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT @ gray @ _DCT.T
    bits = (low > np.median(low)).ravel()
    return np.uint64(np.sum(_BIT_WEIGHTS[bits], dtype=np.uint64))


def hamming_pairs(hashes: np.ndarray, max_distance: int, block: int = 1024, max_cells: int = 1 << 22) -> np.ndarray:
    """All index pairs (i < j, sorted) whose hashes differ in at most ``max_distance`` bits, as an (M, 2)
    array. Rows are compared in blocks against the hashes after them only (the upper triangle), with at
    most about ``max_cells`` distances in memory at once (32 MiB of XORs by default)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    block = max(1, min(block, max_cells // max(n, 1)))
    found: list[np.ndarray] = []
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        dist = np.bitwise_count(rows[:, None] ^ hashes[None, start:])
        ii, jj = np.nonzero(dist <= max_distance)
        keep = jj > ii
        found.append(np.stack([ii[keep] + start, jj[keep] + start], axis=1).astype(np.int64))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


# near_pairs uses multi-index hashing from this many hashes on, up to this distance: on 50k synthetic
# pHashes (2-core CPU) it takes 0.01 / 1.0 / 4.6 / 12 s at distance 0 / 4 / 6 / 8 against about 5-7 s
# for the blocked all-pairs popcount (`python -m tumorcls.data.audit --benchmark`)
MULTI_INDEX_MIN_HASHES = 4096
MULTI_INDEX_MAX_DISTANCE = 6


def _chunk_widths(n_chunks: int) -> list[int]:
    """Split 64 bits into ``n_chunks`` contiguous chunks whose widths differ by at most one."""
    return [64 // n_chunks + (1 if i < 64 % n_chunks else 0) for i in range(n_chunks)]


def _bucket_candidates(keys: np.ndarray, max_candidates: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Yield batches of index pairs (i, j) with equal keys, every such pair once, about
    ``max_candidates`` at a time."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    n = len(keys)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], n]
    later = np.repeat(ends, ends - starts) - np.arange(n) - 1  # same-key positions after each position
    positions = np.flatnonzero(later)
    counts = later[positions]
    cumulative = np.cumsum(counts)
    a = 0
    while a < len(positions):
        before = cumulative[a] - counts[a]
        b = max(a + 1, int(np.searchsorted(cumulative, before + max_candidates, side="right")))
        pos, cnt = positions[a:b], counts[a:b]
        first = np.repeat(pos, cnt)
        step = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
        yield order[first], order[first + step]
        a = b


def multi_index_pairs(hashes: np.ndarray, max_distance: int, max_candidates: int = 1 << 22) -> np.ndarray:
    """Same result as :func:`hamming_pairs`, by multi-index hashing: two hashes within ``max_distance``
    bits agree exactly on at least one of ``max_distance + 1`` disjoint chunks (pigeonhole), so only
    pairs sharing a chunk value are verified, with a vectorised popcount. A pair is kept in the first
    chunk it agrees on, so none is reported twice."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2 or max_distance >= 63:
        return hamming_pairs(hashes, max_distance)
    codes: list[np.ndarray] = []
    chunks: list[tuple[np.uint64, np.uint64]] = []  # (shift, mask) of the chunks done so far
    offset = 0
    for width in _chunk_widths(max_distance + 1):
        shift, mask = np.uint64(offset), np.uint64((1 << width) - 1)
        offset += width
        for i, j in _bucket_candidates((hashes >> shift) & mask, max_candidates):
            diff = hashes[i] ^ hashes[j]
            keep = np.bitwise_count(diff) <= max_distance
            for earlier_shift, earlier_mask in chunks:
                keep &= ((diff >> earlier_shift) & earlier_mask) != 0
            lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
            codes.append(lo.astype(np.int64) * n + hi)
        chunks.append((shift, mask))
    ordered = np.sort(np.concatenate(codes)) if codes else np.empty(0, dtype=np.int64)
    return np.stack([ordered // n, ordered % n], axis=1)


def near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Pairs (i < j, sorted) within ``max_distance`` bits, by whichever search is faster for the size."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) >= MULTI_INDEX_MIN_HASHES and max_distance <= MULTI_INDEX_MAX_DISTANCE:
        return multi_index_pairs(hashes, max_distance)
    return hamming_pairs(hashes, max_distance)


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
        pairs.extend(map(tuple, near_pairs(np.asarray(phashes, dtype=np.uint64), max_distance)))
    return connected_groups(n, pairs)
