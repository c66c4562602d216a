"""report.html: parsed like a browser would, every local reference checked, user data escaped."""
from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import torch
from PIL import Image

from utils.evaluation.metrics import class_report
from utils.evaluation.mistakes import Prediction, most_confused
from utils.evaluation.plots import plot_confusion, plot_curves
from utils.evaluation.report import MAX_TABLE_CLASSES, Report

EVIL = "<script>alert('x')</script>"
CLASSES = ["cat", "猫 & co", EVIL]
MATRIX = torch.tensor([[8, 1, 1], [0, 7, 3], [2, 0, 8]])  # 23 of 30 right


class Page(HTMLParser):
    """Tags with their attributes, the text as a browser shows it, and each section's text
    under its heading."""

    def __init__(self, path: Path):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.sections: dict[str, list[str]] = {}
        self._section: list[str] | None = None
        self._in_h2 = False
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self._section = self.sections.setdefault(data, [])
        elif self._section is not None and data.strip():
            self._section.append(data.strip())

    @property
    def all_text(self) -> str:
        return " ".join(self.text)

    def references(self) -> list[str]:
        return [attrs[key] for tag, attrs in self.tags for key in ("src", "href")
                if attrs.get(key)]


def check_self_contained(report: Path, page: Page) -> int:
    """No external resource or script file (only the page's own inline scripts, e.g. the
    label review's); every local file exists; data URIs are images.

    Returns how many local files the page references.
    """
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"link", "iframe", "object", "embed"}
    assert not [attrs for tag, attrs in page.tags if tag == "script" and attrs.get("src")]
    local = 0
    for ref in page.references():
        assert not ref.startswith(("http:", "https:", "//", "file:")), ref
        if ref.startswith("#"):
            continue
        if ref.startswith("data:"):
            with Image.open(io.BytesIO(base64.b64decode(ref.split(",", 1)[1]))) as image:
                image.verify()
            continue
        assert (report.parent / unquote(ref)).is_file(), ref
        local += 1
    assert "@import" not in report.read_text(encoding="utf-8")
    return local


def evaluation_page(tmp_path: Path) -> Path:
    out = tmp_path / "eval #1 out"  # a space and a '#' in a folder name must still resolve
    plot_confusion(MATRIX, CLASSES, out / "confusion_matrix.png")
    image_file = tmp_path / "data" / "a b#1.png"
    image_file.parent.mkdir()
    Image.fromarray(np.full((32, 32, 3), 120, dtype=np.uint8)).save(image_file)
    errors = [Prediction(str(image_file), 2, 0, 0.91, 2.7),
              Prediction(str(tmp_path / "gone.png"), 1, 2, 0.55, 1.2)]
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[:8, :8] = 1
    report = class_report(MATRIX)
    page = Report(out / "report.html", f"Evaluation of {EVIL}", subtitle="resnet18, 3 classes")
    page.add_results({"images": 30, "top1": 23 / 30, "topk": 1.0, "k": 3, "loss": 0.61234,
                      "mean_recall": report.mean_recall, "mean_precision": report.mean_precision})
    page.add_confusion(MATRIX, CLASSES, image=out / "confusion_matrix.png")
    page.add_per_class(CLASSES, report)
    page.add_confused(most_confused(MATRIX), CLASSES)
    page.add_gallery(errors, CLASSES, heatmaps=[heat, None])
    page.add_images("Figures", [out / "confusion_matrix.png", out / "not-written.png"])
    return page.write()


def test_evaluation_report_is_self_contained_and_shows_the_numbers(tmp_path):
    path = evaluation_page(tmp_path)
    page = Page(path)
    # confusion_matrix.png (once, the 3 classes fit a table) and the gallery link to a b#1.png
    assert check_self_contained(path, page) == 2
    text = page.all_text
    for figure in ("76.67%", "100.00%", "0.6123", "top-3 accuracy", "mean recall",
                   "mean precision"):
        assert figure in text, figure
    assert "missing image" in text and "not-written.png" in text  # said, not a broken link
    # The confusion table: counts with their share of the true class, row by row.
    matrix = page.sections["Confusion matrix"]
    row = matrix.index("猫 & co", matrix.index("images"))  # past the column headers
    assert matrix[row:row + 6] == ["猫 & co", "7", "70%", "3", "30%", "10"]
    # Most confused: 猫 & co -> <script> (3 images, 30%) first, then <script> -> cat (2).
    confused = page.sections["Most confused classes"]
    first = confused.index("猫 & co")
    assert confused[first:first + 5] == ["猫 & co", "→", EVIL, "3", "30.00%"]
    assert confused[first + 5:first + 10] == [EVIL, "→", "cat", "2", "20.00%"]
    # The gallery: both errors captioned, one with its map beside it.
    assert "91.0%" in text and "loss 2.700" in text and "Grad-CAM" in text
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert sum(a["alt"].startswith("activation map") for a in images) == 1
    # User data is text, never markup.
    assert EVIL in text and "<script" not in path.read_text(encoding="utf-8")


def test_training_report_settings_curves_and_results(tmp_path):
    run = tmp_path / "logs" / "run-1"
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_top1": 0.2 * e,
             "val_top1": 0.18 * e} for e in range(1, 5)]
    plot_curves(rows, run, run_name="run-1", best_epoch=4)
    page = Report(run / "report.html", "run-1", subtitle="training run")
    page.add_settings({"backbone": "mobilenetv2", "input_shape": [32, 32], "lr": 0.1,
                       "amp": None, "augment": {"flip": True, "autoaugment": EVIL}},
                      plan="4 epochs x 10 steps, about 5 s")
    page.add_images("Training curves", [run / "loss.png", run / "accuracy.png"])
    page.add_results({"top1": 0.72, "topk": 0.99, "mean_recall": 0.7, "mean_precision": 0.71})
    path = page.write()
    page_ = Page(path)
    assert check_self_contained(path, page_) == 2
    text = page_.all_text
    for value in ("mobilenetv2", "32, 32", "augment.flip", "True", "4 epochs x 10 steps",
                  "72.00%", "99.00%", EVIL):
        assert value in text, value
    assert [t for t, _ in page_.tags].count("section") == 3


def test_many_classes_show_the_matrix_image_and_embedding_makes_one_file(tmp_path):
    n = MAX_TABLE_CLASSES + 1
    matrix = np.eye(n, dtype=int) * 5 + 1
    classes = [f"class {i}" for i in range(n)]
    plot_confusion(matrix, classes, tmp_path / "cm.png")
    page = Report(tmp_path / "out" / "report.html", "big", embed=True)
    page.add_confusion(matrix, classes, image=tmp_path / "cm.png")
    path = page.write()
    parsed = Page(path)
    assert check_self_contained(path, parsed) == 0  # everything embedded
    assert not [tag for tag, _ in parsed.tags if tag == "td"]  # no 31x31 table
    assert [tag for tag, _ in parsed.tags].count("img") == 1
