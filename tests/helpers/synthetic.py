"""Synthetic Kaggle-layout datasets for tests: each class is a bright disc at its own place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tumorcls.labels import CLASS_NAMES

# (row, col) centre of the class mark, as fractions of the image side
MARK_CENTRES = {0: (0.25, 0.25), 1: (0.25, 0.75), 2: (0.75, 0.25), 3: (0.75, 0.75)}


def synthetic_image(label: int, rng: np.random.Generator, side: int = 64) -> np.ndarray:
    """A noisy dark slice with a bright disc at the class's place (uint8 RGB)."""
    img = rng.normal(40, 12, size=(side, side)).clip(0, 255)
    cy, cx = MARK_CENTRES[label]
    yy, xx = np.mgrid[0:side, 0:side]
    jitter = rng.uniform(-0.04, 0.04, size=2) * side
    mask = (yy - cy * side - jitter[0]) ** 2 + (xx - cx * side - jitter[1]) ** 2 <= (0.12 * side) ** 2
    img[mask] = rng.uniform(180, 240)
    gray = img.astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def make_dataset(
    root: Path, per_class: dict[str, int] | None = None, side: int = 64, seed: int = 0, fmt: str = "JPEG"
) -> Path:
    """Write ``root/{Training,Testing}/<class>/img_<i>.jpg``; returns root."""
    per_class = per_class or {"Training": 12, "Testing": 4}
    rng = np.random.default_rng(seed)
    ext = ".jpg" if fmt == "JPEG" else ".png"
    for split, n in per_class.items():
        for label, name in enumerate(CLASS_NAMES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(synthetic_image(label, rng, side)).save(folder / f"img_{i}{ext}", format=fmt)
    return root
