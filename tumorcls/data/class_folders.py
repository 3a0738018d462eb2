"""Map the class-folder names of other datasets (``notumor``, ``Glioma``, ``no``...) onto ours."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tumorcls.errors import DatasetError
from tumorcls.labels import CLASS_NAMES

# canonical class -> spellings, compared after lower-casing and dropping everything but letters and digits
ALIASES: dict[str, tuple[str, ...]] = {
    "glioma_tumor": ("glioma", "glioma_tumor", "glioma_tumour", "gliomas"),
    "no_tumor": ("no_tumor", "notumor", "no_tumour", "no", "none", "healthy", "normal"),
    "meningioma_tumor": ("meningioma", "meningioma_tumor", "meningioma_tumour", "meningiomas"),
    "pituitary_tumor": ("pituitary", "pituitary_tumor", "pituitary_tumour", "pituitary_adenoma"),
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_LOOKUP: dict[str, str] = {_key(alias): canonical for canonical, names in ALIASES.items() for alias in names}


def canonical_class(name: str) -> str | None:
    """Our class name for a folder or label name, or None when it is not a known spelling."""
    return _LOOKUP.get(_key(name))


def class_index_map(model_classes: Sequence[str]) -> dict[str, int]:
    """Canonical class name -> index in the model's output, for a model whose names may be aliases."""
    mapping: dict[str, int] = {}
    for i, name in enumerate(model_classes):
        canonical = canonical_class(name)
        if canonical is None:
            raise DatasetError(f"the model's class {name!r} is not one of {list(CLASS_NAMES)} or their aliases")
        mapping[canonical] = i
    return mapping


def map_class_folders(folders: Iterable[Path], where: Path | None = None) -> dict[Path, str]:
    """Class folder -> canonical class; a one-line DatasetError for unknown or duplicated names (saying
    in which folder ``where``, when given). Every command that needs labels maps its folders here."""
    place = f" in '{where}'" if where is not None else ""
    mapping: dict[Path, str] = {}
    unknown: list[str] = []
    for folder in sorted(folders):
        canonical = canonical_class(folder.name)
        if canonical is None:
            unknown.append(folder.name)
        else:
            mapping[folder] = canonical
    if unknown:
        known = ", ".join(f"{c} ({'/'.join(ALIASES[c][:3])}...)" for c in CLASS_NAMES)
        raise DatasetError(f"unknown class folder(s) {unknown}{place}; each folder must name one class: {known}")
    seen: dict[str, str] = {}
    for folder, canonical in mapping.items():
        if canonical in seen:
            raise DatasetError(f"class folders '{seen[canonical]}' and '{folder.name}'{place} both mean {canonical}")
        seen[canonical] = folder.name
    return mapping
