"""PNG plots of a run and of an evaluation: curves, confusion matrix, per-class bars.

Figures are built with :class:`matplotlib.figure.Figure` directly rather than ``pyplot``:
no GUI backend is ever selected (works on a headless server), no global figure registry
grows across the epochs of a long run, and nothing needs closing.  Every file is written
to a temporary name and renamed, so a run killed mid-plot never leaves a torn PNG.

Plots must stay readable from 2 to 1,000 classes: figures grow with the class count up to
a cap, cell counts are written only while they fit (:data:`MAX_ANNOTATED`), and class
names are dropped from an axis once there are too many to print (:data:`MAX_LABELLED`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

#: Up to this many classes every confusion-matrix cell shows its count.
MAX_ANNOTATED = 30
#: Up to this many classes the axes show every class name.
MAX_LABELLED = 100
_MAX_INCHES = 20.0


def plot_curves(rows: Sequence[Mapping[str, float]], out_dir: str | os.PathLike) -> None:
    """(Re)draw ``loss.png`` and ``accuracy.png`` in ``out_dir`` from per-epoch rows.

    ``rows`` are dicts with ``epoch``, ``train_loss``, ``val_loss``, ``train_acc`` and
    ``val_acc`` (accuracies as fractions, plotted in percent).  Missing or non-finite values
    are left out of their curve, so a partial row never breaks a training run.
    """
    out_dir = Path(out_dir)
    for name, keys, ylabel, scale in (
            ("loss.png", ("train_loss", "val_loss"), "loss", 1.0),
            ("accuracy.png", ("train_acc", "val_acc"), "accuracy (%)", 100.0)):
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.add_subplot()
        for key in keys:
            points = [(float(r["epoch"]), float(r[key]) * scale) for r in rows
                      if _is_number(r.get("epoch")) and _is_number(r.get(key))]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, marker="o" if len(points) < 30 else None, markersize=3,
                        label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
        _save(fig, out_dir / name)


def plot_confusion(matrix, classes: Sequence[str], path: str | os.PathLike,
                   title: str = "confusion matrix") -> None:
    """Confusion matrix (rows = true class, columns = predicted) as a heat map.

    Colours are row-normalised (each row shows where that class's images went, so rare
    classes are as visible as common ones); the numbers written in the cells are counts.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)

    side = min(max(6.0, 0.35 * n + 2.5), _MAX_INCHES)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= MAX_LABELLED:
        font = 9 if n <= MAX_ANNOTATED else 6
        ax.set_xticks(range(n), classes, rotation=90, fontsize=font)
        ax.set_yticks(range(n), classes, fontsize=font)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if n <= MAX_ANNOTATED:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    # Out of the layout: the cells cannot overflow, and measuring
                    # hundreds of texts for it would dominate the drawing time.
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black", in_layout=False)
    _save(fig, path)


def plot_per_class(values: Sequence[float], classes: Sequence[str], path: str | os.PathLike,
                   title: str) -> None:
    """One bar per class for a metric in [0, 1] (recall, precision), with its mean marked."""
    values = np.asarray(values, dtype=np.float64) * 100
    n = len(classes)
    width = min(max(6.0, 0.25 * n + 2.0), _MAX_INCHES)
    fig = Figure(figsize=(width, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(n), values, color="tab:blue")
    ax.axhline(values.mean(), color="tab:red", linestyle="--", linewidth=1)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"{title} (%)")
    ax.set_title(f"{title} per class (dashed: mean {values.mean():.1f}%)")
    ax.grid(axis="y", alpha=0.3)
    if n <= MAX_LABELLED:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=9 if n <= MAX_ANNOTATED else 6)
    else:
        ax.set_xlabel(f"class id (0-{n - 1})")
    _save(fig, path)


def _is_number(value) -> bool:
    try:
        return np.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _save(fig: Figure, path: str | os.PathLike) -> None:
    """Write a PNG atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
