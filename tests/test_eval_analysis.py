"""eval.py's error analysis on a rigged set whose every error is known in advance.

The "model" predicts the colour channel with the highest mean (red, green, blue) and is
differentiable, so Grad-CAM runs for real.  The set holds a planted mislabelled image (pure
red, labelled green: the most confident error), two green images that are mostly blue, and
one blue image that is mostly red.
"""
from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_script  # the top-level eval.py, not the builtin
import nets
from utils.data.lists import write_annotation, write_classes
from utils.model.checkpoint import save_checkpoint

CLASSES = ["red", "green", "blue"]
PLANTED = "planted_red_labelled_green.png"
#: (file name, true class, RGB colour); the model predicts the largest channel.
IMAGES = [(f"red{i}.png", 0, (200, 40 + i, 30)) for i in range(4)] + \
    [(f"green{i}.png", 1, (30, 200, 40 + i)) for i in range(3)] + \
    [("greenish_blue0.png", 1, (20, 100, 130)), ("greenish_blue1.png", 1, (20, 110, 135))] + \
    [(f"blue{i}.png", 2, (30, 40 + i, 200)) for i in range(4)] + \
    [("reddish_blue.png", 2, (140, 20, 120)), (PLANTED, 1, (255, 0, 0))]


class ColourNet(torch.nn.Module):
    """Logits = 10 x the mean of each channel (inputs in [0, 1]): the largest channel wins."""

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x):
        return x

    def forward_head(self, features):
        return 10 * features.mean((2, 3))


@pytest.fixture()
def rigged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nets, "get_model", lambda *args, **kwargs: ColourNet())
    monkeypatch.setattr(nets, "get_entry",
                        lambda name: nets.registry.ModelEntry(name, None, nets.PretrainedCfg(None)))
    samples = []
    for name, label, colour in IMAGES:
        pixels = np.zeros((16, 16, 3), np.uint8)
        pixels[:] = colour
        pixels[4:12, 4:12] = np.minimum(np.array(colour) + 40, 255)  # a brighter centre
        path = tmp_path / "images" / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path)
        samples.append((label, str(path)))
    write_annotation(tmp_path / "cls_test.txt", samples)
    write_classes(tmp_path / "model_data" / "cls_classes.txt", CLASSES)
    save_checkpoint({"model": {}, "backbone": "stub", "num_classes": 3, "classes": CLASSES,
                     "input_shape": [16, 16], "width_mult": 1.0, "in_channels": 3,
                     "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "epoch": 1},
                    tmp_path / "colour.pth")
    return tmp_path


def errors_csv(out: Path) -> list[dict]:
    with open(out / "errors.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_planted_mislabelled_image_heads_errors_csv(rigged, capsys):
    assert eval_script.main(["--model", "colour.pth", "--workers", "0", "--out", "ev"]) == 0
    out = rigged / "ev"
    rows = errors_csv(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(rows) == metrics["images"] - round(metrics["top1"] * metrics["images"]) == 4
    assert Path(rows[0]["path"]).name == PLANTED
    assert (rows[0]["true"], rows[0]["predicted"]) == ("green", "red")
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    assert {Path(r["path"]).name for r in rows} == {
        PLANTED, "greenish_blue0.png", "greenish_blue1.png", "reddish_blue.png"}
    printed = capsys.readouterr().out
    assert "errors          4 in ev/errors.csv" in printed
    assert "most confused: green -> blue (2)" in printed


class Page(HTMLParser):
    """The sections of a report (heading -> text) and its images (alt -> src)."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.images, self._heading = {}, {}, None
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images[attrs["alt"]] = attrs["src"]
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self._heading = data.strip()
            self.sections[self._heading] = ""
        elif self._heading and data.strip():
            self.sections[self._heading] += data.strip() + " "


def test_the_report_shows_the_confused_pairs_and_each_error_with_its_map(rigged):
    assert eval_script.main(["--model", "colour.pth", "--workers", "0", "--out", "ev"]) == 0
    page = Page((rigged / "ev" / "report.html").read_text(encoding="utf-8"))
    assert {"Model and settings", "Results", "Confusion matrix", "Per class",
            "Most confused classes", "Top losses"} <= set(page.sections)
    assert page.sections["Most confused classes"].split("images share of the true class ")[1] \
        .startswith("green → blue 2 ")
    gallery = page.sections["Top losses"]
    assert gallery.index(PLANTED) < gallery.index("greenish_blue")
    assert [a for a in page.images if a.startswith("image ")] == \
        [f"image {k}" for k in range(1, 5)]
    assert [a for a in page.images if a.startswith("activation map ")] == \
        [f"activation map {k}" for k in (1, 2, 3, 4)]
    gallery_images = [src for alt, src in page.images.items()
                      if alt.startswith(("image ", "activation map "))]
    assert all(src.startswith("data:image/") for src in gallery_images)  # embedded


def test_tta_flip_averages_an_image_with_its_mirror(rigged):
    from utils.inference.classifier import Classifier, RunOptions

    classifier = Classifier.load("colour.pth", RunOptions(runtime="torch"))
    batch = np.random.default_rng(0).integers(0, 255, (2, 3, 16, 16), dtype=np.uint8)
    plain = classifier.array_logits(batch)
    mirrored = classifier.array_logits(np.ascontiguousarray(batch[..., ::-1]))
    classifier.tta = "flip"
    assert np.allclose(classifier.array_logits(batch), (plain + mirrored) / 2, atol=1e-5)
    assert eval_script.main(["--model", "colour.pth", "--workers", "0", "--out", "ev",
                             "--tta", "flip"]) == 0
    assert json.loads((rigged / "ev" / "metrics.json").read_text())["tta"] == "flip"
