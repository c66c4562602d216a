"""An "unknown" answer: confidence scores, a threshold chosen on validation, AUROC.

>>> s_val = score(val_logits, "msp", temperature=t)        # higher = more like training data
>>> th = choose_threshold(s_val[val_correct], 0.95, "msp")  # keeps 95% of right answers
>>> unknown = rejects(th, score(new_logits, "msp", temperature=t))
>>> auroc(score(test_logits, "msp", t), score(ood_logits, "msp", t))

Torch-free: an ``.onnx`` model's answers are thresholded here without importing torch.
Scores (all "higher = more in-distribution", so one threshold rule serves them all):

``msp``
    the maximum calibrated softmax probability, max softmax(z / T).  Bounded in [1/C, 1],
    readable ("below 62% we say unknown").  Saturates: a network that puts a huge logit on
    one class for a noise image reads 100% however far from the data the image is.
``max_logit``
    max z.  Not normalised by the other classes, so it keeps the magnitude softmax throws
    away (Hendrycks et al., 2022).  Unchanged by T up to a constant factor.
``energy``
    T · logsumexp(z / T) (minus the free energy; Liu et al., 2020): like max_logit, smooth.

``typicality``
    how typical the image's activations are at every depth of the backbone
    (:mod:`utils.evaluation.typicality`): what models store and ``--reject auto`` uses,
    because the logit scores do not separate random noise from real images at all (a
    shapes network is *more* confident on noise than on its test images: AUROC 0.04-0.64
    for msp, max_logit and energy, against 0.997-1.000 for typicality; README, "Unknown
    images").

Threshold (:func:`choose_threshold`): the largest value that keeps at least ``keep`` of the
*correctly classified* validation images.  Right answers are what a user loses when the
model says "unknown", so the target is stated in them ("keeps 95% of right answers").
Wrong answers below the threshold are rejected too, which is a gain.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from utils.model.spec import Rejection

SCORES = ("msp", "max_logit", "energy")
#: The default target: keep 95% of right in-distribution answers.
KEEP = 0.95


def _logits(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must be (N, classes), got shape {z.shape}")
    return z


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def score(logits, kind: str = "msp", temperature: float | None = 1.0) -> np.ndarray:
    """Per-image confidence of ``kind`` (one of :data:`SCORES`); higher = more known.
    A ``None`` temperature (a model never calibrated) is 1."""
    z = _logits(logits)
    t = 1.0 if temperature is None else float(temperature)
    if not t > 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    if kind == "msp":
        # max softmax = exp(max - logsumexp), computed in log space: no 0/0 for huge logits.
        return np.exp(z.max(axis=1) / t - _logsumexp(z / t))
    if kind == "max_logit":
        return z.max(axis=1)
    if kind == "energy":
        return t * _logsumexp(z / t)
    raise ValueError(f"unknown score {kind!r} (choose from {', '.join(SCORES)})")


# ---------------------------------------------------------------------- AUROC
def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve of "in-distribution scores higher than out-of-distribution":
    P(in > out) + P(in = out) / 2 over all pairs (Mann-Whitney U with average ranks for
    ties).  0.5 is chance, 1 perfect separation; NaN when either side is empty."""
    a = np.asarray(in_scores, dtype=np.float64).reshape(-1)
    b = np.asarray(out_scores, dtype=np.float64).reshape(-1)
    if not len(a) or not len(b):
        return float("nan")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("scores contain NaN")
    ranks = _average_ranks(np.concatenate([a, b]))
    u = ranks[:len(a)].sum() - len(a) * (len(a) + 1) / 2
    return float(u / (len(a) * len(b)))


# ---------------------------------------------------------------------- threshold
def rejects(rejection: Rejection, scores) -> np.ndarray:
    """True where the answer is "unknown": the score strictly below the threshold."""
    return np.asarray(scores, dtype=np.float64) < rejection.value


def choose_threshold(correct_scores, keep: float = KEEP,
                     kind: str = "typicality") -> Rejection | None:
    """The highest threshold keeping at least ``keep`` of ``correct_scores`` (the scores of
    the correctly classified validation images); ``None`` when there are none (no threshold
    can be chosen: say so, and reject nothing).

    With n right answers it keeps ceil(keep * n) of them: the ceil(keep * n)-th highest
    score is the threshold (ties at it are all kept, so ``kept`` may exceed ``keep``).
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], not {keep}")
    s = np.sort(np.asarray(correct_scores, dtype=np.float64).reshape(-1))
    if not len(s):
        return None
    need = math.ceil(keep * len(s) - 1e-9)
    value = float(s[len(s) - need])
    kept = float(np.mean(s >= value))
    return Rejection(kind, value, keep, kept, len(s))


def rejected_share(scores, rejection: Rejection) -> float:
    """Share of ``scores`` below the threshold (answered "unknown")."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return float(np.mean(rejects(rejection, s))) if len(s) else float("nan")


@dataclass(frozen=True)
class OodReport:
    """``eval.py --ood DIR``'s figures (``metrics.json``'s ``ood``)."""

    score: str
    auroc: float
    known_images: int
    unknown_images: int
    rejected_unknown: float | None  #: share of the unknown images answered "unknown"
    kept_right: float | None  #: share of the right known answers kept
    threshold: float | None

    def lines(self) -> list[str]:
        """The console lines (the 16-column layout of ``eval.py``'s summary)."""
        out = [f"{'unknown images':<16}AUROC {self.auroc:.3f} ({self.score} score, "
               f"{self.known_images} known vs {self.unknown_images} unknown images; "
               "0.5 is chance, 1 perfect)"]
        if self.threshold is None:
            out.append(f"{'':<16}the model has no rejection threshold (trained before "
                       "calibration): no answer would be 'unknown'")
        else:
            out.append(f"{'':<16}at the model's threshold: {100 * self.rejected_unknown:.1f}% "
                       f"of the unknown images answered 'unknown', "
                       f"{100 * self.kept_right:.1f}% of the right answers kept")
        return out

    def as_dict(self) -> dict:
        return asdict(self)


def ood_report(known_scores, unknown_scores, known_right, rejection: Rejection | None,
               kind: str) -> OodReport:
    """AUROC of known images (all of them, right or wrong) against unknown images, and what
    the threshold does to both: unknown images rejected, right known answers kept."""
    a = np.asarray(known_scores, dtype=np.float64).reshape(-1)
    b = np.asarray(unknown_scores, dtype=np.float64).reshape(-1)
    right = np.asarray(known_right, dtype=bool).reshape(-1)
    if rejection is None:
        return OodReport(kind, auroc(a, b), len(a), len(b), None, None, None)
    kept = float(np.mean(~rejects(rejection, a[right]))) if right.any() else float("nan")
    return OodReport(kind, auroc(a, b), len(a), len(b), rejected_share(b, rejection), kept,
                     rejection.value)
