"""Plots: valid PNGs for training curves, confusion matrices and per-class bars, at any size."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from utils.plots import plot_confusion, plot_curves, plot_per_class


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_curves_are_redrawn_from_rows_and_tolerate_gaps(tmp_path):
    rows = [{"epoch": 1.0, "train_loss": 2.0, "val_loss": 1.9, "train_acc": 0.3, "val_acc": 0.35},
            {"epoch": 2.0, "train_loss": 1.5, "val_loss": math.nan, "train_acc": 0.5},
            {"epoch": 3.0, "train_loss": 1.1, "val_loss": 1.2, "train_acc": 0.6, "val_acc": ""}]
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
