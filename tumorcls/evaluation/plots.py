"""The tutorial's figures, readable by a person: confusion-matrix heatmap and accuracy/loss curves.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), never pyplot: no backend is
chosen, no global figure registry grows, and importing this module changes no global state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tumorcls.atomic_io import atomic_write


def confusion_matrix_figure(confmat: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix") -> Figure:
    confmat = np.asarray(confmat)
    fig = Figure(figsize=(6.4, 5.4), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(confmat, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=30, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = confmat.max() / 2 if confmat.size else 0
    for i in range(confmat.shape[0]):
        for j in range(confmat.shape[1]):
            ax.text(
                j,
                i,
                str(int(confmat[i, j])),
                ha="center",
                va="center",
                color="white" if confmat[i, j] > threshold else "black",
            )
    fig.tight_layout()
    return fig


def curves_figure(history: Sequence[dict[str, float]]) -> Figure:
    """Train vs validation accuracy and loss per epoch."""
    fig = Figure(figsize=(11, 4.2), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("acc", "loss")):
        for stage, style in (("train", "-o"), ("val", "-s")):
            points = [(h["epoch"], h[f"{stage}/{metric}"]) for h in history if f"{stage}/{metric}" in h]
            if points:
                xs, ys = zip(*points)
                ax.plot(np.array(xs) + 1, ys, style, label=f"{stage}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save as PNG atomically (matplotlib renders a PNG with its Agg canvas whatever the backend)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
