"""The grouped split as it was before it was made O(N log N) (it built each group's members with a scan of all N
items, O(N x groups)), kept verbatim as the reference the fast code must equal, item for item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PROTOCOLS = ("seed", "official", "grouped")


def _stratified_pick(labels: np.ndarray, idx: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Pick round(fraction * n_c) of ``idx`` for each class c; returns a boolean mask over ``idx``."""
    picked = np.zeros(len(idx), dtype=bool)
    for c in np.unique(labels[idx]):
        members = np.flatnonzero(labels[idx] == c)
        rng.shuffle(members)
        picked[members[: int(round(fraction * len(members)))]] = True
    return picked


def _groups_by_class(labels: np.ndarray, groups: np.ndarray) -> tuple[dict[Any, np.ndarray], list[list[Any]]]:
    """The members of each group, and per class (in label order) its groups by majority label, in id order."""
    group_ids = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in group_ids}
    majority = {g: int(np.bincount(labels[m]).argmax()) for g, m in members.items()}
    return members, [[g for g in group_ids if majority[g] == c] for c in np.unique(labels)]


def _grouped_assign(
    labels: np.ndarray, groups: np.ndarray, test_fraction: float, val_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    split = np.empty(len(labels), dtype=object)
    members, by_class = _groups_by_class(labels, groups)
    for class_groups in by_class:
        rng.shuffle(class_groups)
        total = sum(len(members[g]) for g in class_groups)
        test_target = test_fraction * total
        val_target = val_fraction * (total - test_target)
        n_test = n_val = 0
        for g in class_groups:
            size = len(members[g])
            if n_test + size / 2 <= test_target:
                split[members[g]], n_test = "test", n_test + size
            elif n_val + size / 2 <= val_target:
                split[members[g]], n_val = "val", n_val + size
            else:
                split[members[g]] = "train"
    return split


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, num_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id per item: whole groups go, class by class (majority label), to the fold holding the fewest
    images of that class so far, largest groups first, so folds are balanced and duplicate-free."""
    members, by_class = _groups_by_class(labels, groups)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for class_groups in by_class:
        rng.shuffle(class_groups)
        class_groups.sort(key=lambda g: -len(members[g]))  # stable: random order among equal sizes
        load = np.zeros(num_folds, dtype=np.int64)
        for g in class_groups:
            k = int(np.argmin(load))
            fold_of[members[g]] = k
            load[k] += len(members[g])
    return fold_of


def reference_make_splits(
    protocol: str,
    labels: Sequence[int],
    sources: Sequence[str],
    seed: int = 101,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    groups: Sequence[int] | None = None,
    num_folds: int | None = None,
    fold: int = 0,
) -> np.ndarray:
    """Split name ("train"/"val"/"test") per item."""
    labels = np.asarray(labels)
    sources = np.asarray(sources)
    rng = np.random.default_rng(seed)
    n = len(labels)
    split = np.full(n, "train", dtype=object)
    if protocol == "seed":
        order = rng.permutation(n)
        n_test = int(round(test_fraction * n))
        n_val = int(round(val_fraction * (n - n_test)))
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_val]] = "val"
    elif protocol == "official":
        train_idx = np.flatnonzero(sources == "Training")
        split[sources == "Testing"] = "test"
        split[train_idx[_stratified_pick(labels, train_idx, val_fraction, rng)]] = "val"
    elif protocol == "grouped":
        if groups is None:
            raise ValueError("the grouped protocol needs duplicate groups")
        groups = np.asarray(groups)
        if num_folds:
            if not 0 <= fold < num_folds:
                raise ValueError(f"data.fold must be in 0..{num_folds - 1}, got {fold}")
            in_test = _grouped_folds(labels, groups, num_folds, rng) == fold
            rest = np.flatnonzero(~in_test)
            split[in_test] = "test"
            split[rest] = _grouped_assign(labels[rest], groups[rest], 0.0, val_fraction, rng)
        else:
            split = _grouped_assign(labels, groups, test_fraction, val_fraction, rng)
    else:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    if num_folds and protocol != "grouped":
        raise ValueError("k-fold cross-validation (data.num_folds) needs data.protocol=grouped")
    return split
