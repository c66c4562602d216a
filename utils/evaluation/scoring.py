"""The batched evaluation loop shared by training (every epoch) and ``eval.py``."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from typing import Callable

import torch
import torch.nn.functional as F

from utils.evaluation.intervals import Interval, format_ci, format_short, wilson
from utils.evaluation.metrics import (METRICS, TOP_K, ClassReport, ConfusionMatrix, Metric,
                                      class_report, shown_metrics, topk_correct)
from utils.model.execution import Execution


@dataclass
class EvalResult:
    """Sums over the evaluated images; ``matrix`` is the confusion matrix (true x predicted)."""

    loss_sum: float
    top1_correct: int
    topk_correct: int
    count: int
    matrix: torch.Tensor
    #: With ``evaluate(keep=True)``: each image's annotation line, float32 logits and true
    #: class (CPU).
    lines: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def top1(self) -> float:
        return self.top1_correct / max(self.count, 1)

    @property
    def topk(self) -> float:
        """Top-k accuracy with k = :attr:`k`."""
        return self.topk_correct / max(self.count, 1)

    @property
    def k(self) -> int:
        """The k of :attr:`topk`: 5, or the number of classes when there are fewer."""
        return min(TOP_K, self.matrix.shape[0])

    @property
    def shown(self) -> tuple[Metric, ...]:
        """The figures a console line shows (:func:`~utils.evaluation.metrics.shown_metrics`)."""
        return shown_metrics(self.matrix.shape[0])

    @cached_property
    def report(self) -> ClassReport:
        """Per-class precision, recall and support, from the confusion matrix."""
        return class_report(self.matrix)

    @property
    def mean_recall(self) -> float:
        """Mean per-class recall (balanced accuracy): top-1 that every class weighs equally."""
        return self.report.mean_recall

    @property
    def mean_precision(self) -> float:
        return self.report.mean_precision

    def interval(self, metric: Metric) -> Interval | None:
        """A counted metric's Wilson 95% interval over the evaluated images (else None)."""
        if metric.counted is None:
            return None
        return wilson(getattr(self, metric.counted), self.count)

    def describe(self, metric: Metric, short: bool = False) -> str:
        """The figure as printed: ``96.00% (95% CI 90.2–98.4%, 100 images)``, or with
        ``short`` (the per-epoch line) ``96.0% [90.2–98.4]``."""
        if metric.counted is None:
            return metric.show(getattr(self, metric.key))
        if short:
            return format_short(getattr(self, metric.counted), self.count)
        return (f"{metric.show(getattr(self, metric.key))} "
                f"({format_ci(getattr(self, metric.counted), self.count)})")

    def correct(self) -> torch.Tensor | None:
        """Kept per image (``keep``): whether its top-1 was right, in annotation order."""
        if self.lines is None or self.labels is None:
            return None
        return (self.logits.argmax(1) == self.labels)[self.lines.argsort()]

    def summary(self) -> dict[str, float | int]:
        """Every figure of :data:`~utils.evaluation.metrics.METRICS` by its key, fractions in
        [0, 1], with the image count and the k of top-k; a counted figure also has its
        interval as ``<key>_ci`` (``low``, ``high``, ``successes``, ``count``)."""
        out: dict = {"images": self.count, "k": self.k, "classes": self.matrix.shape[0]}
        for metric in METRICS:
            out[metric.key] = getattr(self, metric.key)
            interval = self.interval(metric)
            if interval is not None:
                out[f"{metric.key}_ci"] = interval.as_dict()
        return out


def evaluate(model: torch.nn.Module, batches, execution: Execution, num_classes: int, *,
             reduce=None, progress=None, keep: bool = False) -> EvalResult:
    """:func:`evaluate_logits` of a torch ``model`` computed with ``execution`` (the network
    :meth:`~utils.model.execution.Execution.for_inference` gives, ``model`` in eval mode for the
    duration; training's per-epoch and final scoring)."""
    was_training = model.training
    model.eval()
    try:
        network = execution.for_inference(model)
        return evaluate_logits(partial(execution.logits, network), batches, num_classes,
                               execution.device, reduce=reduce, progress=progress, keep=keep)
    finally:
        model.train(was_training)


@torch.inference_mode()
def evaluate_logits(logits_of: Callable[[torch.Tensor], torch.Tensor], batches,
                    num_classes: int, device: torch.device | str, *, reduce=None,
                    progress=None, keep: bool = False) -> EvalResult:
    """Loss, top-1/top-5 and confusion matrix over ``batches`` of (uint8 images, labels).

    ``logits_of`` maps an image batch to float32 logits on ``device``: a torch model's
    :meth:`~utils.model.execution.Execution.logits`, or any runtime's
    (:meth:`utils.inference.classifier.Classifier.logits`), so every runtime is scored by this code.
    Everything is accumulated on the device and read once at the end.  ``reduce`` (e.g. an
    all-reduce under DDP) is applied to the summed tensors before they are read, so every
    rank reports the metrics of the whole evaluation set.  ``keep`` also returns every
    image's logits with its annotation line (this process's share), for error analysis.
    """
    device = torch.device(device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top1, topk
    count = 0  # on the host: no device sync per batch
    matrix = ConfusionMatrix(num_classes, device)
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    for images, labels, lines in (progress(batches) if progress else batches):
        if not len(labels):
            continue
        labels = labels.to(device, non_blocking=True)
        logits = logits_of(images)
        if keep:
            kept.append((lines, logits.cpu(), labels.cpu()))
        count += len(labels)
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                             topk_correct(logits, labels, 1).double(),
                             topk_correct(logits, labels, TOP_K).double()])
        matrix.update(logits.argmax(1), labels)
    sums = torch.cat([sums, sums.new_tensor([count])])
    if reduce is not None:
        reduce(sums)
        reduce(matrix.matrix)
    loss, top1, topk, count = sums.tolist()
    lines, logits, labels = ((torch.cat(column) for column in zip(*kept)) if kept
                             else (None, None, None))
    return EvalResult(loss, round(top1), round(topk), round(count), matrix.matrix.cpu(),
                      lines, logits, labels)
