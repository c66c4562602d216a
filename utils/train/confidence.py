"""What a finished run can say about its own figures, and what it stores for honest answers.

:class:`RunConfidence` follows a :class:`~utils.train.loop.Trainer`:

* every epoch it keeps which validation images the model got right, so that the end can
  say whether ``best.pth``'s epoch is better than the others beyond noise (exact McNemar
  test on the same images; :func:`~utils.evaluation.intervals.epochs_within_noise`);
* at the end, with ``best.pth``'s weights, it fits the typicality statistics on the training
  images (:mod:`utils.evaluation.typicality`), scores the validation set, fits the
  temperature on it (:func:`~utils.evaluation.calibration.fit_temperature`), chooses the
  "unknown" threshold that keeps :data:`KEEP` of the right validation answers, and writes
  all three into ``best.pth`` (earlier checkpoints keep none);
* it scores the test set (typicality too), and gives the final lines, ``results.json``'s
  entries and ``report.html``'s sections: every held-out figure with its interval, the
  calibration, the "unknown" threshold, and what to do next (:mod:`utils.evaluation.advice`).

Under ``torchrun`` the per-image outputs are sharded, so none of this runs: the run says so.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import torch

from utils.data.batches import make_batches
from utils.evaluation import advice as advice_rules
from utils.evaluation.calibration import fit_temperature
from utils.evaluation.confidence_report import (HeldOut, add_advice, add_calibration,
                                                add_held_out, add_unknown,
                                                calibration_figures, describe_calibration)
from utils.evaluation.intervals import EpochComparison, epochs_within_noise, wilson
from utils.evaluation.mistakes import most_confused
from utils.evaluation.ood import KEEP, choose_threshold
from utils.evaluation.report import Report
from utils.evaluation.scoring import EvalResult, evaluate, evaluate_logits
from utils.evaluation.typicality import TypicalNetwork, fit, fit_sample, scored, to_state
from utils.model.checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from utils.train.loop import TrainingRun


class RunConfidence:
    """The confidence side of one training run (see the module docstring)."""

    def __init__(self, run: "TrainingRun"):
        self.cfg, self.spec, self.execution = run.cfg, run.spec, run.execution
        self.train_samples, self.val_batches = run.train_samples, run.val_batches
        self.loading, self.run_dir, self.dist = run.loading, run.run_dir, run.dist
        self.weights_note, self.budget = run.weights_note, run.budget
        self.correct: dict[int, torch.Tensor] = {}  #: per epoch: validation images right
        self.val: EvalResult | None = None  #: best.pth on the validation set
        self.fit = None  #: the temperature fit
        self.network = None  #: the scoring network (typicality), once fitted
        self.test_kept: float | None = None  #: right test answers the threshold keeps
        self.comparison: EpochComparison | None = None
        self.skipped: str | None = None  #: why nothing was calibrated

    @property
    def keep(self) -> bool:
        """Whether validation is kept per image (one process holds every image)."""
        return not self.dist.enabled

    @property
    def temperature(self) -> float | None:
        return self.spec.temperature

    def epoch_done(self, epoch: int, val: EvalResult | None) -> None:
        """Remember which validation images ``epoch`` got right."""
        correct = None if val is None else val.correct()
        if correct is not None:
            self.correct[epoch] = correct

    def selection(self, best_epoch: int, epochs: int, rows: Sequence[dict]) -> str:
        """What chose ``best.pth``, with its interval and whether other epochs are within
        noise of it (``rows``: ``metrics.csv``'s, for epochs before a resume)."""
        if self.val_batches is None:
            return "the last epoch (no validation set to choose another)"
        if not self.correct:  # under torchrun: no per-image record
            return "the best validation top-1"
        images = len(next(iter(self.correct.values())))
        if sorted(self.correct) == list(range(1, epochs + 1)):
            numbers = list(range(1, epochs + 1))
            self.comparison = epochs_within_noise(
                [self.correct[e].tolist() for e in numbers], epochs=numbers, best=best_epoch)
        else:  # resumed: earlier epochs only left their top-1 in metrics.csv
            top1 = {int(r["epoch"]): float(r["val_top1"]) for r in rows
                    if r.get("val_top1") not in (None, "")}
            numbers = sorted(top1)
            if best_epoch not in top1:  # its row was not kept: nothing to compare against
                return "the best validation top-1"
            self.comparison = epochs_within_noise(
                counts=[round(top1[e] * images) for e in numbers], images=images,
                epochs=numbers, best=best_epoch)
        return self.comparison.sentence(f"images in {self.cfg.val_annotation}")

    # ---------------------------------------------------------------- the end of a run
    def calibrate(self, model: torch.nn.Module, write: bool) -> None:
        """With ``best.pth``'s weights in ``model``: fit the typicality statistics, the
        temperature and the threshold; ``write`` them into ``best.pth``."""
        if self.val_batches is None or self.dist.enabled:
            self.skipped = ("no validation set" if self.val_batches is None
                            else "torchrun shards the per-image outputs")
            return
        was_training = model.training
        model.eval()
        network = self.execution.for_inference(model)
        fit_batches = make_batches(fit_sample(self.train_samples), self.spec.geometry,
                                   self.cfg.eval_batch_size, train=False,
                                   source=self.cfg.train_annotation,
                                   loading=dataclasses.replace(self.loading, cache_dir=None))
        typicality = fit(network, fit_batches, self.execution, self.spec.input_shape)
        self.network = self.execution.prepare(TypicalNetwork(network, typicality)).eval()
        self.val, scores = self._scored(self.val_batches)
        model.train(was_training)
        self.fit = fit_temperature(self.val.logits.numpy(), self.val.labels.numpy())
        right = (self.val.logits.argmax(1) == self.val.labels).numpy()
        rejection = choose_threshold(scores[right], KEEP, "typicality")
        self.spec = dataclasses.replace(self.spec, temperature=self.fit.temperature,
                                        rejection=rejection)
        best = self.run_dir / "best.pth"
        if write and best.is_file():
            ckpt = load_checkpoint(best)
            ckpt.update(self.spec.to_dict(), typicality=to_state(typicality))
            save_checkpoint(ckpt, best)

    def evaluate(self, model: torch.nn.Module, batches) -> EvalResult:
        """The test set scored once with ``best.pth`` (with typicality, once fitted: the
        share of right answers the threshold keeps)."""
        if self.network is None:
            return evaluate(model, batches, self.execution, self.spec.num_classes,
                            reduce=self.dist.all_reduce, keep=self.keep)
        result, scores = self._scored(batches)
        right = (result.logits.argmax(1) == result.labels).numpy()
        if self.spec.rejection is not None and right.any():
            self.test_kept = float((scores[right] >= self.spec.rejection.value).mean())
        return result

    def _scored(self, batches) -> tuple[EvalResult, "torch.Tensor"]:
        """An evaluation kept per image, and each image's typicality in the same order."""
        typicality = []

        def logits_of(images):
            logits, scores = scored(self.network, images, self.execution)
            typicality.append(scores.cpu())
            return logits

        result = evaluate_logits(logits_of, batches, self.spec.num_classes,
                                 self.execution.device, keep=True)
        return result, torch.cat(typicality).double().numpy()

    # ---------------------------------------------------------------- what it says
    def held_out(self, test: EvalResult | None) -> list[HeldOut]:
        """Every held-out top-1 of ``best.pth``, test first."""
        out = []
        if test is not None:
            out.append(HeldOut("test", self.cfg.test_annotation,
                               wilson(test.top1_correct, test.count),
                               "scored once with best.pth"))
        if self.val is not None:
            out.append(HeldOut("validation", self.cfg.val_annotation,
                               wilson(self.val.top1_correct, self.val.count),
                               "chose the epoch"))
        return out

    def advice(self, test: EvalResult | None, rows: Sequence[dict]) -> list[advice_rules.Advice]:
        """What to do next, read from this run's numbers."""
        measured = test if test is not None else self.val
        counts = [0] * self.spec.num_classes
        for label, _ in self.train_samples:
            counts[label] += 1
        classes = []
        if measured is not None:
            report = measured.report
            classes = [advice_rules.ClassNumbers(name, counts[i], report.correct[i],
                                                 report.support[i])
                       for i, name in enumerate(self.spec.classes)]
        confused = [] if measured is None else [
            (self.spec.classes[c.true], self.spec.classes[c.predicted], c.count)
            for c in most_confused(measured.matrix, limit=10)]

        def curve(key):
            return [float(r[key]) for r in rows if r.get(key) not in (None, "")]

        numbers = advice_rules.RunNumbers(
            train_acc=curve("train_top1"), val_acc=curve("val_top1"),
            val=None if self.val is None else (self.val.top1_correct, self.val.count),
            test=None if test is None else (test.top1_correct, test.count),
            classes=classes, held_out="test" if test is not None else "validation",
            confused=confused, class_weights=self.cfg.class_weights == "auto",
            epochs=self.comparison, time_budget=self.cfg.time_budget
            if self.budget is not None and self.budget.time_limited else None)
        return advice_rules.advise(numbers)

    def results(self, test: EvalResult | None, rows: Sequence[dict]) -> dict:
        """``results.json``'s entries: validation, calibration, rejection and advice."""
        out: dict = {"validation": None, "calibration": None, "rejection": None,
                     "from_scratch": self.weights_note,
                     "advice": [a.as_dict() for a in self.advice(test, rows)]}
        if self.val is not None:
            out["validation"] = {"annotation": self.cfg.val_annotation,
                                 **self.val.summary()}
        if self.fit is not None:
            out["calibration"] = self.fit.as_dict()
        if self.spec.rejection is not None:
            out["rejection"] = {**dataclasses.asdict(self.spec.rejection),
                                "kept_on_test": self.test_kept}
        if self.skipped:
            out["calibration_skipped"] = self.skipped
        return out

    def lines(self, test: EvalResult | None, rows: Sequence[dict]) -> list[str]:
        """The run's last lines: the test figures, the validation figure beside them, the
        calibration, the "unknown" threshold, and what next."""
        if test is None:
            out = [f"no test set ({self.cfg.test_annotation} is empty): nothing to report "
                   "beyond validation; put images in datasets/test/<class>/ for an honest "
                   "figure"]
        else:
            figures = ", ".join(f"{m.title(test.k)} {test.describe(m, short=m.key != 'top1')}"
                                for m in test.shown)
            out = [f"test ({test.count} images in {self.cfg.test_annotation}, scored once "
                   f"with best.pth): {figures}; {self.run_dir / 'results.json'}"]
        out += [h.line() for h in self.held_out(None)]  # the validation figure beside it
        if self.fit is not None:
            where = "test" if test is not None else "validation"
            figures = calibration_figures(test if test is not None else self.val,
                                          self.temperature)
            out.append(f"calibration: T = {self.fit.temperature:.3g} fitted on "
                       f"{self.fit.images} validation images; {where} "
                       f"{describe_calibration(figures)}")
        elif self.skipped:
            out.append(f"calibration: none ({self.skipped}): probabilities are the plain "
                       "softmax and predict.py --reject auto is refused")
        if self.spec.rejection is not None:
            kept = (f"; on the test set it keeps {100 * self.test_kept:.1f}% of them"
                    if self.test_kept is not None else "")
            out.append(f"unknown: predict.py --reject auto answers 'unknown' for "
                       f"{self.spec.rejection.describe()}{kept}")
        if self.weights_note:
            out.append(self.weights_note)
        advice = self.advice(test, rows)
        if advice:
            out.append("what next:")
            out += [f"  - {a.text}" for a in advice]
        return out

    def add_to_report(self, page: Report, test: EvalResult | None, rows: Sequence[dict]) -> None:
        """``report.html``'s confidence sections (the calibration comes with the test's)."""
        add_held_out(page, self.held_out(test))
        lines = ([self.weights_note] if self.weights_note else []) + \
            [a.text for a in self.advice(test, rows)]
        add_advice(page, lines)
        if test is None and self.val is not None:  # else it comes with the test's sections
            add_calibration(page, self.val, self.temperature, self.run_dir)
        if self.val is not None:
            add_unknown(page, self.spec.rejection, self.test_kept)
