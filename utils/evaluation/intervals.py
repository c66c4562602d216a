"""Error bars for the proportions a run reports (top-1, per-class recall and precision).

Pure Python (no torch, no numpy): the console lines, ``results.json`` / ``metrics.json`` and
``report.html`` all format their intervals here.

>>> iv = wilson(96, 100)
>>> format_proportion("top-1", 96, 100)
'top-1 96.0% (95% CI 90.2–98.4%, 100 images)'
>>> too_small(wilson(21, 24))          # the 24-image test set of the issue: ±13 points
True

Why Wilson: the normal ("Wald") interval p ± z·sqrt(p(1-p)/n) collapses to zero width at
0% and 100% (a 30/30 validation set would read "100% ± 0") and leaves [0, 1] for small n;
Wilson's score interval has close to nominal coverage down to a handful of images and never
leaves [0, 1], at the cost of one square root.  No scipy needed.

Whether the best epoch stands out (:func:`epochs_within_noise`): every epoch is scored on the
*same* validation images, so the right comparison is paired.  Two epochs that both get the
same 90 images right and the same 10 wrong are identical, whatever the set's size; only the
images on which they disagree carry evidence.  McNemar's exact test looks at exactly those:
under "the two epochs are equally good", each disagreement is a fair coin, so with ``b``
images only the best gets right and ``c`` only the other gets right, the two-sided p-value
is ``P(Binomial(b + c, 1/2) <= min(b, c)) * 2``.  An epoch with p >= 0.05 is *within noise*
of the best.  This is more sensitive than "the intervals overlap" (two 95% intervals overlap
even when a 5%-level test would tell the epochs apart, and unpaired intervals throw away that
the images are shared), and it needs nothing but one bit per image per epoch.  When those bits
are not at hand (a resumed run, an old ``metrics.csv``), :func:`within_interval` is the
fallback: the other epoch's top-1 lies inside the best epoch's Wilson interval.
The best epoch was picked as a maximum, so it is flattered (winner's curse): "within noise"
is then, if anything, said too rarely, never too often.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

#: A held-out set whose 95% interval is wider than ± this (a fraction) measures nothing
#: useful: the issue's rule, ±10 points.
TOO_SMALL_HALF_WIDTH = 0.10
#: Significance level of :func:`epochs_within_noise`.
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    """A proportion ``successes / count`` with its confidence interval ``[low, high]``."""

    successes: int
    count: int
    low: float
    high: float
    confidence: float = 0.95

    @property
    def estimate(self) -> float:
        """The observed proportion (0 when nothing was counted)."""
        return self.successes / self.count if self.count else 0.0

    @property
    def half_width(self) -> float:
        """Half the interval's width: the "± points" a reader has in mind."""
        return (self.high - self.low) / 2

    def as_dict(self) -> dict:
        """For ``results.json`` / ``metrics.json``: fractions in [0, 1], like every figure."""
        return {"value": self.estimate, "low": self.low, "high": self.high,
                "successes": self.successes, "count": self.count,
                "confidence": self.confidence}


def z_value(confidence: float = 0.95) -> float:
    """The two-sided normal quantile of ``confidence`` (1.959964 for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, count: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of ``successes`` out of ``count``.

    ``count == 0`` gives [0, 1] (nothing was measured).  The bounds are exactly 0 and 1 at
    0 and ``count`` successes (the formula gives that up to rounding; it is made exact).
    """
    successes, count = int(successes), int(count)
    if count < 0 or not 0 <= successes <= count:
        raise ValueError(f"need 0 <= successes <= count, got {successes} of {count}")
    if count == 0:
        return Interval(0, 0, 0.0, 1.0, confidence)
    z = z_value(confidence)
    p = successes / count
    z2n = z * z / count
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / count + z2n / (4 * count))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == count else min(1.0, centre + half)
    return Interval(successes, count, low, high, confidence)


def too_small(interval: Interval, half_width: float = TOO_SMALL_HALF_WIDTH) -> bool:
    """Whether a held-out set is too small to measure anything: its interval is wider than
    ± ``half_width``.

    This uses the interval actually observed, so it depends on the figure too: 30 images all
    right give 88.6–100% (±5.7, a real statement: at least 88.6%), 24 images at 87.5% give
    69.0–95.7% (±13: too small).  :func:`images_needed` gives the size that is always enough.
    """
    return interval.half_width > half_width


