"""Classification metrics accumulated on the device: no host sync until they are read."""
from __future__ import annotations

from dataclasses import dataclass

import torch


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
    """Per-class and mean precision/recall from a confusion matrix."""

    precision: list[float]
    recall: list[float]
    support: list[int]

    @property
    def mean_precision(self) -> float:
        """Macro precision over all classes (a class never predicted counts as 0)."""
        return sum(self.precision) / max(len(self.precision), 1)

    @property
    def mean_recall(self) -> float:
        """Macro recall (mean per-class accuracy)."""
        return sum(self.recall) / max(len(self.recall), 1)


def class_report(matrix: torch.Tensor) -> ClassReport:
    """Precision = TP / predicted, recall = TP / actual, each 0 where undefined."""
    m = matrix.double().cpu()
    tp = m.diag()
    predicted, actual = m.sum(0), m.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    return ClassReport(precision.tolist(), recall.tolist(), actual.long().tolist())
