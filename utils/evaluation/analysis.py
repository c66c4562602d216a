"""What a model gets wrong, and where it looks: the error analysis of an evaluation.

From an evaluation kept per image (``evaluate(keep=True)``) it writes ``errors.csv`` (every
misclassified image, worst loss first) and ``top_losses.png`` (the worst of them, with a
Grad-CAM map of the predicted class when the model is a PyTorch one), and it fills the
evaluation sections of a ``report.html``: the figures, the confusion matrix, per-class
precision and recall, the most-confused pairs and the gallery of top losses.  ``eval.py`` and
the end of every training run use it, so both pages read the same.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from utils.data.image import load_or_warn
from utils.data.preprocess import Geometry, to_uint8
from utils.evaluation.cam import grad_cam
from utils.evaluation.mistakes import (ConfusedPair, Prediction, most_confused,
                                       predictions_from_logits, write_errors_csv, write_top_losses)
from utils.evaluation.plots import plot_confusion
from utils.evaluation.report import Report
from utils.evaluation.scoring import EvalResult
from utils.model.execution import Execution

#: The worst errors drawn, and given a class-activation map.
GALLERY = 16


@dataclass
class Analysis:
    """The errors of one evaluation, worst first, and the pictures of the worst."""

    errors: list[Prediction]
    confused: list[ConfusedPair]
    worst: list[Prediction]  #: the first errors whose images could still be read
    images: list[torch.Tensor]  #: their images as the model took them (uint8)
    maps: list[torch.Tensor] | None  #: their Grad-CAM maps (None without a PyTorch model)


def analyse(result: EvalResult, samples: Sequence[tuple[int, str]], classes: Sequence[str],
            geometry: Geometry, out: str | os.PathLike, *, model: torch.nn.Module | None = None,
            execution: Execution | None = None, temperature: float | None = None) -> Analysis:
    """Write ``errors.csv`` and ``top_losses.png`` into ``out`` for an evaluation of
    ``samples`` kept per image; ``model`` and ``execution`` add the Grad-CAM maps;
    ``temperature`` calibrates the confidences shown."""
    out = Path(out)
    lines = result.lines.tolist()
    predictions = predictions_from_logits([samples[i][1] for i in lines], result.logits,
                                          torch.tensor([samples[i][0] for i in lines]),
                                          temperature)
    errors = write_errors_csv(predictions, classes, out / "errors.csv")
    worst = [(e, load_or_warn(e.path)) for e in errors[:GALLERY]]
    worst = [(e, to_uint8(image, geometry)) for e, image in worst if image is not None]
    images = [image for _, image in worst]
    maps = None
    if model is not None and images:
        # The class each error was reported as (with test-time augmentation it may not be
        # the plain forward pass's argmax).
        targets = torch.tensor([e.predicted for e, _ in worst], device=execution.device)
        maps = list(grad_cam(model, execution.inputs(torch.stack(images)), targets)[0].cpu())
    shown = [e for e, _ in worst]
    write_top_losses(shown, classes, out / "top_losses.png", images=images, heatmaps=maps)
    return Analysis(errors, most_confused(result.matrix, limit=10), shown, images, maps)


def add_evaluation(page: Report, result: EvalResult, classes: Sequence[str],
                   analysis: Analysis | None, out: str | os.PathLike,
                   heading: str = "Test results") -> None:
    """The evaluation's sections of ``page``; the confusion matrix image goes into ``out``."""
    out = Path(out)
    plot_confusion(result.matrix, classes, out / "confusion_matrix.png")
    page.add_results(result.summary(), heading=heading)
    page.add_confusion(result.matrix, classes, image=out / "confusion_matrix.png")
    page.add_per_class(classes, result.report)
    if analysis is not None:
        page.add_confused(analysis.confused, classes)
        page.add_gallery(analysis.worst, classes, images=analysis.images,
                         heatmaps=analysis.maps)
