"""Error analysis of an evaluation: which images are wrong, how badly, and which classes mix.

From one :class:`Prediction` per image (path, true class, predicted class, probability of
the prediction, loss):

* :func:`write_errors_csv` - ``errors.csv``, the misclassified images, worst (highest
  loss) first: a confidently wrong image is the first place to look for a mislabelled one;
* :func:`most_confused` - the (true -> predicted) class pairs of a confusion matrix, most
  frequent first, like fastai's ``most_confused``;
* :func:`write_top_losses` - ``top_losses.png``, a captioned grid of the worst images,
  optionally with each one's class-activation map over it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils.data.image import ImageError, load_image
from utils.evaluation.calibration import softmax
from utils.evaluation.cam import as_rgb_array, overlay
from utils.evaluation.plots import plot_top_losses
from utils.fileio import CsvWriter

#: Columns of ``errors.csv``; ``true`` and ``predicted`` are class names.
ERRORS_COLUMNS = ("path", "true", "predicted", "confidence", "loss")
#: Longer side (px) of the images drawn in the top-losses grid.
THUMBNAIL = 256


@dataclass(frozen=True)
class Prediction:
    """The outcome for one image: ``confidence`` is the predicted class's probability and
    ``loss`` the cross-entropy of the true class."""

    path: str
    true: int
    predicted: int
    confidence: float
    loss: float

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


@dataclass(frozen=True)
class ConfusedPair:
    """Images of class ``true`` predicted as ``predicted``; ``share`` of the true class."""

    true: int
    predicted: int
    count: int
    share: float


def predictions_from_logits(paths: Sequence[str], logits: torch.Tensor,
                            targets: torch.Tensor,
                            temperature: float | None = None) -> list[Prediction]:
    """One :class:`Prediction` per row of ``logits`` (N, C), with true classes ``targets``;
    the confidence is the model's calibrated probability (``temperature``, 1 when None), the
    loss the plain cross-entropy of the logits."""
    logits = logits.detach().float().cpu()
    targets = targets.detach().long().cpu()
    if not len(paths) == len(logits) == len(targets):
        raise ValueError(f"{len(paths)} paths, {len(logits)} logits and {len(targets)} "
                         "targets: one of each per image is needed")
    probabilities = torch.from_numpy(softmax(logits.numpy(), temperature))
    confidence, predicted = probabilities.max(1)
    loss = F.cross_entropy(logits, targets, reduction="none")
    return [Prediction(str(p), t, c, conf, l) for p, t, c, conf, l in
            zip(paths, targets.tolist(), predicted.tolist(), confidence.tolist(),
                loss.tolist())]


def misclassified(predictions: Sequence[Prediction]) -> list[Prediction]:
    """The wrong predictions, highest loss first (equal losses keep their order)."""
    return sorted((p for p in predictions if not p.correct), key=lambda p: -p.loss)


def write_errors_csv(predictions: Sequence[Prediction], classes: Sequence[str],
                     path: str | os.PathLike) -> list[Prediction]:
    """Write ``errors.csv``: one row per misclassified image, worst first; returns them."""
    errors = misclassified(predictions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = CsvWriter(f)
        writer.writerow(ERRORS_COLUMNS)
        for e in errors:
            writer.writerow([e.path, classes[e.true], classes[e.predicted],
                             f"{e.confidence:.4f}", f"{e.loss:.4f}"])
    return errors


def most_confused(matrix, limit: int | None = None, min_count: int = 1) -> list[ConfusedPair]:
    """Off-diagonal cells of a confusion matrix (rows = true class), most images first.

    Ties are broken by the share of the true class (a pair that takes half of a small class
    comes before one that takes a sliver of a big one), then by class ids.
    """
    counts = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix,
                        dtype=np.int64)
    totals = counts.sum(axis=1)
    pairs = [ConfusedPair(int(t), int(p), int(counts[t, p]), counts[t, p] / totals[t])
             for t, p in zip(*np.nonzero(counts)) if t != p and counts[t, p] >= min_count]
    pairs.sort(key=lambda c: (-c.count, -c.share, c.true, c.predicted))
    return pairs[:limit]


def write_top_losses(errors: Sequence[Prediction], classes: Sequence[str],
                     path: str | os.PathLike, *, images: Sequence | None = None,
                     heatmaps: Sequence | None = None, limit: int = 16) -> None:
    """``top_losses.png``: the first ``limit`` of ``errors`` (worst first) in a grid.

    Args:
        errors: misclassified predictions, worst first (:func:`misclassified`).
        classes: class names, for the captions.
        images: one image per error: a path, a PIL image, an (H, W, 3) uint8 array or a
            (3, H, W) uint8 tensor.  Default: each error's own path.
        heatmaps: optional class-activation map per error (``None`` for none), values in
            [0, 1], aligned with the image it is drawn over: pass the image the map was
            computed on (the model's input), not the original file.
    """
    errors = list(errors)[:limit]
    sources = [e.path for e in errors] if images is None else list(images)[:len(errors)]
    maps = list(heatmaps)[:len(errors)] if heatmaps is not None else [None] * len(errors)
    tiles = []
    for source, heat in zip(sources, maps):
        tile = thumbnail(source, THUMBNAIL)
        tiles.append(tile if heat is None else overlay(tile, heat))
    plot_top_losses(tiles, classes, [e.true for e in errors], [e.predicted for e in errors],
                    [e.confidence for e in errors], path)


def thumbnail(source, side: int, enlarge: bool = False) -> np.ndarray:
    """An image source as an (H, W, 3) uint8 array whose longer side is at most ``side``
    (exactly ``side`` with ``enlarge``, for tiny inputs such as 32x32 images).

    ``source`` is a path, a PIL image, an (H, W, 3) array or a (3, H, W) tensor.  A file
    that can no longer be read gives a plain grey square rather than an error: the analysis
    of a finished evaluation should not fail on an image deleted since.
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            source = load_image(source)
        except ImageError:
            return np.full((side, side, 3), 210, dtype=np.uint8)
    image = Image.fromarray(as_rgb_array(source))
    scale = side / max(image.size)
    if scale < 1 or enlarge:
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.BICUBIC)
    return np.asarray(image)
