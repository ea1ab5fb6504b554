"""Figures every output draws the same way: matrices as heatmaps (TensorBoard's image, ``clsim
compare``'s panels), with matplotlib's object-oriented API on an Agg canvas (no pyplot, no global
state) and the colour-blind-safe ``cividis`` map.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def figure(width: float, height: float, dpi: int = 110):
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: matplotlib costs a second to import
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def draw_matrix(ax, R, names: Sequence[str], title: str, fontsize: float = 8):
    """R (rows: trained on, columns: tested on) as a heatmap on ``ax``, values written in the
    cells, colour-blind-safe ``cividis``; NaN cells stay blank. Returns the image (for a colorbar)."""
    a = np.asarray(R, dtype=float)
    if a.ndim != 2 or a.shape[1] != len(names) or a.shape[0] > len(names):
        raise ValueError(f"matrix of shape {a.shape} does not fit {len(names)} experience names")
    im = ax.imshow(np.ma.masked_invalid(a), cmap="cividis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), labels=list(names), rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(a.shape[0]), labels=list(names[: a.shape[0]]), fontsize=fontsize)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title(title, fontsize=fontsize + 2)
    for i in range(a.shape[0]):
        for j in range(len(names)):
            if math.isfinite(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=fontsize - 1,
                        color="black" if a[i, j] > 0.6 else "white")
    return im


def matrix_image(R, names: Sequence[str], title: str = "accuracy matrix") -> np.ndarray:
    """The heatmap of R as an HxWx3 uint8 array (TensorBoard's image)."""
    size = 2.0 + 0.7 * len(names)
    fig = figure(size + 1.0, size, dpi=100)
    ax = fig.add_subplot()
    fig.colorbar(draw_matrix(ax, R, names, title), ax=ax, fraction=0.046, pad=0.04)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def confusion_image(C: Sequence, names: Sequence[str], labels: Sequence[str], title: str) -> np.ndarray:
    """One row of results as pictures: each test set's confusion matrix, counts per cell and
    recall as colour (rows: true label, columns: predicted) — a collapse onto one class shows as a
    bright column."""
    n, k = len(names), len(labels)
    fig = figure(1.2 + 2.2 * n, 2.9, dpi=90)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, c, name in zip(axes, C, names):
        c = np.asarray(c, dtype=float)
        recall = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
        ax.imshow(recall, cmap="cividis", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(k), labels=[lab[:3] for lab in labels], fontsize=7)
        ax.set_yticks(range(k), labels=[lab[:3] for lab in labels], fontsize=7)
        ax.set_title(name, fontsize=8)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(c[i, j])}", ha="center", va="center", fontsize=7,
                        color="black" if recall[i, j] > 0.6 else "white")
    axes[0].set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
