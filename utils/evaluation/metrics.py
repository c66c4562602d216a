"""Classification metrics: the table of figures every report shows, and their computation.

:data:`METRICS` is the one list of an evaluation's figures: the console summaries, the
per-epoch ``metrics.csv`` columns and TensorBoard scalars, ``results.json`` /
``metrics.json`` and ``report.html`` all iterate over it, so a new metric is one row here
and one property of :class:`~utils.evaluation.scoring.EvalResult`.  The counts behind them
are accumulated on the device: no host sync until they are read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.evaluation.intervals import Interval, wilson

#: The "top-5" of every report: top-k with k = min(TOP_K, number of classes).
TOP_K = 5


@dataclass(frozen=True)
class Metric:
    """One figure of an evaluation.

    Attributes:
        key: its name in every file (``results.json``, ``metrics.csv`` as ``val_<key>``).
        label: how it is shown; ``{k}`` stands for the k of top-k.
        percent: a fraction, shown as a percentage (else shown with four decimals).
        higher_is_better: whether a larger value is a better model.
        counted: for a share of the images, the :class:`EvalResult
            <utils.evaluation.scoring.EvalResult>` attribute counting its successes: the
            figure then carries its Wilson 95% interval and image count everywhere.
    """

    key: str
    label: str
    percent: bool = True
    higher_is_better: bool = True
    counted: str | None = None

    def title(self, k: int) -> str:
        return self.label.format(k=k)

    def show(self, value: float) -> str:
        return f"{value:.2%}" if self.percent else f"{value:.4f}"


#: Every figure of an evaluation, in the order reports show them.
METRICS = (
    Metric("top1", "top-1", counted="top1_correct"),
    Metric("topk", "top-{k}", counted="topk_correct"),
    Metric("mean_recall", "mean recall"),
    Metric("mean_precision", "mean precision"),
    Metric("loss", "loss", percent=False, higher_is_better=False),
)


def shown_metrics(num_classes: int | None) -> tuple[Metric, ...]:
    """The figures worth printing for ``num_classes`` classes: top-k is left out when k
    covers every class, where it is 100% by construction (files keep every column)."""
    if num_classes is None or num_classes > TOP_K:
        return METRICS
    return tuple(m for m in METRICS if m.key != "topk")


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Number of rows whose target is among the ``k`` highest logits (a 0-d tensor)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == targets[:, None]).any(dim=1).sum()


class ConfusionMatrix:
    """``matrix[true, predicted]`` counts, updated batch by batch on the logits' device."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch of predicted and true class indices."""
        idx = targets.to(torch.long) * self.num_classes + predictions.to(torch.long)
        self.matrix += torch.bincount(idx, minlength=self.num_classes ** 2).view_as(self.matrix)


@dataclass
class ClassReport:
    """Per-class and mean precision/recall from a confusion matrix.

    A class with no images in the evaluated set has no recall, and one that is neither in
    the set nor ever predicted has no precision: their entries read 0 but they are left out
    of the means, so a perfect model scores 1.0 on a test set lacking a class.
    """

    precision: list[float]
    recall: list[float]
    support: list[int]  #: images of the class in the evaluated set
    predicted: list[int]  #: images predicted as the class
    correct: list[int]  #: images of the class predicted as it

    def recall_interval(self, i: int) -> Interval:
        """Class ``i``'s recall with its Wilson 95% interval (out of its images)."""
        return wilson(self.correct[i], self.support[i])

    def precision_interval(self, i: int) -> Interval:
        """Class ``i``'s precision with its Wilson 95% interval (out of the images
        predicted as it)."""
        return wilson(self.correct[i], self.predicted[i])

    @property
    def mean_precision(self) -> float:
        """Macro precision over the classes present or predicted (one predicted but never
        right counts as 0)."""
        scored = [p for p, s, n in zip(self.precision, self.support, self.predicted) if s or n]
        return sum(scored) / max(len(scored), 1)

    @property
    def mean_recall(self) -> float:
        """Macro recall (mean per-class accuracy) over the classes present."""
        scored = [r for r, s in zip(self.recall, self.support) if s]
        return sum(scored) / max(len(scored), 1)


def class_report(matrix: torch.Tensor) -> ClassReport:
    """Precision = TP / predicted, recall = TP / actual, each 0 where undefined."""
    m = matrix.double().cpu()
    tp = m.diag()
    predicted, actual = m.sum(0), m.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    return ClassReport(precision.tolist(), recall.tolist(), actual.long().tolist(),
                       predicted.long().tolist(), tp.long().tolist())