def images_needed(half_width: float = TOO_SMALL_HALF_WIDTH, confidence: float = 0.95) -> int:
    """Images that keep the interval within ± ``half_width`` whatever the figure (the
    worst case p = 0.5): 93 for ±10 points at 95%."""
    if not 0.0 < half_width < 0.5:
        raise ValueError(f"half_width must be between 0 and 0.5, not {half_width}")
    n = 1
    while wilson(n // 2, n, confidence).half_width > half_width:
        n += 1
    return n


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_interval(interval: Interval) -> str:
    """``90.2–98.4%`` (an en dash, one decimal)."""
    return f"{100 * interval.low:.1f}–{100 * interval.high:.1f}%"


def format_ci(successes: int, count: int, unit: str = "images",
              confidence: float = 0.95) -> str:
    """What goes in the parentheses after a figure: ``95% CI 90.2–98.4%, 100 images``, and
    ``: too few to measure, ±13 points`` after the count when :func:`too_small` says so."""
    if count == 0:
        return f"0 {unit}"
    iv = wilson(successes, count, confidence)
    tail = f"{count} {unit}"
    if too_small(iv):
        tail += f": too few to measure, ±{100 * iv.half_width:.0f} points"
    return f"{round(100 * confidence)}% CI {format_interval(iv)}, {tail}"


def format_proportion(name: str, successes: int, count: int, unit: str = "images",
                      confidence: float = 0.95) -> str:
    """``top-1 96.0% (95% CI 90.2–98.4%, 100 images)``; a set too small to measure says so:
    ``top-1 87.5% (95% CI 69.0–95.7%, 24 images: too few to measure, ±13 points)``."""
    if count == 0:
        return f"{name} n/a (0 {unit})"
    return (f"{name} {_pct(successes / count)} "
            f"({format_ci(successes, count, unit, confidence)})")


def format_short(successes: int, count: int) -> str:
    """The per-epoch line's form: ``96.0% [90.2–98.4]``."""
    iv = wilson(successes, count)
    return f"{_pct(iv.estimate)} [{100 * iv.low:.1f}–{100 * iv.high:.1f}]"


# ---------------------------------------------------------------------- epochs
def mcnemar_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: images only the first
    model gets right, and images only the second gets right (1.0 when none differ)."""
    b, c = int(only_first), int(only_second)
    if b < 0 or c < 0:
        raise ValueError("discordant counts cannot be negative")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (n may be thousands).
    log_half_n = -n * math.log(2)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                        + log_half_n) for i in range(k + 1))
    return min(1.0, 2 * tail)


def within_interval(best_correct: int, other_correct: int, count: int,
                    confidence: float = 0.95) -> bool:
    """The unpaired fallback: the other epoch's top-1 lies inside the best's interval."""
    iv = wilson(best_correct, count, confidence)
    return iv.low <= other_correct / count <= iv.high if count else True


#: Epochs tied with the best that a sentence names one by one; more are counted.
SHOWN_TIES = 5


@dataclass(frozen=True)
class EpochComparison:
    """How the other epochs compare with the best one."""

    best_epoch: int
    best: Interval
    tied: list[int]  #: epochs within noise of the best (best excluded), in epoch order
    p_values: dict[int, float]  #: McNemar p per epoch (empty for the unpaired fallback)
    paired: bool
    others: int = 0  #: epochs compared with the best

    def sentence(self, unit: str = "images") -> str:
        """What chose ``best.pth``, for the run's end and ``results.json``'s
        ``selected_by``: ``validation top-1 96.0% (95% CI 90.2–98.4%, 100 images); within
        noise of epochs 3, 4 (McNemar p >= 0.05 on the same images): the choice among them
        is chance`` (``unit``: what was counted, e.g. ``images in cls_val.txt``)."""
        head = (f"validation top-1 {_pct(self.best.estimate)} "
                f"({format_ci(self.best.successes, self.best.count, unit)})")
        if not self.others:
            return head + "; the only epoch"
        how = ("McNemar p >= 0.05 on the same images" if self.paired
               else "inside its 95% interval")
        if not self.tied:
            return head + "; better than every other epoch beyond noise"
        if len(self.tied) > SHOWN_TIES:  # a long run: how many, and over which span
            shown = f"{len(self.tied)} other epochs, from {self.tied[0]} to {self.tied[-1]}"
        else:
            shown = (f"epoch{'s' if len(self.tied) > 1 else ''} "
                     + ", ".join(str(e) for e in self.tied))
        return head + f"; within noise of {shown} ({how}): the choice among them is chance"


def epochs_within_noise(correct: Sequence[Sequence[bool]] | None = None, *,
                        epochs: Sequence[int] | None = None, best: int | None = None,
                        counts: Sequence[int] | None = None, images: int | None = None,
                        alpha: float = ALPHA) -> EpochComparison:
    """Which epochs are within noise of the best.

    Paired (preferred): ``correct[i]`` is one bool per validation image (same images, same
    order, every epoch) for epoch ``epochs[i]``.  Unpaired fallback: ``counts[i]`` images
    right out of ``images`` per epoch.  ``epochs`` defaults to 1, 2, ...; ``best`` (an
    epoch number) defaults to the first epoch with the most right, as ``best.pth`` picks it.
    """
    if correct is not None:
        rows = [list(map(bool, r)) for r in correct]
        if not rows:
            raise ValueError("no epochs to compare")
        n = len(rows[0])
        if any(len(r) != n for r in rows):
            raise ValueError("every epoch must be scored on the same images")
        right = [sum(r) for r in rows]
    else:
        if counts is None or images is None:
            raise ValueError("give per-image correctness, or counts and images")
        right, n, rows = [int(c) for c in counts], int(images), None
        if not right:
            raise ValueError("no epochs to compare")
    epochs = list(epochs) if epochs is not None else list(range(1, len(right) + 1))
    if len(epochs) != len(right):
        raise ValueError("one epoch number per epoch scored")
    b_index = epochs.index(best) if best is not None else max(range(len(right)),
                                                              key=lambda i: (right[i], -i))
    tied, p_values = [], {}
    for i, epoch in enumerate(epochs):
        if i == b_index:
            continue
        if rows is not None:
            only_best = sum(a and not o for a, o in zip(rows[b_index], rows[i]))
            only_other = sum(o and not a for a, o in zip(rows[b_index], rows[i]))
            p_values[epoch] = mcnemar_p(only_best, only_other)
            if p_values[epoch] >= alpha:
                tied.append(epoch)
        elif within_interval(right[b_index], right[i], n):
            tied.append(epoch)
    return EpochComparison(epochs[b_index], wilson(right[b_index], n), tied, p_values,
                           rows is not None, len(epochs) - 1)
