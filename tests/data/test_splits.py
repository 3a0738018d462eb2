"""Split protocols: sizes, stratification, determinism, and grouped splits that never separate duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from tumorcls.data.splits import make_splits


@pytest.fixture
def pool() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=1000)
    sources = np.where(np.arange(1000) < 880, "Training", "Testing")
    return labels, sources


def test_seed_protocol_holds_out_ten_percent_then_ten_percent(pool) -> None:
    labels, sources = pool
    split = make_splits("seed", labels, sources, seed=101)
    assert (split == "test").sum() == 100 and (split == "val").sum() == 90 and (split == "train").sum() == 810


def test_official_protocol_uses_the_testing_folder(pool) -> None:
    labels, sources = pool
    split = make_splits("official", labels, sources, seed=3, val_fraction=0.1)
    assert np.array_equal(split == "test", sources == "Testing")
    val, train = labels[split == "val"], labels[(split != "test")]
    for c in range(4):  # stratified: each class keeps ~10% in val
        assert abs((val == c).sum() - 0.1 * (train == c).sum()) <= 1


@pytest.mark.parametrize("protocol", ["seed", "official", "grouped"])
def test_splits_are_deterministic_for_a_seed(pool, protocol: str) -> None:
    labels, sources = pool
    groups = np.arange(len(labels)) // 3
    a = make_splits(protocol, labels, sources, seed=7, groups=groups)
    b = make_splits(protocol, labels, sources, seed=7, groups=groups)
    c = make_splits(protocol, labels, sources, seed=8, groups=groups)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_grouped_protocol_keeps_each_group_on_one_side(pool) -> None:
    labels, sources = pool
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 300, size=len(labels))  # many multi-member groups with mixed labels
    split = make_splits("grouped", labels, sources, seed=11, groups=groups)
    for g in np.unique(groups):
        assert len(set(split[groups == g])) == 1
    sizes = {s: (split == s).sum() for s in ("train", "val", "test")}
    assert 60 <= sizes["test"] <= 140 and 50 <= sizes["val"] <= 130


def test_unknown_protocol_is_rejected(pool) -> None:
    with pytest.raises(ValueError, match="unknown split protocol 'random'"):
        make_splits("random", *pool)
