"""Plots: valid PNGs for training curves, confusion matrices and per-class bars, at any size."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.evaluation import plots
from utils.evaluation.plots import plot_confusion, plot_curves, plot_per_class


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_curves_are_redrawn_from_rows_and_tolerate_gaps(tmp_path):
    rows = [{"epoch": 1.0, "train_loss": 2.0, "val_loss": 1.9, "train_top1": 0.3, "val_top1": 0.35},
            {"epoch": 2.0, "train_loss": 1.5, "val_loss": math.nan, "train_top1": 0.5},
            {"epoch": 3.0, "train_loss": 1.1, "val_loss": 1.2, "train_top1": 0.6, "val_top1": ""}]
    plot_curves(rows[:1], tmp_path)  # the first epoch: a single point per curve
    first = (tmp_path / "loss.png").read_bytes()
    plot_curves(rows, tmp_path)
    assert (tmp_path / "loss.png").read_bytes() != first  # redrawn in place
    png_size(tmp_path / "loss.png")
    png_size(tmp_path / "accuracy.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "loss.png"]  # no temp files


def test_confusion_and_per_class_plots_small(tmp_path):
    matrix = np.array([[5, 1, 0], [0, 3, 3], [0, 0, 0]])  # a class without images is fine
    plot_confusion(matrix, ["cat", "dog", "frog"], tmp_path / "cm.png")
    plot_per_class([1.0, 0.5, 0.0], ["cat", "dog", "frog"], tmp_path / "recall.png", "recall")
    png_size(tmp_path / "cm.png")
    png_size(tmp_path / "recall.png")


def test_many_classes_stay_within_a_bounded_figure(tmp_path):
    n = 150  # past the point where cell counts and class names are drawn
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 5, (n, n)) + np.diag(np.full(n, 50))
    names = [f"a_rather_long_class_name_{i}" for i in range(n)]
    plot_confusion(matrix, names, tmp_path / "cm.png")
    plot_per_class(rng.random(n), names, tmp_path / "precision.png", "precision")
    for name in ("cm.png", "precision.png"):
        width, height = png_size(tmp_path / name)
        assert width <= 2500 and height <= 2500


# ---------------------------------------------------------------- curves and confusion details

def captured_figures(monkeypatch) -> dict:
    """Keep the figures the plot functions would write, by file name, to inspect them."""
    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.update({Path(path).name: fig}))
    return figures


def visible_xticks(ax) -> list[float]:
    low, high = ax.get_xlim()
    return [t for t in ax.get_xticks() if low <= t <= high]


@pytest.mark.parametrize("epochs", [1, 3, 7, 40])
def test_curve_epoch_ticks_are_whole_numbers(monkeypatch, tmp_path, epochs):
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_top1": 0.5,
             "val_top1": 0.4} for e in range(1, epochs + 1)]
    figures = captured_figures(monkeypatch)
    plot_curves(rows, tmp_path)
    for fig in figures.values():
        ticks = visible_xticks(fig.axes[0])
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_curves_mark_the_best_epoch_and_name_the_run(monkeypatch, tmp_path):
    val_acc = [0.30, 0.55, 0.61, 0.58, 0.60]
    rows = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_top1": a + 0.1,
             "val_top1": a} for e, a in enumerate(val_acc, start=1)]
    figures = captured_figures(monkeypatch)
    plot_curves(rows, tmp_path, run_name="resnet18-cifar", best_epoch=3)
    assert set(figures) == {"loss.png", "accuracy.png"}
    for name, fig in figures.items():
        ax = fig.axes[0]
        assert "resnet18-cifar" in ax.get_title()
        best = [line for line in ax.get_lines() if line.get_label().startswith("best.pth")]
        assert len(best) == 1 and list(best[0].get_xdata()) == [3]
        assert "epoch 3" in best[0].get_label()
    accuracy_star = next(line for line in figures["accuracy.png"].axes[0].get_lines()
                         if line.get_label().startswith("best.pth"))
    assert list(accuracy_star.get_ydata()) == [pytest.approx(61.0)]  # on the val curve, in %


def test_confusion_cells_show_count_and_row_percent_title_accuracy(monkeypatch, tmp_path):
    matrix = np.array([[50, 3, 2], [10, 35, 5], [0, 1, 199]])
    figures = captured_figures(monkeypatch)
    plot_confusion(matrix, ["cat", "dog", "frog"], tmp_path / "cm.png")
    ax = figures["cm.png"].axes[0]
    cells = {t.get_text() for t in ax.texts}
    # Rounding never shows a non-empty cell as 0% or an imperfect row as 100%.
    assert cells == {"50\n91%", "3\n5%", "2\n4%", "10\n20%", "35\n70%", "5\n10%", "1\n<1%",
                     "199\n>99%"}
    assert "accuracy 93.11% (284/305)" in ax.get_title()  # 284 on the diagonal of 305


def test_dollar_signs_in_names_are_text_not_maths(monkeypatch, tmp_path):
    classes = ["$5 off$", r"$\notacommand$"]  # mathtext would fail on the second
    drawn = {}
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (drawn.update(
        {Path(path).name: [t.get_text() for t in fig.axes[0].get_xticklabels()]}),
        save(fig, path)))
    plot_confusion(np.eye(2, dtype=int), classes, tmp_path / "cm.png")
    plot_per_class([1.0, 1.0], classes, tmp_path / "recall.png", "recall")
    assert drawn == {"cm.png": classes, "recall.png": classes}
    png_size(tmp_path / "cm.png")


def test_a_run_redraws_its_curves_at_most_every_half_minute_and_at_the_end(monkeypatch,
                                                                            tmp_path):
    """Each redraw costs a short CPU run about 4% of its epochs: the first epoch draws,
    quick ones after it wait, and the report's copy (finish) shows every epoch."""
    from utils.train import run_log

    drawn = []
    monkeypatch.setattr(run_log, "plot_curves",
                        lambda rows, *_, best_epoch, **__: drawn.append((len(rows), best_epoch)))
    log = run_log.RunLog(tmp_path)
    for epoch in (1, 2, 3):
        log.log_epoch({"epoch": epoch, "phase": "unfreeze", "train_loss": 1.0 / epoch},
                      best_epoch=epoch)
    assert drawn == [(1, 1)]
    assert len(log.finish()) == 3 and drawn == [(1, 1), (3, 3)]
    log.finish()
    assert len(drawn) == 2  # nothing new: no redraw
    log.close()
