"""The label map. Its order is the tutorial's and is baked into exports: never reorder it."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("glioma_tumor", "no_tumor", "meningioma_tumor", "pituitary_tumor")
NUM_CLASSES = len(CLASS_NAMES)
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
