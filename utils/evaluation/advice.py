"""What to do next, read from a run's own numbers: a pure function from figures to lines.

>>> lines = advise(RunNumbers(train_acc=[...], val_acc=[...], val=(270, 300), ...))
>>> for a in lines: print(a.text)
over-fitting: training top-1 99.3% vs validation 84.0% (95% CI 79.4–87.7%, 300 images) at
the last epoch (a 15-point gap); more images, --augment trivialaugment or fewer --epochs

Each :class:`Advice` states the figure it rests on and keeps it in ``basis`` (for
``results.json``), so a reader can check the reasoning.  Rules, in the order printed (the
thresholds are module constants):

* **held-out sets too small** - a validation or test interval wider than ±10 points
  (:func:`intervals.too_small`): the set cannot choose epochs / measure the model; say how
  many images would.  When the test set is too small and the user's validation set is
  larger, say that the validation figure is the better-measured one.
* **best epoch within noise** - the best epoch is indistinguishable from others
  (:func:`intervals.epochs_within_noise`), when that was computed.
* **over-fitting** - training top-1 at the last epoch above validation by >= 10 points *and*
  above the validation interval's upper bound (so a small set's noise is not called a gap).
  Training top-1 is measured on augmented batches, which understates it: a real gap is if
  anything larger than reported.
* **under-fitting** - training top-1 at the last epoch below 90% and validation within 5
  points of it: the model has not learnt the training set; still rising over the last
  quarter of the epochs says "more epochs" (a longer time budget when the clock ended the
  run), flat says "a larger model / pretrained weights".
* **add photos of X** - a class whose recall is below the mean recall by >= 10 points (or
  below both 80% and the mean) and that has clearly fewer training images than the median
  class (under 80% of it, or fewer than 100): in a balanced set, no class is short of photos.
  A low-recall class with plenty of images is named too, with its most confused class:
  more of the same photos will not fix it; its labels or look-alikes might.
* **most confused pair** - the largest off-diagonal count, when it is at least 2 images and
  5% of its true class.
* **imbalance** - largest over smallest class in training >= 3x (the annotation's own rule):
  ``train.py --class-weights auto``, unless the run used it.
* **leaks** - duplicates across splits found by the import audit: the held-out figure is
  optimistic by that many images.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from utils.evaluation.intervals import (TOO_SMALL_HALF_WIDTH, EpochComparison,
                                       format_interval, images_needed, too_small, wilson)

OVERFIT_GAP = 0.10
UNDERFIT_TRAIN = 0.90
UNDERFIT_GAP = 0.05
LOW_RECALL = 0.80
LOW_RECALL_GAP = 0.10
FEW_IMAGES = 100
SHORT_OF_MEDIAN = 0.8
CONFUSED_MIN_COUNT = 2
CONFUSED_MIN_SHARE = 0.05
IMBALANCE = 3.0


@dataclass
class ClassNumbers:
    """One class: its name, training images, and its held-out recall as a count."""

    name: str
    train_images: int
    right: int  #: held-out images of this class predicted as it
    support: int  #: held-out images of this class

    @property
    def recall(self) -> float:
        return self.right / self.support if self.support else float("nan")


@dataclass
class RunNumbers:
    """What :func:`advise` reads; every field but the curves is optional.

    ``val`` / ``test`` are ``(right, images)`` for top-1 (validation at the best epoch);
    ``confused`` is ``(true name, predicted name, count)`` pairs; ``leaks`` maps a kind of
    leak (``"test images duplicating training images"``) to a count.
    """

    train_acc: Sequence[float] = ()
    val_acc: Sequence[float] = ()
    val: tuple[int, int] | None = None
    test: tuple[int, int] | None = None
    classes: Sequence[ClassNumbers] = ()
    held_out: str = "test"  #: which set ``classes`` recalls were measured on
    confused: Sequence[tuple[str, str, int]] = ()
    leaks: Mapping[str, int] = field(default_factory=dict)
    class_weights: bool = False  #: the run already weighed classes
    epochs: EpochComparison | None = None
    time_budget: float | None = None  #: minutes, when the clock ended the training


@dataclass(frozen=True)
class Advice:
    kind: str
    text: str
    basis: dict

    def as_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, **self.basis}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(right: int, n: int) -> str:
    return f"95% CI {format_interval(wilson(right, n))}, {n} images"


def advise(run: RunNumbers) -> list[Advice]:
    """The "what next" lines for ``run`` (empty when nothing stands out)."""
    out: list[Advice] = []
    out += _held_out_sizes(run)
    if run.epochs is not None and run.epochs.tied:
        e = run.epochs
        out.append(Advice("epochs_within_noise", f"best.pth is epoch {e.best_epoch}: "
                          f"{e.sentence()}",
                          {"best_epoch": e.best_epoch, "tied": list(e.tied)}))
    out += _fit(run)
    out += _classes(run)
    out += _confused(run)
    out += _imbalance(run)
    out += _leaks(run)
    return out


def _held_out_sizes(run: RunNumbers) -> list[Advice]:
    out = []
    need = images_needed(TOO_SMALL_HALF_WIDTH)
    val_iv = wilson(*run.val) if run.val and run.val[1] else None
    test_iv = wilson(*run.test) if run.test and run.test[1] else None
    if val_iv is not None and too_small(val_iv):
        out.append(Advice(
            "validation_too_small",
            f"validation set too small to choose epochs: {val_iv.count} images give "
            f"{_pct(val_iv.estimate)} ±{100 * val_iv.half_width:.0f} points "
            f"(95% CI {format_interval(val_iv)}); about {need} images keep any figure within "
            f"±{100 * TOO_SMALL_HALF_WIDTH:.0f}",
            {"images": val_iv.count, "half_width": val_iv.half_width, "needed": need}))
    if test_iv is not None and too_small(test_iv):
        text = (f"test set too small to measure the model: {test_iv.count} images give "
                f"{_pct(test_iv.estimate)} ±{100 * test_iv.half_width:.0f} points "
                f"(95% CI {format_interval(test_iv)}); about {need} images would give ±"
                f"{100 * TOO_SMALL_HALF_WIDTH:.0f}")
        if val_iv is not None and val_iv.count > test_iv.count:
            text += (f"; the validation figure, {_pct(val_iv.estimate)} "
                     f"({_ci(*run.val)}), is the better-measured one (it chose the epoch, "
                     "so it flatters a little)")
        out.append(Advice("test_too_small", text,
                          {"images": test_iv.count, "half_width": test_iv.half_width,
                           "needed": need}))
    return out


def _fit(run: RunNumbers) -> list[Advice]:
    if not run.train_acc:
        return []
    train = float(run.train_acc[-1])
    if run.val_acc and run.val is not None:
        right, n = run.val
        val = float(run.val_acc[-1])
        last_iv = wilson(round(val * n), n)
        gap = train - val
        if gap >= OVERFIT_GAP and train > last_iv.high:
            return [Advice(
                "overfitting",
                f"over-fitting: training top-1 {_pct(train)} vs validation {_pct(val)} "
                f"({_ci(round(val * n), n)}) at the last epoch (a {100 * gap:.0f}-point gap); "
                "more images, --augment trivialaugment or fewer --epochs",
                {"train_top1": train, "val_top1": val, "gap": gap})]
        if train < UNDERFIT_TRAIN and abs(gap) <= UNDERFIT_GAP:
            return [_underfit(run, train, f" and validation {_pct(val)}")]
        return []
    if train < UNDERFIT_TRAIN:
        return [_underfit(run, train, "")]
    return []


def _underfit(run: RunNumbers, train: float, also: str) -> Advice:
    curve = [float(v) for v in run.train_acc]
    quarter = max(len(curve) // 4, 1)
    rise = curve[-1] - curve[-1 - quarter] if len(curve) > quarter else 0.0
    if rise >= 0.02:
        more = ("more --epochs" if run.time_budget is None else
                f"a longer --time-budget (this run stopped at {run.time_budget:g} min)")
        hint = f"still rising ({100 * rise:+.0f} points over the last {quarter} epochs): {more}"
    else:
        hint = "flat: a larger model (--backbone, --width-mult) or --pretrained weights"
    return Advice("underfitting",
                  f"under-fitting: training top-1 only {_pct(train)}{also} at the last epoch; "
                  + hint, {"train_top1": train, "rise_last_quarter": rise})


def _classes(run: RunNumbers) -> list[Advice]:
    measured = [c for c in run.classes if c.support]
    if not measured:
        return []
    mean_recall = sum(c.recall for c in measured) / len(measured)
    median = statistics.median(c.train_images for c in run.classes)
    confused_with = {}
    for true, predicted, count in sorted(run.confused, key=lambda t: -t[2]):
        confused_with.setdefault(true, (predicted, count))
    out = []
    for c in sorted(measured, key=lambda c: c.recall):
        if not (c.recall < min(LOW_RECALL, mean_recall)
                or c.recall <= mean_recall - LOW_RECALL_GAP):
            continue
        basis = {"class": c.name, "recall": c.recall, "support": c.support,
                 "train_images": c.train_images, "median_train_images": median}
        figure = (f"recall {_pct(c.recall)} ({_ci(c.right, c.support)} on {run.held_out}, "
                  f"mean recall {_pct(mean_recall)})")
        if c.train_images < SHORT_OF_MEDIAN * median or c.train_images < FEW_IMAGES:
            out.append(Advice("add_photos",
                              f"add photos of {c.name}: {figure}, from {c.train_images} "
                              f"training images (median class {median:g})", basis))
        else:
            other = confused_with.get(c.name)
            look = f"; most often taken for {other[0]} ({other[1]})" if other else ""
            out.append(Advice("hard_class",
                              f"{c.name} is hard despite {c.train_images} training images: "
                              f"{figure}{look}; check its labels and look-alikes", basis))
    return out


def _confused(run: RunNumbers) -> list[Advice]:
    if not run.confused:
        return []
    support = {c.name: c.support for c in run.classes}
    true, predicted, count = max(run.confused, key=lambda t: t[2])
    total = support.get(true)
    if count < CONFUSED_MIN_COUNT or (total and count / total < CONFUSED_MIN_SHARE):
        return []
    share = f" ({count} of {total} {true} images, {_pct(count / total)})" if total else \
        f" ({count} images)"
    return [Advice("most_confused",
                   f"most confused: {true} taken for {predicted}{share}; see errors.csv",
                   {"true": true, "predicted": predicted, "count": count,
                    "support": total})]


def _imbalance(run: RunNumbers) -> list[Advice]:
    counts = [c for c in run.classes if c.train_images > 0]
    if len(counts) < 2:
        return []
    big = max(counts, key=lambda c: c.train_images)
    small = min(counts, key=lambda c: c.train_images)
    ratio = big.train_images / small.train_images
    if ratio < IMBALANCE:
        return []
    fix = ("the run already weighs classes (--class-weights auto); watch mean recall"
           if run.class_weights else "train.py --class-weights auto, or more photos of "
           f"{small.name}")
    return [Advice("imbalance",
                   f"class imbalance {ratio:.1f}x ({big.name} {big.train_images}, "
                   f"{small.name} {small.train_images} training images): {fix}",
                   {"ratio": ratio, "largest": big.name, "smallest": small.name})]


def _leaks(run: RunNumbers) -> list[Advice]:
    found = {kind: n for kind, n in run.leaks.items() if n}
    if not found:
        return []
    listed = "; ".join(f"{n} {kind}" for kind, n in found.items())
    return [Advice("leaks",
                   f"leaks found by the import audit: {listed} (dataset_audit.csv): held-out "
                   "figures including them are optimistic; txt_annotation.py removes them "
                   "from the held-out lists unless --keep-leaks",
                   {"leaks": dict(found)})]
