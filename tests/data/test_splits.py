"""Split protocols: sizes, stratification, determinism, and grouped splits that never separate duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.reference_splits import reference_make_splits
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
    with pytest.raises(
        ValueError, match=r"^config: data.protocol must be one of \['seed', 'official', 'grouped'\], got 'random'$"
    ):
        make_splits("random", *pool)


# ------------------------------------------------------------- the grouped split equals its former O(N x G) code


def _grouped_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Group structures the real data has and some it has not: singletons, pairs, big mixed-label groups,
    non-contiguous ids, one group per class, one giant group, a class that is nobody's majority."""
    rng = np.random.default_rng(42)
    n = 2000
    labels = rng.integers(0, 4, size=n)
    cases = [
        ("singletons", labels, np.arange(n)),
        ("pairs", labels, np.arange(n) // 2),
        ("mixed", labels, rng.integers(0, 300, size=n)),
        ("sparse_ids", labels, rng.choice(10**9, size=150, replace=False)[rng.integers(0, 150, size=n)]),
        ("heavy_tail", labels, np.minimum(rng.zipf(1.6, size=n), 500)),
        ("one_per_class", labels, labels.copy()),
        ("one_group", labels, np.zeros(n, dtype=np.int64)),
        ("ties", np.tile([0, 1], n // 2), np.arange(n) // 2),  # every group a 1-1 tie: the lower label wins
    ]
    skewed = labels.copy()
    skewed[skewed == 3] = 2
    skewed[:5] = 3  # class 3 is only ever a minority in its groups
    cases.append(("minority_class", skewed, np.arange(n) // 10))
    return cases


@pytest.mark.parametrize("case", _grouped_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("seed", [0, 101])
def test_grouped_split_equals_the_reference(case, seed: int) -> None:
    _, labels, groups = case
    sources = np.where(np.arange(len(labels)) % 9 == 0, "Testing", "Training")
    for test_fraction, val_fraction in [(0.1, 0.1), (0.25, 0.05), (0.0, 0.2)]:
        kwargs = dict(seed=seed, test_fraction=test_fraction, val_fraction=val_fraction, groups=groups)
        got = make_splits("grouped", labels, sources, **kwargs)
        assert got.tolist() == reference_make_splits("grouped", labels, sources, **kwargs).tolist()


@pytest.mark.parametrize("case", _grouped_cases(), ids=lambda c: c[0])
def test_grouped_folds_equal_the_reference(case) -> None:
    _, labels, groups = case
    sources = np.full(len(labels), "Training")
    for num_folds, fold in [(5, 0), (5, 4), (3, 1)]:
        kwargs = dict(seed=7, groups=groups, num_folds=num_folds, fold=fold)
        got = make_splits("grouped", labels, sources, **kwargs)
        assert got.tolist() == reference_make_splits("grouped", labels, sources, **kwargs).tolist()


@pytest.mark.integration
def test_grouped_split_equals_the_reference_on_the_real_data(real_data) -> None:
    from tumorcls.data.audit import discover, inspect_all
    from tumorcls.data.hashing import duplicate_groups
    from tumorcls.labels import CLASS_TO_INDEX

    results = [r for r in inspect_all([e for e in discover(real_data).entries if e.is_image]) if r.status == "ok"]
    assert len(results) == 3264
    labels = np.array([CLASS_TO_INDEX[r.entry.label] for r in results])
    sources = np.array([r.entry.split for r in results])
    shas, hashes = [r.sha256 for r in results], np.array([r.phash for r in results], dtype=np.uint64)
    for distance in (None, 0, 4, 8):
        groups = duplicate_groups(shas, hashes, distance)
        for kwargs in (dict(seed=101), dict(seed=3, num_folds=5, fold=2)):
            got = make_splits("grouped", labels, sources, groups=groups, **kwargs)
            assert got.tolist() == reference_make_splits("grouped", labels, sources, groups=groups, **kwargs).tolist()
