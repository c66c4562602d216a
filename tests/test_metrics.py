"""Top-k, confusion matrix and per-class metrics against values worked out by hand.

A stub network returns chosen logits for each image (the image carries its sample index in
its pixels), so every number the evaluation reports can be checked exactly.
"""
from __future__ import annotations

import pytest
import torch

from utils.evaluation.metrics import ConfusionMatrix, class_report, topk_correct
from utils.evaluation.scoring import evaluate
from utils.model.execution import Execution

# Six classes, nine images.  RANKINGS[i] lists the classes from most to least likely for
# image i; its top-1 prediction is RANKINGS[i][0].
LABELS = [0, 0, 0, 1, 2, 3, 4, 4, 5]
RANKINGS = [
    [0, 1, 2, 3, 4, 5],  # right
    [1, 0, 2, 3, 4, 5],  # wrong (1), label second: a top-5 hit
    [2, 1, 3, 4, 5, 0],  # wrong (2), label last: a top-5 miss
    [1, 0, 2, 3, 4, 5],  # right
    [2, 0, 1, 3, 4, 5],  # right
    [0, 1, 2, 4, 5, 3],  # wrong (0), label last: a top-5 miss
    [4, 0, 1, 2, 3, 5],  # right
    [4, 3, 2, 1, 0, 5],  # right
    [5, 4, 3, 2, 1, 0],  # right
]
NUM_CLASSES = 6
# By hand, rows = true class, columns = predicted class.
EXPECTED_MATRIX = [
    [1, 1, 1, 0, 0, 0],
    [0, 1, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0],
    [1, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 2, 0],
    [0, 0, 0, 0, 0, 1],
]
EXPECTED_TOP1 = 6 / 9
EXPECTED_TOP5 = 7 / 9
EXPECTED_RECALL = [1 / 3, 1, 1, 0, 1, 1]  # diagonal / row sums
EXPECTED_PRECISION = [1 / 2, 1 / 2, 1 / 2, 0, 1, 1]  # diagonal / column sums; class 3 never predicted
EXPECTED_MEAN_RECALL = (1 / 3 + 4) / 6
EXPECTED_MEAN_PRECISION = 3.5 / 6
# With mean 0 and std 1/255, normalisation leaves the uint8 pixel values unchanged.
IDENTITY_MEAN, IDENTITY_STD = (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)


def stub_logits() -> torch.Tensor:
    """Logits realising RANKINGS: 6 for the first class of a ranking down to 1 for the last."""
    logits = torch.zeros(len(RANKINGS), NUM_CLASSES)
    for i, ranking in enumerate(RANKINGS):
        for place, cls in enumerate(ranking):
            logits[i, cls] = float(NUM_CLASSES - place)
    return logits


class StubNet(torch.nn.Module):
    """Returns the logits of the sample whose index is the image's top-left red value."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", stub_logits(), persistent=False)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x):
        return x

    def forward_head(self, features):
        # The zero term keeps the logits differentiable in the features (for Grad-CAM).
        index = features[:, 0, 0, 0].round().long()
        return self.table[index] + 0 * features.mean((1, 2, 3))[:, None]


def stub_batches(batch_size: int):
    """uint8 images whose pixels all equal their sample index, with their labels."""
    images = torch.arange(len(LABELS), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)
    labels = torch.tensor(LABELS)
    lines = torch.arange(len(LABELS))
    return [(images[i:i + batch_size], labels[i:i + batch_size], lines[i:i + batch_size])
            for i in range(0, len(LABELS), batch_size)]


def test_topk_correct_counts_hand_worked_hits():
    logits, labels = stub_logits(), torch.tensor(LABELS)
    assert topk_correct(logits, labels, 1).item() == 6
    assert topk_correct(logits, labels, 5).item() == 7
    assert topk_correct(logits, labels, 6).item() == 9
    # k beyond the class count means "all classes", not an error.
    assert topk_correct(logits[:, :3], torch.zeros(9, dtype=torch.long), 5).item() == 9


def test_confusion_matrix_and_class_report_match_hand_values():
    matrix = ConfusionMatrix(NUM_CLASSES)
    logits, labels = stub_logits(), torch.tensor(LABELS)
    matrix.update(logits[:4].argmax(1), labels[:4])  # two updates: counts accumulate
    matrix.update(logits[4:].argmax(1), labels[4:])
    assert matrix.matrix.tolist() == EXPECTED_MATRIX
    report = class_report(matrix.matrix)
    assert report.recall == pytest.approx(EXPECTED_RECALL)
    assert report.precision == pytest.approx(EXPECTED_PRECISION)
    assert report.support == [3, 1, 1, 1, 2, 1]
    assert report.mean_recall == pytest.approx(EXPECTED_MEAN_RECALL)
    assert report.mean_precision == pytest.approx(EXPECTED_MEAN_PRECISION)


@pytest.mark.parametrize("batch_size", [1, 4, 9])  # one per image, a ragged last batch, one batch
def test_evaluate_reports_hand_values_whatever_the_batching(batch_size):
    execution = Execution(torch.device("cpu"), IDENTITY_MEAN, IDENTITY_STD, channels_last=False)
    result = evaluate(StubNet(), stub_batches(batch_size), execution, NUM_CLASSES)
    assert result.count == len(LABELS)
    assert result.top1 == pytest.approx(EXPECTED_TOP1)
    assert result.topk == pytest.approx(EXPECTED_TOP5)
    assert result.matrix.tolist() == EXPECTED_MATRIX
    expected_loss = torch.nn.functional.cross_entropy(stub_logits(), torch.tensor(LABELS))
    assert result.loss == pytest.approx(expected_loss.item(), rel=1e-6)
