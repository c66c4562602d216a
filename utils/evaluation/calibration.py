"""Calibrated probabilities: temperature scaling, expected calibration error, reliability diagram.

>>> t = fit_temperature(val_logits, val_labels)        # one float, stored with the model
>>> probs = softmax(test_logits, t)                    # arg-max unchanged, confidence honest
>>> ece(probs, test_labels)                            # 15 equal-width bins
>>> fig = reliability_figure({"before": softmax(test_logits), "after": probs}, test_labels)
>>> fig.savefig("reliability.png")

Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted on the
validation set to minimise the negative log-likelihood: T > 1 softens an over-confident
network, T < 1 sharpens an under-confident one (label smoothing, which the project trains
with by default, makes networks under-confident).  One parameter cannot over-fit a few
hundred images and never changes which class wins.

Robustness: the NLL as a function of 1/T is convex (log-sum-exp of a linear function), so it
has one minimum, found here by a bracketing grid then golden-section search over log T.  When
validation is perfectly classified that minimum is at T -> 0 (ever sharper is ever better on
those images), and on a handful of images it is noise.  So the fit maximises the posterior
under a weak log-normal prior centred on T = 1 (``log T ~ N(0, 1)``, worth about one image
of evidence), then clamps T to :data:`T_RANGE`: with hundreds of images the prior changes T
by well under 1%; with none or a perfect set T stays near 1 instead of running to a bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from utils.model.spec import TEMPERATURE_RANGE

#: Temperatures outside this range are clamped (the range a model description accepts).
T_RANGE = TEMPERATURE_RANGE
#: Standard deviation of the log-normal prior on T (log space); ``None`` to turn it off.
PRIOR_SIGMA = 1.0
#: Bins of :func:`ece` (the usual 15, equal width over [0, 1]).
BINS = 15


def _as_arrays(logits, labels=None):
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must be (N, classes), got shape {z.shape}")
    if labels is None:
        return z, None
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"{z.shape[0]} rows of logits but {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError("labels must be class indices of the logits")
    return z, y


def softmax(logits, temperature: float | None = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64, shifted: no overflow); a
    ``None`` temperature (a model never calibrated) is 1.

    Every probability the project shows is made here: :meth:`Classifier.probabilities
    <utils.inference.classifier.Classifier.probabilities>`, ``errors.csv`` and the reports.
    """
    z, _ = _as_arrays(logits)
    z = z / float(1.0 if temperature is None else temperature)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z, y = _as_arrays(logits, labels)
    if not len(y):
        return 0.0
    z = z / float(temperature)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and what it did on the images it was fitted on."""

    temperature: float
    images: int
    nll_before: float
    nll_after: float
    clamped: bool  #: the fit hit a bound of :data:`T_RANGE`

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "fitted_on_images": self.images,
                "nll_before": self.nll_before, "nll_after": self.nll_after,
                "clamped": self.clamped}


def fit_temperature(logits, labels, *, bounds: tuple[float, float] = T_RANGE,
                    prior_sigma: float | None = PRIOR_SIGMA) -> TemperatureFit:
    """The temperature minimising validation NLL (+ the weak prior), clamped to ``bounds``.

    No images: T = 1.  The search is over u = log T: a 41-point grid brackets the minimum,
    then 60 golden-section steps narrow it to far below anything that shows in a probability.
    """
    z, y = _as_arrays(logits, labels)
    lo, hi = (math.log(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"bounds must be increasing, got {bounds}")
    n = len(y)
    if n == 0:
        return TemperatureFit(1.0, 0, 0.0, 0.0, False)

    def objective(u: float) -> float:
        penalty = 0.0 if prior_sigma is None else 0.5 * (u / prior_sigma) ** 2
        return n * nll(z, y, math.exp(u)) + penalty

    grid = np.linspace(lo, hi, 41)
    values = [objective(u) for u in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = objective(c), objective(d)
    for _ in range(60):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = objective(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = objective(d)
    u = (a + b) / 2
    if values[i] < objective(u):  # a bound of the grid itself is the minimum
        u = float(grid[i])
    t = float(min(max(math.exp(u), bounds[0]), bounds[1]))
    clamped = math.isclose(t, bounds[0], rel_tol=1e-3) or math.isclose(t, bounds[1],
                                                                          rel_tol=1e-3)
    return TemperatureFit(t, n, nll(z, y), nll(z, y, t), clamped)


# ---------------------------------------------------------------------- ECE
@dataclass(frozen=True)
class Bins:
    """Per-bin counts, mean confidence and accuracy of a reliability diagram."""

    edges: np.ndarray  #: (bins + 1,) from 0 to 1
    counts: np.ndarray  #: images per bin
    confidence: np.ndarray  #: mean top probability per bin (nan when empty)
    accuracy: np.ndarray  #: share right per bin (nan when empty)

    @property
    def ece(self) -> float:
        """Sum over bins of |accuracy - confidence| weighted by the bin's share of images."""
        total = self.counts.sum()
        if not total:
            return 0.0
        full = self.counts > 0
        gaps = np.abs(self.accuracy[full] - self.confidence[full])
        return float((gaps * self.counts[full]).sum() / total)


