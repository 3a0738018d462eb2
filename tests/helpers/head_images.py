"""Synthetic head slices for the preprocessing tests: a bright textured disc (the "head") at an off-centre place on
a black canvas, a little noise, and a small bright "text" blob far from it; and a tiny model trained with
``crop="head", intensity="equalize"`` (the contract the inference, export and serve tests check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.export_fixtures import make_checkpoint
from tumorcls.data.decode import DecodeOptions

PREPROCESS = {"crop": "head", "intensity": "equalize"}
MODEL_SIZE = 64  # the input side of the preprocessed checkpoint
MODEL_OPTIONS = DecodeOptions(size=MODEL_SIZE, **PREPROCESS)  # how a file becomes its pixels
HEIGHT, WIDTH = 200, 300
CENTRE = (110, 190)  # (row, col) of the head
RADIUS = 60
BLOB = (slice(10, 20), slice(14, 28))  # the "text": far from the head, much smaller than it


def head_image(
    centre: tuple[int, int] = CENTRE,
    radius: int = RADIUS,
    gamma: float = 1.0,
    seed: int = 0,
    blob: bool = True,
    shape: tuple[int, int] = (HEIGHT, WIDTH),
) -> np.ndarray:
    """(H, W, 3) uint8 grey RGB: the head's intensities 90..230 (brighter at its centre, with stripes) raised to
    ``gamma`` (> 1 darker, < 1 brighter), noise of sd 2 everywhere, and a 255 blob unless ``blob`` is False."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    r = np.hypot(yy - centre[0], xx - centre[1])
    texture = 90 + 110 * (1 - r / max(radius, 1)) + 30 * (np.sin(xx / 5.0) > 0)
    head = np.where(r <= radius, 255 * (np.clip(texture, 0, 255) / 255) ** gamma, 0.0)
    grey = np.clip(head + rng.normal(0, 2, shape), 0, 255)
    if blob:
        grey[BLOB] = 255
    return np.repeat(np.rint(grey).astype(np.uint8)[:, :, None], 3, axis=2)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """A lossless file, so that every reader decodes exactly these pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG")
    return path


def head_files(folder: Path, n: int = 4) -> list[Path]:
    """``n`` PNG head images at different places, sizes and brightnesses."""
    places = [((110, 190), 60, 1.0), ((90, 100), 45, 1.8), ((120, 160), 75, 0.6), ((100, 220), 50, 1.3)]
    files = []
    for i in range(n):
        centre, radius, gamma = places[i % len(places)]
        files.append(write_png(folder / f"head_{i}.png", head_image(centre, radius, gamma, seed=i)))
    return files


def preprocessed_checkpoint(run_dir: Path, size: int = MODEL_SIZE, seed: int = 0) -> Path:
    """``run_dir/checkpoints/best.ckpt`` of a tiny model trained with the head crop and equalisation."""
    return make_checkpoint(run_dir, size=size, seed=seed, **PREPROCESS)
