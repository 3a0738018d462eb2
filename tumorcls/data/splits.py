"""Train/val/test split protocols, deterministic for a seed, and the CSV manifest that records them.

- ``seed``: the tutorial's protocol. Pool Training+Testing, shuffle, hold out a random 10% as test, then
  10% of the rest as validation. This dataset has duplicates across folders, so this split leaks.
- ``official``: Training -> stratified train/val, Testing -> test.
- ``grouped``: pool, link exact duplicates and near duplicates into groups, and keep each group on one
  side, stratifying groups by their majority label. With ``num_folds=k`` it is k-fold cross-validation:
  fold ``i`` of k groups is the test split, the rest give train and val. Groups are found with one sort of the
  group ids and filled with vectorised gathers: O(N log N) in the number of images, whatever the number of groups.
"""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorcls.atomic_io import atomic_write_text
from tumorcls.config.check import check_section
from tumorcls.config.data import DEFAULTS as DATA
from tumorcls.config.data import PROTOCOLS, DataConfig

__all__ = ["PROTOCOLS", "SPLITS", "make_splits", "write_manifest"]

SPLITS = ("train", "val", "test")


def _stratified_pick(labels: np.ndarray, idx: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Pick round(fraction * n_c) of ``idx`` for each class c; returns a boolean mask over ``idx``."""
    picked = np.zeros(len(idx), dtype=bool)
    for c in np.unique(labels[idx]):
        members = np.flatnonzero(labels[idx] == c)
        rng.shuffle(members)
        picked[members[: int(round(fraction * len(members)))]] = True
    return picked


@dataclass
class _Groups:
    """The groups of N items, found with one sort (O(N log N)): group k's members are
    ``order[starts[k] : starts[k] + sizes[k]]`` (ascending item order), groups numbered 0..G-1 in id order."""

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    by_class: list[list[int]]  # per class in label order: its groups (by majority label, ties to the lower label)

    def members(self, ks: Sequence[int]) -> np.ndarray:
        """The members of groups ``ks``, group after group, in one gather."""
        ks = np.asarray(ks, dtype=np.int64)
        sizes = self.sizes[ks]
        offsets = np.cumsum(sizes) - sizes
        return self.order[np.repeat(self.starts[ks] - offsets, sizes) + np.arange(int(sizes.sum()))]


def _groups(labels: np.ndarray, groups: np.ndarray) -> _Groups:
    order = np.argsort(groups, kind="stable")
    _, starts, sizes = np.unique(groups[order], return_index=True, return_counts=True)
    group_of = np.empty(len(groups), dtype=np.int64)
    group_of[order] = np.repeat(np.arange(len(starts)), sizes)
    width = int(labels.max()) + 1 if len(labels) else 1
    votes = np.bincount(group_of * width + labels, minlength=len(starts) * width).reshape(len(starts), width)
    majority = votes.argmax(axis=1)
    by_class = [np.flatnonzero(majority == c).tolist() for c in np.unique(labels)]
    return _Groups(order, starts, sizes, by_class)


_SIDES = np.array(["test", "val", "train"], dtype=object)


def _grouped_assign(
    labels: np.ndarray, groups: np.ndarray, test_fraction: float, val_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Per class, whole groups in random order go to test until it holds about ``test_fraction`` of the class, then
    to val, the rest to train."""
    split = np.empty(len(labels), dtype=object)
    found = _groups(labels, groups)
    size_of = found.sizes.tolist()
    for class_groups in found.by_class:
        rng.shuffle(class_groups)
        sizes = [size_of[k] for k in class_groups]
        total = sum(sizes)
        test_target = test_fraction * total
        val_target = val_fraction * (total - test_target)
        n_test = n_val = 0
        sides = []
        for size in sizes:
            if n_test + size / 2 <= test_target:
                sides.append(0)
                n_test += size
            elif n_val + size / 2 <= val_target:
                sides.append(1)
                n_val += size
            else:
                sides.append(2)
        split[found.members(class_groups)] = np.repeat(_SIDES[np.asarray(sides, dtype=np.int64)], sizes)
    return split


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, num_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id per item: whole groups go, class by class (majority label), to the fold holding the fewest
    images of that class so far (the lowest fold among equals), largest groups first, so folds are balanced and
    duplicate-free."""
    found = _groups(labels, groups)
    size_of = found.sizes.tolist()
    fold_of = np.empty(len(labels), dtype=np.int64)
    for class_groups in found.by_class:
        rng.shuffle(class_groups)
        class_groups.sort(key=lambda k: -size_of[k])  # stable: random order among equal sizes
        loads = [(0, k) for k in range(num_folds)]  # a heap of (images so far, fold)
        folds = []
        for g in class_groups:
            load, k = heapq.heappop(loads)
            folds.append(k)
            heapq.heappush(loads, (load + size_of[g], k))
        fold_of[found.members(class_groups)] = np.repeat(np.asarray(folds, dtype=np.int64), found.sizes[class_groups])
    return fold_of


def make_splits(
    protocol: str,
    labels: Sequence[int],
    sources: Sequence[str],
    seed: int = DATA.split_seed,
    test_fraction: float = DATA.test_fraction,
    val_fraction: float = DATA.val_fraction,
    groups: Sequence[int] | None = None,
    num_folds: int | None = DATA.num_folds,
    fold: int = DATA.fold,
) -> np.ndarray:
    """Split name ("train"/"val"/"test") per item. The protocol, seed and folds are checked as the data group's
    keys (one line, ``config: data.protocol must be one of [...]``), the check the data module runs; a fraction
    may be 0 here (an empty test side: the k-fold split's inner train/val split)."""
    settings = {"protocol": protocol, "split_seed": seed, "num_folds": num_folds, "fold": fold}
    check_section(DataConfig, settings, "data")
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
    else:  # grouped
        if groups is None:
            raise ValueError("the grouped protocol needs duplicate groups")
        groups = np.asarray(groups)
        if num_folds:
            in_test = _grouped_folds(labels, groups, num_folds, rng) == fold
            rest = np.flatnonzero(~in_test)
            split[in_test] = "test"
            split[rest] = _grouped_assign(labels[rest], groups[rest], 0.0, val_fraction, rng)
        else:
            split = _grouped_assign(labels, groups, test_fraction, val_fraction, rng)
    return split


def write_manifest(
    path: str | Path,
    rel_paths: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    split: Sequence[str],
    groups: Sequence[int] | None = None,
) -> Path:
    """Write ``path,label,class_name,split[,group]`` rows atomically."""
    rows = [["path", "label", "class_name", "split"] + (["group"] if groups is not None else [])]
    for i, (p, y, s) in enumerate(zip(rel_paths, labels, split)):
        rows.append([p, int(y), class_names[int(y)], s] + ([int(groups[i])] if groups is not None else []))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return atomic_write_text(path, buf.getvalue())
