"""Class names in any script: drawn with a font that has them, or as ids, never as boxes.

The figures are really drawn (PNG written) with every warning recorded: matplotlib's
"Glyph ... missing from font(s)" warning is raised at draw time.  ``ci_fonts`` restricts the
font search to the fonts matplotlib ships, which is all a clean CI machine has.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib import font_manager

from utils.evaluation import fonts, plots

CAT, DOG = "猫", "犬"  # CJK: in none of matplotlib's own fonts
CYRILLIC, GREEK, ARABIC = "кошка", "γάτα", "قطة"
CLASSES = [CAT, DOG, CYRILLIC, GREEK, ARABIC]


@pytest.fixture
def ci_fonts(monkeypatch):
    """Only the fonts bundled with matplotlib are installed, as on a clean CI machine."""
    bundled = str(Path(matplotlib.get_data_path()).resolve())
    entries = [e for e in font_manager.fontManager.ttflist
               if str(Path(e.fname).resolve()).startswith(bundled)]
    monkeypatch.setattr(fonts, "_candidates", lambda: fonts._families(entries))


@pytest.fixture
def labels_drawn(monkeypatch):
    """Record the tick labels and captions each figure was saved with."""
    drawn = []
    save = plots._save

    def recording_save(fig, path):
        drawn.append({t.get_text() for ax in fig.axes
                      for t in (*ax.get_xticklabels(), *ax.get_yticklabels(), ax.title)})
        save(fig, path)
    monkeypatch.setattr(plots, "_save", recording_save)
    return drawn


def draw_everything(tmp_path, classes, run_name="run-猫") -> None:
    """Every plot that shows class or run names, written to disk."""
    n = len(classes)
    matrix = np.arange(n * n).reshape(n, n) + 5 * np.eye(n, dtype=int)
    plots.plot_confusion(matrix, classes, tmp_path / "cm.png")
    plots.plot_per_class(np.linspace(0, 1, n), classes, tmp_path / "recall.png", "recall")
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_top1": 0.5,
             "val_top1": 0.5} for e in (1, 2)]
    plots.plot_curves(rows, tmp_path, run_name=run_name, best_epoch=2)
    images = [np.full((8, 8, 3), 40 * k, dtype=np.uint8) for k in range(n)]
    plots.plot_top_losses(images, classes, list(range(n)), [(k + 1) % n for k in range(n)],
                          [0.9] * n, tmp_path / "top_losses.png")


def assert_silent(record, caplog) -> None:
    assert [str(w.message) for w in record] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_names_without_a_font_become_ids_without_warnings(ci_fonts, labels_drawn, tmp_path,
                                                           caplog):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        draw_everything(tmp_path, CLASSES)
    assert_silent(record, caplog)
    cm_labels = labels_drawn[0]
    assert {"#0", "#1", CYRILLIC, GREEK} <= cm_labels  # CJK by id; the rest by name
    assert not {CAT, DOG} & cm_labels
    assert (ARABIC in cm_labels) == fonts.SHAPES_TEXT  # shaped by matplotlib >= 3.11 only
    assert any("run-?" in text for texts in labels_drawn for text in texts)  # run name
    top_losses = labels_drawn[-1]
    assert "true: #0\npred: #1 (90%)" in top_losses
    assert f"true: {CYRILLIC}\npred: {GREEK} (90%)" in top_losses


def test_right_to_left_names_are_ids_where_matplotlib_cannot_shape(ci_fonts, labels_drawn,
                                                                   tmp_path, monkeypatch):
    monkeypatch.setattr(fonts, "SHAPES_TEXT", False)  # matplotlib < 3.11: no libraqm
    plots.plot_per_class([0.5, 0.5], [GREEK, ARABIC], tmp_path / "recall.png", "recall")
    assert {GREEK, "#1"} <= labels_drawn[0] and ARABIC not in labels_drawn[0]


def test_a_glyph_missing_from_the_default_font_comes_from_another_font(ci_fonts, tmp_path,
                                                                      caplog):
    name = "ᴕ"  # LATIN LETTER SMALL CAPITAL OU: in DejaVu Serif, not in DejaVu Sans
    default = font_manager.findfont(font_manager.FontProperties())
    assert ord(name) not in font_manager.get_font(default).get_charmap()
    chosen = fonts.Fonts([name])
    assert chosen.can_draw(name) and len(chosen.families) == 2
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        plots.plot_per_class([1.0], [name], tmp_path / "recall.png", "recall")
    assert_silent(record, caplog)


def test_cjk_names_are_drawn_when_a_cjk_font_is_installed(labels_drawn, tmp_path, caplog):
    if not fonts.Fonts([CAT, DOG]).can_draw(CAT + DOG):
        pytest.skip("no installed font has CJK glyphs (e.g. fonts-noto-cjk); the fallback "
                    "to ids is what the other tests check")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        draw_everything(tmp_path, CLASSES)
    assert_silent(record, caplog)
    assert {CAT, DOG, CYRILLIC, GREEK} <= labels_drawn[0]
    assert any("run-猫" in text for texts in labels_drawn for text in texts)
