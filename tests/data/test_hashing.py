"""Perceptual hashes and duplicate grouping."""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image

from tests.helpers.synthetic import synthetic_image
from tumorcls.data.hashing import connected_groups, duplicate_groups, hamming_pairs, phash


def test_phash_is_stable_under_resize_and_differs_between_images() -> None:
    rng = np.random.default_rng(0)
    a = Image.fromarray(synthetic_image(0, rng, 128))
    b = Image.fromarray(synthetic_image(3, rng, 128))
    h_a, h_a_small, h_b = int(phash(a)), int(phash(a.resize((96, 96)))), int(phash(b))
    assert bin(h_a ^ h_a_small).count("1") <= 4
    assert bin(h_a ^ h_b).count("1") > 10


def test_hamming_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    # plant near copies with 1..3 flipped bits
    near = base[:10] ^ (np.uint64(1) << rng.integers(0, 64, size=10).astype(np.uint64))
    hashes = np.concatenate([base, near])
    for d in (0, 1, 3, 12):
        pairs = itertools.combinations(range(len(hashes)), 2)
        expected = {(i, j) for i, j in pairs if bin(int(hashes[i] ^ hashes[j])).count("1") <= d}
        got = {tuple(p) for p in hamming_pairs(hashes, d, block=7).tolist()}
        assert got == expected


def test_connected_groups_are_transitive() -> None:
    ids = connected_groups(6, [(0, 1), (1, 2), (4, 5)])
    assert ids[0] == ids[1] == ids[2] and ids[4] == ids[5]
    assert len({ids[0], ids[3], ids[4]}) == 3


def test_duplicate_groups_link_exact_and_near_copies() -> None:
    shas = ["a", "b", "a", "c", "d"]
    hashes = np.array([0b0, 0b1111_0000, 0b1, 0b1111_0001, 0xFFFF_FFFF], dtype=np.uint64)
    exact_only = duplicate_groups(shas, hashes, None)
    assert exact_only[0] == exact_only[2] and len(set(exact_only.tolist())) == 4
    near = duplicate_groups(shas, hashes, 1)
    assert near[1] == near[3] and near[0] == near[2] and near[0] != near[1]
