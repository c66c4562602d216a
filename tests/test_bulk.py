"""Bulk prediction outputs: a CSV per run, images copied into class folders, never overwritten."""
from __future__ import annotations

import csv

import pytest

from tests.helpers import COLOURS, make_image
from utils.cli import UserError
from utils.inference.bulk import UNCERTAIN, CsvPredictions, sort_into


def test_sorting_copies_into_class_folders_and_never_overwrites(tmp_path):
    images = [make_image(tmp_path / "in" / sub / "a.png", COLOURS[i], seed=i)
              for i, sub in enumerate(("x", "y", "z"))]
    before = {p: p.read_bytes() for p in images}
    tops = [[("cat", 0.9)], [("cat", 0.8)], [("dog", 0.3)]]
    copies = [sort_into(tmp_path / "out", image, top, min_confidence=0.5)
              for image, top in zip(images, tops)]
    assert [c.relative_to(tmp_path / "out").as_posix() for c in copies] == [
        "cat/a.png", "cat/a-2.png", f"{UNCERTAIN}/a.png"]
    assert [c.read_bytes() for c in copies] == [before[p] for p in images]
    assert {p: p.read_bytes() for p in images} == before  # the originals are untouched
    again = sort_into(tmp_path / "out", images[0], tops[0])  # sorted again: the same copy
    assert again == copies[0] and copies[0].read_bytes() == before[images[0]]
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3


def test_csv_has_a_row_per_image_and_refuses_an_existing_file(tmp_path):
    out = CsvPredictions(tmp_path / "p.csv", k=2)
    out.add("a.png", [("cat", 0.75), ("dog", 0.25)])
    out.close()
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["path", "class_1", "probability_1", "class_2", "probability_2"],
                    ["a.png", "cat", "0.750000", "dog", "0.250000"]]
    with pytest.raises(UserError, match="exists"):
        CsvPredictions(tmp_path / "p.csv", k=2)
