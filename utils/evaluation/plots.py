"""PNG plots of a run and of an evaluation: curves, confusion matrix, per-class bars.

Figures are built with :class:`matplotlib.figure.Figure` directly rather than ``pyplot``:
no GUI backend is ever selected (works on a headless server), no global figure registry
grows across the epochs of a long run, and nothing needs closing.  Every file is written
to a temporary name and renamed, so a run killed mid-plot never leaves a torn PNG.

Plots must stay readable from 2 to 1,000 classes: figures grow with the class count up to
a cap, cell counts are written only while they fit (:data:`MAX_ANNOTATED`), and class
names are dropped from an axis once there are too many to print (:data:`MAX_LABELLED`).

Class names and run names are user data in any script: every figure draws its text with the
fonts :class:`utils.evaluation.fonts.Fonts` finds for it, and a class name that no installed
font can draw is shown as its id (``#3``, explained on the figure) rather than as empty
boxes, so no "Glyph ... missing" warning is ever raised.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from utils.evaluation.fonts import Fonts

#: Up to this many classes every confusion-matrix cell shows its count.
MAX_ANNOTATED = 30
#: Up to this many classes the axes show every class name.
MAX_LABELLED = 100
_MAX_INCHES = 20.0


_CURVES = (("loss.png", "loss", ("train_loss", "val_loss"), "loss", 1.0),
           ("accuracy.png", "accuracy", ("train_top1", "val_top1"), "accuracy (%)", 100.0))


def plot_curves(rows: Sequence[Mapping[str, float]], out_dir: str | os.PathLike, *,
                run_name: str | None = None, best_epoch: int | None = None) -> None:
    """(Re)draw ``loss.png`` and ``accuracy.png`` in ``out_dir`` from per-epoch rows.

    ``rows`` are dicts with ``epoch``, ``train_loss``, ``val_loss``, ``train_top1`` and
    ``val_top1`` (accuracies as fractions, plotted in percent).  Missing or non-finite values
    are left out of their curve, so a partial row never breaks a training run.  Epoch ticks
    are whole numbers; ``best_epoch`` (the epoch ``best.pth`` was saved at) is marked on
    both plots, and ``run_name`` heads them.
    """
    out_dir = Path(out_dir)
    fonts = Fonts([run_name or ""])
    for name, what, keys, ylabel, scale in _CURVES:
        with _drawing(fonts):
            fig = _curve_figure(rows, keys, ylabel, scale, best_epoch,
                               title=f"{fonts.clean(run_name)}: {what}" if run_name else what)
            _save(fig, out_dir / name)


def _curve_figure(rows: Sequence[Mapping[str, float]], keys: Sequence[str], ylabel: str,
                 scale: float = 1.0, best_epoch: int | None = None,
                 title: str | None = None) -> Figure:
    """One figure of :func:`plot_curves`: the ``keys`` columns of ``rows`` against the epoch."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for key in keys:
        points = _points(rows, key, scale)
        if not points:
            continue
        x, y = zip(*points)
        line, = ax.plot(x, y, marker="o" if len(points) < 30 else None, markersize=3,
                        label=key.replace("_", " "))
        best = [v for e, v in points if e == best_epoch]
        if best and key.startswith("val"):
            ax.plot([best_epoch], best, marker="*", markersize=14, color=line.get_color(),
                    markeredgecolor="black", markeredgewidth=0.6, linestyle="none",
                    label=f"best.pth: epoch {best_epoch}, {key.replace('_', ' ')} "
                          f"{best[0]:.4g}")
    if best_epoch is not None and ax.has_data():
        ax.axvline(best_epoch, color="0.45", linestyle=":", linewidth=1.2, zorder=0)
    # Epochs are whole: never a 2.5 tick, even over a single epoch.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.has_data():
        ax.legend()
    return fig


def _points(rows, key: str, scale: float) -> list[tuple[int, float]]:
    return [(int(float(r["epoch"])), float(r[key]) * scale) for r in rows
            if _is_number(r.get("epoch")) and _is_number(r.get(key))]


