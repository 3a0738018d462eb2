"""Audit an image dataset: counts, sizes, bad files, exact and near duplicates, split leakage, label conflicts.

Works on the Kaggle layout ROOT/{Training,Testing}/<class>/* and on a plain ROOT/<class>/* folder (one
split, called "all"). Every file is read once: the bytes give the SHA-256, and PIL opens the same bytes
for size, mode and the 64-bit perceptual hash. Unknown class folders and bad files are reported, not fatal.

    python -m tumorcls.cli.main audit ROOT [--distance D] [--json FILE]
    python -m tumorcls.data.audit [ROOT] --benchmark [--bench-hashes 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.atomic_io import atomic_write_json
from tumorcls.data.class_folders import canonical_class
from tumorcls.data.decode import ImageDecodeError, is_image_path, open_image
from tumorcls.data.hashing import duplicate_groups, hamming_pairs, multi_index_pairs, phash, sha256_bytes
from tumorcls.data.scan import SOURCE_SPLITS
from tumorcls.errors import DatasetError, TumorclsError
from tumorcls.labels import CLASS_NAMES

SINGLE_SPLIT = "all"  # the split name of a folder-per-class dataset without Training/Testing
REPORT_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    path: Path
    rel: str  # path relative to the root, with forward slashes
    split: str
    label: str  # class folder name


@dataclass(frozen=True)
class FileResult:
    entry: FileEntry
    status: str  # "ok", "non_image", "zero_byte" or "unreadable"
    reason: str = ""
    size: tuple[int, int] | None = None
    mode: str | None = None
    fmt: str | None = None
    sha256: str | None = None
    phash: int | None = None


@dataclass
class Layout:
    root: Path
    kind: str  # "Training/Testing" or "folder-per-class"
    entries: list[FileEntry]
    class_folders: dict[str, list[str]]  # split -> class folder names found
    outside_class_folders: list[str]  # files lying directly in a split folder (or the root)
    ignored: list[str]  # root entries other than the split folders (Kaggle layout only)


# ---------------------------------------------------------------------------------------------- layout


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _split_dirs(root: Path) -> tuple[str, list[tuple[str, Path]]]:
    found = [(name, root / name) for name in SOURCE_SPLITS if (root / name).is_dir()]
    if found:
        return "Training/Testing", found
    return "folder-per-class", [(SINGLE_SPLIT, root)]


def discover(root: str | Path) -> Layout:
    """List every file under the class folders; DatasetError (one line) when there is nothing to audit."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset root '{root}' is not a directory; expected ROOT/{{Training,Testing}}/<class>/* or ROOT/<class>/*"
        )
    kind, splits = _split_dirs(root)
    layout = Layout(root, kind, [], {}, [], [])
    if kind == "Training/Testing":
        layout.ignored = sorted(_rel(p, root) for p in root.iterdir() if _visible(p) and p.name not in SOURCE_SPLITS)
    for split, split_dir in splits:
        children = sorted(p for p in split_dir.iterdir() if _visible(p))
        class_dirs = [p for p in children if p.is_dir()]
        layout.class_folders[split] = [p.name for p in class_dirs]
        layout.outside_class_folders += [_rel(p, root) for p in children if p.is_file()]
        for class_dir in class_dirs:
            files = sorted(p for p in class_dir.rglob("*") if p.is_file())
            label = canonical_class(class_dir.name) or class_dir.name  # glioma/, notumor/ ... spellings too
            layout.entries += [FileEntry(p, _rel(p, root), split, label) for p in files]
    if not layout.entries:
        raise DatasetError(f"no files found in class folders under '{root}' ({kind} layout)")
    return layout


# ----------------------------------------------------------------------------------------- file checks


