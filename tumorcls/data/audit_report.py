"""The audit report: counts, sizes, modes, bad files, exact and near duplicates with split leakage and label
conflicts, as a JSON-ready dict (``audit_dataset``) and as readable text (``format_summary``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tumorcls.data.audit_files import FileResult, Layout, discover, inspect_all
from tumorcls.data.class_folders import canonical_class
from tumorcls.data.hashing import duplicate_groups
from tumorcls.errors import DatasetError
from tumorcls.labels import CLASS_NAMES

REPORT_VERSION = 1

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


def look_stats(images: list[FileResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Per split and class: the mean head brightness (0-255) and the mean share of the image the head covers.
    Classes that differ here can be told apart by look alone, a shortcut that need not hold on other scanners."""
    looks: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in images:
        if r.head_intensity is not None and r.head_fraction is not None:
            looks.setdefault(r.entry.split, {}).setdefault(r.entry.label, []).append(
                (r.head_intensity, r.head_fraction)
            )
    return {
        split: {
            label: {
                "images": len(values),
                "head_intensity": round(float(np.mean([v[0] for v in values])), 1),
                "head_fraction": round(float(np.mean([v[1] for v in values])), 3),
            }
            for label, values in sorted(by_label.items())
        }
        for split, by_label in looks.items()
    }


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
        "look": look_stats(images),
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


def _look_lines(report: dict[str, Any]) -> list[str]:
    lines = ["look (mean head brightness 0-255 / share of the image the head covers):"]
    for split, by_label in report["look"].items():
        detail = ", ".join(
            f"{label} {v['head_intensity']:.0f} / {v['head_fraction']:.0%}" for label, v in by_label.items()
        )
        lines.append(f"  {split}: {detail}")
    return lines if len(lines) > 1 else []


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
    lines += _look_lines(report)
    lines += _listing("unreadable", [f"{u['path']}: {u['reason']}" for u in report["unreadable"]], show)
    lines += _listing("zero-byte", report["zero_byte"], show)
    lines += _listing("non-image", report["non_image"], show)
    lines += _listing("files outside class folders", report["outside_class_folders"], show)
    lines += _groups_lines("exact duplicates (SHA-256)", report["exact_duplicates"], show)
    near = report["near_duplicates"]
    lines += _groups_lines(f"near duplicates (pHash distance <= {near['distance']})", near, show)
    return "\n".join(lines)