def reliability_bins(probabilities, labels, bins: int = BINS) -> Bins:
    """Group images by their top probability into ``bins`` equal-width bins over [0, 1]
    (right edges included: a confidence of exactly 1/15 falls in the first bin)."""
    p, y = _as_arrays(probabilities, labels)
    if bins < 1:
        raise ValueError("bins must be at least 1")
    conf = p.max(axis=1)
    right = p.argmax(axis=1) == y
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=conf, minlength=bins) / counts
        accuracy = np.bincount(index, weights=right.astype(float), minlength=bins) / counts
    return Bins(np.linspace(0, 1, bins + 1), counts, confidence, accuracy)


def ece(probabilities, labels, bins: int = BINS) -> float:
    """Expected calibration error (equal-width bins of the top probability), in [0, 1]."""
    return reliability_bins(probabilities, labels, bins).ece


# ---------------------------------------------------------------------- figure
def reliability_figure(series: Mapping[str, np.ndarray], labels, bins: int = BINS,
                       title: str | None = None):
    """A reliability diagram as a :class:`matplotlib.figure.Figure` (no pyplot state: safe in
    threads and servers; save with ``fig.savefig(path)``).

    ``series`` maps a name (``"before"``, ``"after T = 1.8"``) to (N, classes) probabilities
    of the same images.  Top: accuracy per confidence bin against the diagonal (perfect
    calibration), the legend giving each series' ECE; bottom: images per bin.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 5.6), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="perfect calibration")
    width = 1 / bins
    names = list(series)
    for k, name in enumerate(names):
        b = reliability_bins(series[name], labels, bins)
        centres = (b.edges[:-1] + b.edges[1:]) / 2
        full = b.counts > 0
        offset = (k - (len(names) - 1) / 2) * width / max(len(names), 1)
        top.bar(centres[full] + offset, b.accuracy[full], width=width / max(len(names), 1),
                alpha=0.75, label=f"{name}: ECE {100 * b.ece:.1f}%")
        top.plot(b.confidence[full], b.accuracy[full], marker="o", ms=3, lw=0.8)
        bottom.bar(centres + offset, b.counts, width=width / max(len(names), 1), alpha=0.75)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy in bin")
    top.legend(loc="upper left", fontsize=8)
    n = len(np.asarray(labels).reshape(-1))
    top.set_title(title or f"Reliability ({n} images, {bins} bins)", fontsize=10)
    bottom.set_xlabel("top probability (confidence)")
    bottom.set_ylabel("images")
    bottom.set_yscale("symlog", linthresh=1)
    fig.tight_layout()
    return fig


def describe_change(before: float, after: float, temperature: float, images: int) -> str:
    """One line for a run's end: ``calibration: T = 1.84 (fitted on 300 validation images);
    test ECE 7.9% -> 2.1%``."""
    return (f"calibration: T = {temperature:.2f} (fitted on {images} validation images); "
            f"test ECE {100 * before:.1f}% -> {100 * after:.1f}%")


__all__: Sequence[str] = ["T_RANGE", "BINS", "softmax", "nll", "fit_temperature",
                          "TemperatureFit", "reliability_bins", "Bins", "ece",
                          "reliability_figure", "describe_change"]
