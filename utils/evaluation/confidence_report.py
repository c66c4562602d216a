"""How far to trust a model's figures: the confidence sections of ``report.html`` and the
numbers behind them.

* :func:`calibration_figures` / :func:`add_calibration`: the expected calibration error of
  an evaluation at the model's temperature and at T = 1, and the reliability diagram
  (``reliability.png``) - ``eval.py`` and the end of every run;
* :func:`add_held_out`: every held-out figure of a run side by side, with its image count
  and 95% interval, a set too small to measure called so;
* :func:`add_advice`: "What next", at the top of a run's page;
* :func:`add_unknown`: what the "unknown" answer does (the threshold, what it keeps, and
  ``eval.py --ood``'s AUROC).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from utils.evaluation.calibration import BINS, ece, reliability_figure, softmax
from utils.evaluation.intervals import Interval, format_ci, too_small
from utils.evaluation.ood import OodReport
from utils.evaluation.plots import save_figure
from utils.evaluation.report import Report, escape, percent
from utils.evaluation.scoring import EvalResult
from utils.model.spec import Rejection

RELIABILITY_PNG = "reliability.png"


def calibration_figures(result: EvalResult, temperature: float | None) -> dict | None:
    """``ece`` at the model's temperature and ``ece_at_1`` (plain softmax) of an evaluation
    kept per image (else None), over :data:`~utils.evaluation.calibration.BINS` bins."""
    if result.logits is None or not result.count:
        return None
    logits, labels = result.logits.numpy(), result.labels.numpy()
    at_1 = ece(softmax(logits), labels)
    return {"temperature": temperature, "images": result.count, "bins": BINS,
            "ece": ece(softmax(logits, temperature), labels) if temperature else at_1,
            "ece_at_1": at_1}


def describe_calibration(figures: dict) -> str:
    """``ECE 2.1% with T = 0.42 (7.9% at T = 1), 300 images``."""
    t = figures["temperature"]
    if t is None:
        return (f"ECE {100 * figures['ece']:.1f}% on {figures['images']} images "
                "(no fitted temperature: plain softmax)")
    return (f"ECE {100 * figures['ece']:.1f}% with T = {t:.3g} "
            f"({100 * figures['ece_at_1']:.1f}% at T = 1), {figures['images']} images")


def add_calibration(page: Report, result: EvalResult, temperature: float | None,
                    out: str | os.PathLike) -> dict | None:
    """The calibration section and ``reliability.png`` in ``out``; returns the figures."""
    figures = calibration_figures(result, temperature)
    if figures is None:
        return None
    logits, labels = result.logits.numpy(), result.labels.numpy()
    series = {"T = 1": softmax(logits)}
    if temperature:
        series[f"T = {temperature:.3g} (fitted)"] = softmax(logits, temperature)
    path = Path(out) / RELIABILITY_PNG
    save_figure(reliability_figure(series, labels), path)
    text = ("<p>A calibrated model is right on 80% of the images it gives 80%: the bars "
            "(accuracy per confidence bin) then sit on the diagonal. Expected calibration "
            "error (ECE): the gap, weighted by the images in each bin. "
            f"<b>{escape(describe_calibration(figures))}</b>. Every probability shown "
            "(predict.py, errors.csv, this page) uses the fitted temperature; top-1 does "
            "not depend on it.</p>")
    page.add_section("Calibration", text + f"<figure>{page.image_tag(path, 'reliability')}"
                     "</figure>")
    return figures


@dataclass(frozen=True)
class HeldOut:
    """One held-out figure of a run: which set, how many images, what it is for."""

    name: str  #: "test", "validation"
    source: str  #: its annotation file
    top1: Interval
    role: str  #: e.g. "scored once with best.pth", "chose the epoch"

    def line(self) -> str:
        """``test (24 images in cls_test.txt, scored once with best.pth): top-1 87.5%
        (95% CI ..., 24 images: too few to measure, ±13 points)``."""
        iv = self.top1
        return (f"{self.name} ({iv.count} images in {self.source}, {self.role}): top-1 "
                f"{100 * iv.estimate:.1f}% ({format_ci(iv.successes, iv.count)})")


def add_held_out(page: Report, figures: Sequence[HeldOut]) -> None:
    """The run's held-out figures side by side (near the top of the page)."""
    rows = "".join(
        f"<tr><th>{escape(f.name)}</th><td>{escape(f.source)}</td>"
        f"<td class='num'>{f.top1.count:,}</td>"
        f"<td class='num'>{escape(percent(f.top1.estimate, 1))}</td>"
        f"<td class='num'>{100 * f.top1.low:.1f}–{100 * f.top1.high:.1f}%</td>"
        f"<td class='{'bad' if too_small(f.top1) else 'muted'}'>"
        f"{'too few to measure: ' if too_small(f.top1) else ''}"
        f"±{100 * f.top1.half_width:.0f} points</td><td class='muted'>{escape(f.role)}</td>"
        "</tr>" for f in figures)
    note = ("<p class='muted'>Top-1 of best.pth on every held-out set, with its 95% interval "
            "(Wilson). A set whose interval is wider than ±10 points is too small to measure "
            "the model; the validation set chose the epoch, so its figure flatters a little."
            "</p>")
    page.add_section("Held-out figures", note + "<table><thead><tr><th>set</th><th>file</th>"
                     "<th>images</th><th>top-1</th><th>95% CI</th><th>uncertainty</th>"
                     f"<th>role</th></tr></thead><tbody>{rows}</tbody></table>", at_top=True)


def add_advice(page: Report, lines: Sequence[str]) -> None:
    """"What next" at the very top of the page: one item per line, each with its figure."""
    items = "".join(f"<li>{escape(line)}</li>" for line in lines) or \
        "<li>Nothing stands out: no over- or under-fitting, no weak or confused class.</li>"
    page.add_section("What next", f"<ul class='advice'>{items}</ul>", at_top=True)


def add_unknown(page: Report, rejection: Rejection | None, kept_test: float | None = None,
                ood: OodReport | None = None) -> None:
    """What the "unknown" answer does: the threshold and what it keeps, and the AUROC of
    ``eval.py --ood`` when measured."""
    if rejection is None:
        text = ("<p>This model has no rejection threshold (no validation set, or trained "
                "before the 'unknown' answer): predict.py --reject auto is refused.</p>")
    else:
        text = (f"<p>predict.py --reject auto answers 'unknown' when the {escape(rejection.score)}"
                f" score is below {rejection.value:.4g}: chosen on validation to keep "
                f"{escape(percent(rejection.keep, 0))} of the right answers (kept "
                f"{escape(percent(rejection.kept_on_validation, 1))} of "
                f"{rejection.chosen_on_images}).")
        if kept_test is not None:
            text += f" On the test set it keeps {escape(percent(kept_test, 1))} of them."
        text += "</p>"
    if ood is not None:
        text += "".join(f"<p>{escape(line.strip())}</p>" for line in ood.lines())
    page.add_section("Unknown images", text)