def inspect_file(entry: FileEntry) -> FileResult:
    """Read one file once: hash its bytes and open them with the loader's own checks."""
    if not is_image_path(entry.path):
        return FileResult(entry, "non_image")
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        return FileResult(entry, "unreadable", f"cannot read ({exc.strerror or exc})")
    if not data:
        return FileResult(entry, "zero_byte", "empty file (0 bytes)")
    digest = sha256_bytes(data)
    try:
        img = open_image(data)
        return FileResult(entry, "ok", "", img.size, img.mode, img.format, digest, int(phash(img)))
    except ImageDecodeError as exc:
        return FileResult(entry, "unreadable", str(exc), sha256=digest)
    except (OSError, ValueError) as exc:  # a decoder failing on conversion, after a lazy load
        return FileResult(entry, "unreadable", f"corrupt image ({type(exc).__name__})", sha256=digest)


def inspect_all(entries: list[FileEntry], threads: int | None = None) -> list[FileResult]:
    workers = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(inspect_file, entries))


# ------------------------------------------------------------------------------------------ statistics


def _nested_counts(images: list[FileResult]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in images:
        counts[r.entry.split][r.entry.label] += 1
    return {split: dict(sorted(c.items())) for split, c in counts.items()}


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def size_stats(images: list[FileResult], top: int) -> dict[str, Any]:
    sizes = Counter(r.size for r in images if r.size)
    if not sizes:
        return {"distinct": 0, "most_common": [], "smallest": None, "largest": None}

    def extreme(pick: Callable[..., tuple[int, int]]) -> dict[str, Any]:
        size = pick(sizes, key=lambda s: (min(s), s[0] * s[1]))
        example = next(r.entry.rel for r in images if r.size == size)
        return {"size": _size_text(size), "count": sizes[size], "example": example}

    return {
        "distinct": len(sizes),
        "most_common": [{"size": _size_text(s), "count": n} for s, n in sizes.most_common(top)],
        "smallest": extreme(min),
        "largest": extreme(max),
    }


def _group_members(images: list[FileResult], max_distance: int | None) -> list[list[FileResult]]:
    if len(images) < 2:
        return []
    shas = [r.sha256 or "" for r in images]
    hashes = np.array([r.phash for r in images], dtype=np.uint64)
    members: dict[int, list[FileResult]] = defaultdict(list)
    for result, gid in zip(images, duplicate_groups(shas, hashes, max_distance).tolist()):
        members[gid].append(result)
    groups = [sorted(g, key=lambda r: r.entry.rel) for g in members.values() if len(g) > 1]
    return sorted(groups, key=lambda g: g[0].entry.rel)


def _describe_group(group: list[FileResult]) -> dict[str, Any]:
    splits = sorted({r.entry.split for r in group})
    classes = sorted({r.entry.label for r in group})
    return {
        "files": [r.entry.rel for r in group],
        "splits": splits,
        "classes": classes,
        "cross_split": len(splits) > 1,
        "label_conflict": len(classes) > 1,
    }


def group_stats(images: list[FileResult], max_distance: int | None) -> dict[str, Any]:
    """Duplicate groups (exact when ``max_distance`` is None) with leakage and label-conflict counts."""
    groups = _group_members(images, max_distance)
    described = [_describe_group(g) for g in groups]
    copies: dict[str, Counter[str]] = defaultdict(Counter)  # images with a copy in another split
    for group in groups:
        for r in group:
            if any(o.entry.split != r.entry.split for o in group):
                copies[r.entry.split][r.entry.label] += 1
    stats: dict[str, Any] = {} if max_distance is None else {"distance": max_distance}
    stats.update(
        {
            "groups": len(groups),
            "files": sum(len(g) for g in groups),
            "cross_split_groups": sum(d["cross_split"] for d in described),
            "label_conflict_groups": sum(d["label_conflict"] for d in described),
            "copies_in_other_split": {s: dict(sorted(c.items())) for s, c in sorted(copies.items())},
            "group_list": described,
        }
    )
    return stats


def _class_checks(layout: Layout) -> dict[str, Any]:
    """Class folders are matched through the aliases ``evaluate`` accepts (glioma, notumor, ...)."""
    unknown = {s: [n for n in names if canonical_class(n) is None] for s, names in layout.class_folders.items()}
    missing = {
        s: [c for c in CLASS_NAMES if c not in {canonical_class(n) for n in names}]
        for s, names in layout.class_folders.items()
    }
    return {
        "unknown_classes": {s: v for s, v in unknown.items() if v},
        "missing_classes": {s: v for s, v in missing.items() if v},
    }


def build_report(layout: Layout, results: list[FileResult], distance: int, top: int = 5) -> dict[str, Any]:
    images = [r for r in results if r.status == "ok"]
    by_status = Counter(r.status for r in results)
    return {
        "version": REPORT_VERSION,
        "root": str(layout.root),
        "layout": layout.kind,
        "splits": list(layout.class_folders),
        **_class_checks(layout),
        "files": {
            "total": len(results),
            "images": len(images),
            "unreadable": by_status["unreadable"],
            "zero_byte": by_status["zero_byte"],
            "non_image": by_status["non_image"],
        },
        "counts": _nested_counts(images),
        "sizes": size_stats(images, top),
        "modes": dict(Counter(r.mode for r in images).most_common()),
        "formats": dict(Counter(r.fmt for r in images).most_common()),
        "unreadable": [{"path": r.entry.rel, "reason": r.reason} for r in results if r.status == "unreadable"],
        "zero_byte": [r.entry.rel for r in results if r.status == "zero_byte"],
        "non_image": [r.entry.rel for r in results if r.status == "non_image"],
        "outside_class_folders": layout.outside_class_folders,
        "ignored": layout.ignored,
        "exact_duplicates": group_stats(images, None),
        "near_duplicates": group_stats(images, distance),
    }


def audit_dataset(root: str | Path, distance: int = 0, threads: int | None = None, top: int = 5) -> dict[str, Any]:
    """Scan ``root`` and return the audit report as a JSON-ready dict."""
    if not 0 <= distance <= 64:
        raise DatasetError(f"--distance must be between 0 and 64 bits, got {distance}")
    layout = discover(root)
    return build_report(layout, inspect_all(layout.entries, threads), distance, top)


# --------------------------------------------------------------------------------------------- summary


def _listing(title: str, items: list[str], show: int) -> list[str]:
    if not items:
        return []
    lines = [f"{title}: {len(items)}"] + [f"  {item}" for item in items[:show]]
    if len(items) > show:
        lines.append(f"  ... and {len(items) - show} more (see --json)")
    return lines


def _counts_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for split, counts in report["counts"].items():
        detail = ", ".join(f"{name} {n}" for name, n in counts.items())
        lines.append(f"  {split}: {sum(counts.values())} ({detail})")
    return lines


def _groups_lines(title: str, stats: dict[str, Any], show: int) -> list[str]:
    lines = [
        f"{title}: {stats['groups']} groups holding {stats['files']} files; "
        f"{stats['cross_split_groups']} span splits, {stats['label_conflict_groups']} have conflicting labels"
    ]
    for split, counts in stats["copies_in_other_split"].items():
        detail = ", ".join(f"{name} {n}" for name, n in counts.items())
        lines.append(f"  {split} images with a copy in another split: {sum(counts.values())} ({detail})")
    conflicts = [" | ".join(g["files"]) for g in stats["group_list"] if g["label_conflict"]]
    return lines + _listing("  conflicting-label groups", conflicts, show)


def format_summary(report: dict[str, Any], show: int = 10) -> str:
    """The report as readable text."""
    files, sizes = report["files"], report["sizes"]
    lines = [
        f"Audit of {report['root']} ({report['layout']} layout)",
        f"files: {files['total']} scanned, {files['images']} readable images, {files['unreadable']} unreadable, "
        f"{files['zero_byte']} zero-byte, {files['non_image']} non-image",
        *_counts_lines(report),
    ]
    for key, title in (("unknown_classes", "unknown class folders"), ("missing_classes", "missing class folders")):
        for split, names in report[key].items():
            lines.append(f"{title} in {split}: {', '.join(names)}")
    if sizes["distinct"]:
        common = ", ".join(f"{s['size']} ({s['count']})" for s in sizes["most_common"])
        lines.append(f"sizes: {sizes['distinct']} distinct; most common {common}")
        small, large = sizes["smallest"], sizes["largest"]
        lines.append(f"  smallest {small['size']} (e.g. {small['example']}), largest {large['size']}")
    lines.append("modes: " + ", ".join(f"{m} {n}" for m, n in report["modes"].items()))
    lines += _listing("unreadable", [f"{u['path']}: {u['reason']}" for u in report["unreadable"]], show)
    lines += _listing("zero-byte", report["zero_byte"], show)
    lines += _listing("non-image", report["non_image"], show)
    lines += _listing("files outside class folders", report["outside_class_folders"], show)
    lines += _groups_lines("exact duplicates (SHA-256)", report["exact_duplicates"], show)
    near = report["near_duplicates"]
    lines += _groups_lines(f"near duplicates (pHash distance <= {near['distance']})", near, show)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- benchmark


def synthetic_hashes(n: int, seed: int = 0) -> np.ndarray:
    """``n`` 64-bit hashes shaped like pHashes of an MRI collection: exactly 32 bits set (median
    threshold), unevenly likely bits, and families of about 50 similar hashes (a noisy prototype)."""
    rng = np.random.default_rng(seed)
    bias = rng.normal(0.0, 0.75, size=64)
    prototypes = bias + rng.normal(size=(max(1, n // 50), 64))
    z = prototypes[rng.integers(0, len(prototypes), size=n)] + rng.normal(size=(n, 64)) * rng.uniform(0, 1, (n, 1))
    bits = z > np.median(z, axis=1, keepdims=True)
    return (bits.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_benchmark(root: Path | None, n_hashes: int, distances: list[int], threads: int | None) -> list[str]:
    """Wall times of a full audit of ``root`` and of both near-duplicate searches on synthetic hashes."""
    lines = [f"benchmark: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, nproc {os.cpu_count()}"]
    if root is not None:
        seconds, report = _timed(lambda: audit_dataset(root, 0, threads))
        lines.append(f"full audit of {report['files']['total']} files in {root}: {seconds:.2f} s")
    hashes = synthetic_hashes(n_hashes)
    for d in distances:
        t_block, block = _timed(lambda d=d: hamming_pairs(hashes, d))
        t_multi, multi = _timed(lambda d=d: multi_index_pairs(hashes, d))
        same = "same pairs" if np.array_equal(block, multi) else "PAIRS DIFFER"
        lines.append(
            f"{n_hashes} hashes, distance {d}: {len(block)} pairs; blocked popcount {t_block:.3f} s, "
            f"multi-index {t_multi:.3f} s ({same})"
        )
    return lines


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", type=Path, help="dataset folder (Training/Testing or one folder per class)")
    parser.add_argument("--distance", type=int, default=0, help="near-duplicate pHash distance in bits (default 0)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--threads", type=int, default=None, help="reader threads (default min(8, CPUs))")
    parser.add_argument("--top", type=int, default=5, help="most common sizes to report (default 5)")
    parser.add_argument("--show", type=int, default=10, help="items shown per list in the summary (default 10)")
    parser.add_argument("--benchmark", action="store_true", help="print timings (full audit of ROOT if given)")
    parser.add_argument("--bench-hashes", type=int, default=50_000, help="synthetic hashes for --benchmark")
    parser.add_argument(
        "--bench-distances", type=int, nargs="+", default=[0, 4, 6, 8], help="distances for --benchmark"
    )


def run(args: argparse.Namespace) -> int:
    if args.benchmark:
        print("\n".join(run_benchmark(args.root, args.bench_hashes, args.bench_distances, args.threads)))
        return 0
    if args.root is None:
        raise DatasetError("audit needs a dataset ROOT folder (or --benchmark)")
    report = audit_dataset(args.root, args.distance, args.threads, args.top)
    print(format_summary(report, args.show))
    if args.json:
        try:
            atomic_write_json(args.json, report)
        except OSError as exc:
            raise TumorclsError(f"cannot write the report to '{args.json}': {exc.strerror or exc}") from None
        print(f"report written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tumorcls.data.audit", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