def plot_confusion(matrix, classes: Sequence[str], path: str | os.PathLike,
                   title: str = "confusion matrix") -> None:
    """Confusion matrix (rows = true class, columns = predicted) as a heat map.

    Colours are row-normalised (each row shows where that class's images went, so rare
    classes are as visible as common ones); each cell shows its count and that share of
    the row in percent, and the title the overall accuracy (the diagonal's share).
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    total = int(counts.sum())
    correct = int(np.trace(counts))
    accuracy = f"accuracy {correct / total:.2%} ({correct}/{total})" if total else "no images"

    labels = _ClassLabels(classes if n <= MAX_LABELLED else (), title)
    with _drawing(labels.fonts):
        side = min(max(6.0, 0.35 * n + 2.5), _MAX_INCHES)
        fig = Figure(figsize=(side + 1.2, side), layout="constrained")
        ax = fig.add_subplot()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{labels.fonts.clean(title)}: {accuracy}")
        if n <= MAX_LABELLED:
            font = 9 if n <= MAX_ANNOTATED else 6
            ax.set_xticks(range(n), labels.names, rotation=90, fontsize=font)
            ax.set_yticks(range(n), labels.names, fontsize=font)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        if n <= MAX_ANNOTATED:
            font = 9 if n <= 10 else 7 if n <= 20 else 5.5
            for i, j in zip(*np.nonzero(counts)):
                # Out of the layout: the cells cannot overflow, and measuring
                # hundreds of texts for it would dominate the drawing time.
                ax.text(j, i, f"{counts[i, j]}\n{whole_percent(share[i, j])}", ha="center",
                        va="center", fontsize=font, linespacing=1.1, in_layout=False,
                        color="white" if share[i, j] > 0.5 else "black")
        labels.explain(fig)
        _save(fig, path)


def whole_percent(fraction: float) -> str:
    """Whole percent of a non-empty cell, never rounded to a misleading 0% or 100%."""
    text = f"{fraction:.0%}"
    if text == "0%":
        return "<1%"
    return ">99%" if text == "100%" and fraction < 1 else text


def plot_per_class(values: Sequence[float], classes: Sequence[str], path: str | os.PathLike,
                   title: str) -> None:
    """One bar per class for a metric in [0, 1] (recall, precision), with its mean marked."""
    values = np.asarray(values, dtype=np.float64) * 100
    n = len(classes)
    labels = _ClassLabels(classes if n <= MAX_LABELLED else (), title)
    with _drawing(labels.fonts):
        width = min(max(6.0, 0.25 * n + 2.0), _MAX_INCHES)
        fig = Figure(figsize=(width, 4.5), layout="constrained")
        ax = fig.add_subplot()
        ax.bar(range(n), values, color="tab:blue")
        ax.axhline(values.mean(), color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"{labels.fonts.clean(title)} (%)")
        ax.set_title(f"{labels.fonts.clean(title)} per class (dashed: mean {values.mean():.1f}%)")
        ax.grid(axis="y", alpha=0.3)
        if n <= MAX_LABELLED:
            ax.set_xticks(range(n), labels.names, rotation=90,
                          fontsize=9 if n <= MAX_ANNOTATED else 6)
        else:
            ax.set_xlabel(f"class id (0-{n - 1})")
        labels.explain(fig)
        _save(fig, path)


def plot_top_losses(images: Sequence[np.ndarray], classes: Sequence[str],
                    true: Sequence[int], predicted: Sequence[int],
                    confidence: Sequence[float], path: str | os.PathLike,
                    title: str = "top losses", columns: int = 4) -> None:
    """A grid of (H, W, 3) uint8 images captioned true class / predicted class (probability).

    Meant for the worst errors, worst first (row by row).  With no images the figure says
    there were no errors, so a report can always link it.
    """
    labels = _ClassLabels(classes, title)
    with _drawing(labels.fonts):
        count = len(images)
        cols = max(1, min(columns, count))
        rows = max(1, -(-count // cols))
        # A fixed grid: constrained layout measured every caption and took most of the
        # figure's time (0.4 s of eval.py's 5 s on a 2-core CPU).
        height = 2.6 * rows + 0.9
        fig = Figure(figsize=(2.4 * cols + 0.4, height))
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.25 / height,
                            top=1 - 0.95 / height, wspace=0.08, hspace=0.4)
        fig.suptitle(labels.fonts.clean(title))
        if not count:
            fig.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        for k, (image, t, p, conf) in enumerate(zip(images, true, predicted, confidence)):
            ax = fig.add_subplot(rows, cols, k + 1)
            ax.imshow(np.asarray(image))
            ax.set_title(f"true: {labels.names[t]}\npred: {labels.names[p]} ({conf:.0%})",
                         fontsize=9, color="#b00020")
            ax.set_axis_off()
        labels.explain(fig)
        _save(fig, path)


def _drawing(fonts: Fonts):
    """Settings for drawing user text: ``fonts``, and no maths (``$`` is a dollar sign)."""
    return matplotlib.rc_context({**fonts.rc(), "text.parse_math": False})


class _ClassLabels:
    """Class names as one figure can draw them: the name, or ``#id`` where no font can.

    ``texts`` are the figure's other texts (titles): the fonts are chosen for all of them.
    """

    def __init__(self, classes: Sequence[str], *texts: str):
        self.fonts = Fonts([*classes, *texts])
        self.names = [name if self.fonts.can_draw(name) else f"#{i}"
                      for i, name in enumerate(classes)]
        self.replaced = self.names != list(classes)

    def explain(self, fig: Figure) -> None:
        """Say on the figure what ``#id`` labels mean, when there are any."""
        if self.replaced:
            fig.supxlabel("#N = class N, counting from 0 as in cls_classes.txt (its name "
                          "needs a font this machine lacks)", fontsize=8, color="0.35")


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


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write a figure made elsewhere (the reliability diagram) as plots here are written:
    a PNG, atomically."""
    _save(fig, path)
