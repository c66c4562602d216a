"""Everything an evaluation leaves to read, written the same way by ``eval.py`` and by the end
of every training run: the figures' summary, the confusion matrix as CSV and picture, the
per-class bars, the error analysis (``errors.csv``, ``top_losses.png``), the calibration
(``reliability.png``) and the evaluation's sections of ``report.html``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from utils.data.preprocess import Geometry
from utils.evaluation.analysis import Analysis, add_evaluation, analyse
from utils.evaluation.confidence_report import add_calibration, calibration_figures
from utils.evaluation.plots import plot_per_class
from utils.evaluation.report import Report
from utils.evaluation.scoring import EvalResult
from utils.fileio import CsvWriter
from utils.model.execution import Execution


def summary(result: EvalResult, classes: Sequence[str],
            temperature: float | None = None) -> dict:
    """An evaluation's figures (:meth:`EvalResult.summary`, intervals included), each class's
    recall and precision with their 95% intervals (``[low, high]``), support and predicted
    count, and, for an evaluation kept per image, its calibration (ECE at the model's
    ``temperature`` and at 1): ``metrics.json``, and ``results.json``'s ``test``."""
    report = result.report
    per_class = []
    for i, name in enumerate(classes):
        recall, precision = report.recall_interval(i), report.precision_interval(i)
        per_class.append({"class": name, "recall": report.recall[i],
                          "recall_ci": [recall.low, recall.high],
                          "precision": report.precision[i],
                          "precision_ci": [precision.low, precision.high],
                          "support": report.support[i], "predicted": report.predicted[i]})
    out = {**result.summary(), "per_class": per_class}
    calibration = calibration_figures(result, temperature)
    if calibration is not None:
        out["calibration"] = calibration
    return out


def write_evaluation(page: Report, result: EvalResult, samples: Sequence[tuple[int, str]],
                     classes: Sequence[str], geometry: Geometry, out: str | os.PathLike, *,
                     heading: str, model: torch.nn.Module | None = None,
                     execution: Execution | None = None,
                     temperature: float | None = None) -> Analysis | None:
    """Write an evaluation's files into ``out`` and add its sections to ``page``.

    ``samples`` are the evaluated annotation lines; the error analysis and the calibration
    section need ``result`` kept per image (``evaluate(keep=True)``) and are skipped
    otherwise.  ``model`` and ``execution`` (a PyTorch network) add the Grad-CAM maps;
    ``temperature`` (the model's) calibrates every probability shown.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as f:
        writer = CsvWriter(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, result.matrix.tolist()):
            writer.writerow([name, *row])
    plot_per_class(result.report.recall, classes, out / "recall.png", "recall")
    plot_per_class(result.report.precision, classes, out / "precision.png", "precision")
    analysis = None
    if result.lines is not None:
        analysis = analyse(result, samples, classes, geometry, out, model=model,
                           execution=execution, temperature=temperature)
    add_evaluation(page, result, classes, analysis, out, heading=heading)
    add_calibration(page, result, temperature, out)
    return analysis
