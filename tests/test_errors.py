"""Error analysis: errors.csv, the most-confused pairs and the top-losses grid."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from utils.evaluation import mistakes as errors_module
from utils.evaluation.metrics import ConfusionMatrix
from utils.evaluation.mistakes import (ERRORS_COLUMNS, ConfusedPair, Prediction, misclassified,
                                       most_confused, predictions_from_logits, write_errors_csv,
                                       write_top_losses)

CLASSES = ["cat, tabby", "犬", "frog"]  # a comma and a CJK name survive the CSV


def scored_images():
    """Eight images of three classes.  ``img7`` is labelled cat but is plainly a frog to
    the model (a planted labelling mistake); two others are honest, hesitant errors."""
    rows = [  # (path, true class, logits)
        ("img0.png", 0, [4.0, 0.0, 0.0]),
        ("img1.png", 0, [0.2, 0.6, 0.0]),   # wrong, unsure
        ("img2.png", 1, [0.0, 3.0, 0.0]),
        ("img3.png", 1, [0.0, 0.5, 1.5]),   # wrong, fairly sure
        ("img4.png", 2, [0.0, 0.0, 2.0]),
        ("img5.png", 2, [1.0, 0.0, 5.0]),
        ("img6.png", 1, [0.0, 2.0, 1.9]),
        ("img7.png", 0, [-3.0, 0.0, 9.0]),  # the mislabelled one
    ]
    paths, targets, logits = zip(*rows)
    return predictions_from_logits(list(paths), torch.tensor(logits), torch.tensor(targets))


def test_errors_csv_lists_only_the_errors_worst_first(tmp_path):
    predictions = scored_images()
    written = write_errors_csv(predictions, CLASSES, tmp_path / "out" / "errors.csv")
    with open(tmp_path / "out" / "errors.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == ERRORS_COLUMNS
        rows = list(reader)
    assert len(rows) == len(written) == sum(not p.correct for p in predictions) == 3
    assert [r["path"] for r in rows] == ["img7.png", "img3.png", "img1.png"]
    assert rows[0]["true"] == "cat, tabby" and rows[0]["predicted"] == "frog"
    assert rows[1]["true"] == "犬"
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    expected = torch.tensor([-3.0, 0.0, 9.0]).softmax(0)
    assert float(rows[0]["confidence"]) == pytest.approx(expected[2].item(), abs=1e-4)
    assert float(rows[0]["loss"]) == pytest.approx(-expected[0].log().item(), abs=1e-4)


def test_no_errors_gives_a_header_only_csv(tmp_path):
    right = [p for p in scored_images() if p.correct]
    assert write_errors_csv(right, CLASSES, tmp_path / "errors.csv") == []
    assert (tmp_path / "errors.csv").read_text(encoding="utf-8").splitlines() == \
        [",".join(ERRORS_COLUMNS)]


def test_predictions_need_one_path_per_row():
    with pytest.raises(ValueError, match="one of each per image"):
        predictions_from_logits(["a.png"], torch.zeros(2, 3), torch.zeros(2))


def test_most_confused_pair_of_a_rigged_three_class_set():
    # 10 images per class: cats go to dogs 4 times (and to frogs once), frogs to cats 2 times.
    true = [0] * 10 + [1] * 10 + [2] * 10
    predicted = [0] * 5 + [1] * 4 + [2] + [1] * 10 + [2] * 8 + [0] * 2
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor(predicted), torch.tensor(true))
    pairs = most_confused(matrix.matrix)
    assert pairs == [ConfusedPair(0, 1, 4, 0.4), ConfusedPair(2, 0, 2, 0.2),
                     ConfusedPair(0, 2, 1, 0.1)]
    assert most_confused(matrix.matrix, limit=1) == pairs[:1]
    assert most_confused(matrix.matrix, min_count=2) == pairs[:2]


def test_equal_counts_rank_the_larger_share_of_its_class_first():
    matrix = np.array([[90, 5, 5], [0, 5, 5], [0, 0, 10]])
    assert [(p.true, p.predicted) for p in most_confused(matrix)] == [(1, 2), (0, 1), (0, 2)]


def test_top_losses_grid_from_paths_arrays_and_maps(tmp_path, monkeypatch):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((400, 600, 3), 90, dtype=np.uint8)).save(big)
    errors = [Prediction(str(big), 0, 2, 0.97, 3.5),
              Prediction(str(tmp_path / "deleted.png"), 1, 0, 0.8, 1.6),
              Prediction("unused.png", 2, 1, 0.6, 0.9)]
    drawn = {}
    monkeypatch.setattr(errors_module, "plot_top_losses",
                        lambda tiles, classes, true, pred, conf, path: drawn.update(
                            tiles=tiles, true=true, pred=pred, conf=conf, path=path))
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[0, 0] = 1.0
    write_top_losses(errors, CLASSES, tmp_path / "top_losses.png", heatmaps=[heat, None],
                     limit=2)
    assert drawn["true"] == [0, 1] and drawn["pred"] == [2, 0] and drawn["conf"] == [0.97, 0.8]
    first, missing = drawn["tiles"]
    assert first.shape == (171, 256, 3)  # a thumbnail, not the full photo
    assert not (first[:10, :10] == 90).all() and (first[-10:, -10:] == 90).all()  # map on it
    assert missing.dtype == np.uint8  # an image gone since scoring is a blank tile

    monkeypatch.undo()
    arrays = [np.zeros((16, 16, 3), np.uint8), torch.zeros(3, 16, 16, dtype=torch.uint8)]
    write_top_losses(errors[:2], CLASSES, tmp_path / "grid.png", images=arrays)
    write_top_losses(misclassified([]), CLASSES, tmp_path / "none.png")  # no errors at all
    for name in ("grid.png", "none.png"):
        with Image.open(tmp_path / name) as png:
            assert png.format == "PNG"
