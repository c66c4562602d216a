"""The training loop behind ``train.py``: phases, steps, per-epoch evaluation, checkpoints.

A run is one or two phases: an optional *freeze* phase that trains only the head on top of
a frozen (pretrained) backbone, then the *unfreeze* phase that trains everything.  Each
phase has its own batch size, so its own optimizer and learning-rate schedule (warm-up then
cosine or step, stepped every iteration).  Every epoch ends with an evaluation on the
validation set (the same code ``eval.py`` runs), a row in ``metrics.csv`` and checkpoints;
``best.pth`` is the best validation epoch.  The test set is scored once, at the end, with
``best.pth``'s weights: that is the run's reported figure (``results.json``).  Nothing is
ever chosen on the test set.

Everything random is re-seeded from ``(seed, epoch)`` at the start of each epoch, so a run
resumed from ``last.pth`` replays exactly the epochs it would have run.  A ``--time-budget``
run's last phase follows :mod:`utils.train.budget`; :mod:`utils.train.prepare` sets runs up.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from utils import distributed
from utils.cli import UserError, warn
from utils.data.augment import BatchAugment
from utils.data.batches import Loading, epoch_seed, make_batches
from utils.data.lists import annotation_path
from utils.distributed import Dist
from utils.evaluation.outputs import summary, write_evaluation
from utils.evaluation.report import Report
from utils.evaluation.review import add_label_review, class_examples
from utils.evaluation.scoring import EvalResult, evaluate
from utils.fileio import write_json, writing
from utils.model.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from utils.model.execution import Execution
from utils.model.spec import ModelSpec
from utils.settings import to_dict
from utils.train.budget import StepBudget
from utils.train.clock import RunClock, duration, print_eta
from utils.train.confidence import RunConfidence
from utils.train.config import TrainConfig
from utils.train.margins import MarginAccumulator, write_label_issues
from utils.train.optim import make_optimizer, make_scheduler, scaled_lr
from utils.train.run_log import RunLog, epoch_line, val_columns
from utils.train.state import TrainState, say_what_was_kept
from utils.train.steps import (SHORT_EPOCH_STEPS, Phase, plan_phases, recalibrate_batchnorm,
                               train_step)

LOG_EVERY = 25  # steps between host syncs for the progress bar


@dataclass
class _PhaseRun:
    """What one phase trains with: the (wrapped) model, its batches and optimisation."""

    phase: Phase
    model: torch.nn.Module
    batches: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler


@dataclass
class TrainingRun:
    """Everything a run trains with, built and checked (:func:`utils.train.prepare.start_training`).

    Attributes:
        cfg: the run's settings, every automatic choice resolved.
        spec: the model's description, written into every checkpoint.
        model: the network, on the execution's device, weights already in place.
        execution: device, normalisation, precision and memory format.
        loading: how this process makes its batches.
        train_samples: the training annotation's ``(class_id, path)`` lines.
        val_batches: the per-epoch validation batches; ``None`` without a validation set
            (``best.pth`` is then simply the last epoch).
        test_samples: the test annotation's lines, scored once at the end (may be empty).
        state: where the run stands (a fresh one, or restored for ``--resume``).
        run_dir: the run folder (already claimed; only the main process writes to it).
        dist: this process's place in a ``torchrun`` job.
        class_weights: per-class loss weights (``--class-weights auto``), or ``None``.
        plan: the run's plan as printed, for its report.
        budget: ``--time-budget``'s steps (:mod:`utils.train.budget`), or ``None``.
        weights_note: why the run starts from scratch when ImageNet weights were wanted.
    """

    cfg: TrainConfig
    spec: ModelSpec
    model: torch.nn.Module
    execution: Execution
    loading: Loading
    train_samples: list[tuple[int, str]]
    val_batches: object | None
    test_samples: list[tuple[int, str]]
    state: TrainState
    run_dir: Path
    dist: Dist = Dist()
    class_weights: torch.Tensor | None = None
    plan: str | None = None
    budget: StepBudget | None = None
    weights_note: str | None = None


class Trainer:
    """Trains a prepared run to its last epoch, then scores the test set once."""

    def __init__(self, run: TrainingRun):
        self.cfg, self.spec, self.model, self.execution = (run.cfg, run.spec, run.model,
                                                           run.execution)
        self.loading, self.train_samples, self.val_batches = (run.loading, run.train_samples,
                                                              run.val_batches)
        self.test_samples, self.class_weights = run.test_samples, run.class_weights
        self.state, self.run_dir, self.dist = run.state, Path(run.run_dir), run.dist
        self.plan, self.budget = run.plan, run.budget
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.phases = plan_phases(self.cfg)
        self.augment = BatchAugment(self.spec.input_shape, self.spec.small_input,
                                    self.cfg.augment, self.cfg.cutout, self.cfg.crop_scale)
        self.clock = RunClock(self.cfg.epochs - self.state.epoch, max(
            0, self.phases[-1].start - self.state.epoch), not (run.budget and run.budget.clocked))
        self.confidence = RunConfidence(run)
        # Suspected label errors, from every training step's logits (label_issues.csv).
        self.margins = MarginAccumulator(len(self.train_samples), self.spec.num_classes,
                                         self.execution.device)
        if self.state.margins is not None and self.dist.is_main:  # the others add their own
            try:
                self.margins.load_state_dict(self.state.margins)
            except ValueError as exc:
                raise UserError(f"cannot resume: {exc}") from None

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict | None:
        """Train every remaining epoch, then score the test set once with the best epoch's
        weights; returns the run's results (``results.json``)."""
        cfg, current, stopped = self.cfg, None, None
        log = RunLog(self.run_dir, self.state.epoch) if self.dist.is_main else None
        started = time.perf_counter()
        try:
            while self.state.epoch < cfg.epochs:  # a --time-budget moves the end as it goes
                epoch = self.state.epoch
                phase = next(p for p in self.phases if p.start <= epoch < p.end)
                if current is None or current.phase.name != phase.name:
                    current = self._start_phase(phase)
                seed = epoch_seed(cfg.seed, epoch, self.dist.rank)
                torch.manual_seed(seed)
                self.augment.seed(seed, self.execution.device)
                current.batches.set_epoch(epoch)
                t0 = time.perf_counter()
                train = self._train_epoch(current, epoch)
                if len(current.batches) <= SHORT_EPOCH_STEPS:
                    recalibrate_batchnorm(self.model, current.batches, self.augment,
                                          self.execution, self.dist)
                seconds = time.perf_counter() - t0
                val = None if self.val_batches is None else evaluate(
                    self.model, self.val_batches, self.execution, self.spec.num_classes,
                    reduce=self.dist.all_reduce, keep=self.confidence.keep)
                # Before the checkpoints: they record the epochs the budget now plans.
                stopped = self._budget_epoch_end(current, epoch + 1, seconds,
                                                 time.perf_counter() - t0)
                self._end_epoch(epoch + 1, phase, val)
                self.confidence.epoch_done(epoch + 1, val)
                margins = self.margins.merged(self.dist.all_reduce)  # every process takes part
                record = {"epoch": epoch + 1, "phase": phase.name,
                          "lr": current.optimizer.param_groups[0]["lr"], **train,
                          **val_columns(val), "seconds": seconds}
                if self.dist.is_main:
                    # The row goes first: a resume drops rows past its checkpoint's epoch.
                    log.log_epoch(record, best_epoch=self.state.best_epoch)
                    self._save_checkpoints(val, current, margins)
                    tqdm.write(epoch_line(record, val, cfg.epochs, self.state.best_epoch))
                self.clock.epoch_done()
                stopped = stopped or self._early_stop()
                if stopped:
                    break
            results = self._final_test(log, time.perf_counter() - started, stopped)
        except KeyboardInterrupt:
            if self.dist.is_main:
                say_what_was_kept(self.run_dir, self.state, self.cfg.epochs)
            raise
        finally:
            if log is not None:
                log.close()
            distributed.cleanup(self.dist)
        return results

    def _end_epoch(self, epoch: int, phase: Phase, val: EvalResult | None) -> None:
        """Advance the state; a new best (every epoch, without validation) keeps its weights."""
        state = self.state
        state.epoch, state.phase = epoch, phase.name
        if val is None or state.improves(val.top1):
            state.best_epoch = epoch
            state.best_top1 = val.top1 if val is not None else state.best_top1
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _early_stop(self) -> dict | None:
        """Whether ``--patience`` epochs have passed without a better validation score."""
        state, patience = self.state, self.cfg.patience
        if not patience or self.val_batches is None or state.epoch >= self.cfg.epochs \
                or state.epoch - state.best_epoch < patience:
            return None
        if self.dist.is_main:
            print(f"early stop after epoch {state.epoch} of {self.cfg.epochs}: validation "
                  f"top-1 has not improved for {patience} epochs (best: epoch "
                  f"{state.best_epoch}, {state.best_top1:.4f})", flush=True)
        return {"epoch": state.epoch, "patience": patience}

    def _budget_epoch_end(self, run: _PhaseRun, epoch: int, train_seconds: float,
                          epoch_seconds: float) -> dict | None:
        """Re-fit a --time-budget run's steps (its epochs follow); what stopped it, if done."""
        if self.budget is None:
            return None
        steps = len(run.batches)
        self.budget.epoch_done(train_seconds, epoch_seconds, steps)
        if not self.budget.done():
            self.cfg.epochs = self.budget.epochs(steps, run.phase.start, self.cfg.epochs)
            self.phases, self.clock.epochs = plan_phases(self.cfg), self.cfg.epochs
            return None
        self.cfg.epochs = epoch
        return {"epoch": epoch, **self.budget.summary()}

    def _final_test(self, log: RunLog | None, seconds: float,
                    stopped: dict | None) -> dict | None:
        """Calibrate ``best.pth``'s weights on validation (:class:`RunConfidence`), score
        them on the test set once; write ``results.json`` and the run's ``report.html``."""
        state, cfg = self.state, self.cfg
        rows = log.finish() if log is not None else []
        selected = self.confidence.selection(state.best_epoch, state.epoch, rows)
        results = {"run": str(self.run_dir), "epochs": state.epoch, "seconds": seconds,
                   "checkpoint": "best.pth", "best_epoch": state.best_epoch,
                   "selected_by": selected, "stopped_early": stopped, "test": None}
        best = self._best_weights()
        if best is None:  # a resumed run whose best.pth is gone: say so, use the last
            warn(f"{self.run_dir / 'best.pth'} is missing: the test set is scored with the last "
                 "epoch's weights instead")
            results["checkpoint"] = "last.pth"
        else:
            self.model.load_state_dict(best)
        self.confidence.calibrate(self.model, write=self.dist.is_main)
        test = None
        if self.test_samples:
            batches = make_batches(self.test_samples, self.spec.geometry, cfg.eval_batch_size,
                                   train=False, source=cfg.test_annotation, loading=self.loading)
            test = self.confidence.evaluate(self.model, batches)
            results["test"] = {"annotation": cfg.test_annotation,
                               **summary(test, self.spec.classes, self.confidence.temperature)}
        margins = self.margins.merged(self.dist.all_reduce)  # every process takes part
        if not self.dist.is_main:
            return results
        results.update(self.confidence.results(test, rows))
        write_json(self.run_dir / "results.json", results)
        with writing(f"the report in {self.run_dir}",
                     then=f"the checkpoints and results.json are complete (python eval.py "
                          f"--model {self.run_dir / 'best.pth'} writes the report elsewhere)"):
            self._write_report(selected, test, rows, margins)
        print(f"done in {seconds:.1f}s: best.pth is epoch {state.best_epoch}, {selected}")
        if test is not None:
            log.log_test(results["test"], state.best_epoch)
        for line in self.confidence.lines(test, rows):
            print(line)
        print(f"report: {self.run_dir / 'report.html'} (open it in a browser: curves, "
              "confusion matrix, the worst errors and where the model looked)")
        return results

    def _write_report(self, selected: str, test: EvalResult | None, rows: list,
                      margins: MarginAccumulator) -> None:
        """``label_issues.csv`` and ``report.html``: what next and the held-out figures first,
        then the plan and settings, the curves, the test figures and errors, the suspected
        label errors to review."""
        classes, base = self.spec.classes, Path(self.cfg.train_annotation).parent
        suspects = margins.ranking(self.train_samples, classes)
        write_label_issues(self.run_dir / "label_issues.csv", suspects, base)
        page = Report(self.run_dir / "report.html", f"Training run {self.run_dir.name}",
                      f"best.pth: epoch {self.state.best_epoch}, {selected}")
        page.add_settings(to_dict(self.cfg), plan=self.plan)
        page.add_images("Curves", [self.run_dir / "loss.png", self.run_dir / "accuracy.png"])
        if test is not None:
            write_evaluation(page, test, self.test_samples, classes, self.spec.geometry,
                             self.run_dir, model=self.model, execution=self.execution,
                             temperature=self.confidence.temperature,
                             heading=f"Test results ({self.cfg.test_annotation}, best.pth)")
        self.confidence.add_to_report(page, test, rows)
        examples = class_examples(self.train_samples, classes, margins.scores().tolist())
        add_label_review(page, suspects, classes, examples,
                         lambda path: annotation_path(path, os.path.abspath(base)),
                         self.state.epoch)
        page.write()

    def _best_weights(self) -> dict[str, torch.Tensor] | None:
        """The best epoch's weights: kept in memory, or (a resumed run) read from best.pth;
        ``None`` when neither has them."""
        if self.best_weights is not None:
            return self.best_weights
        if not (self.run_dir / "best.pth").is_file():
            return None
        return load_checkpoint(self.run_dir / "best.pth")["model"]

    def _start_phase(self, phase: Phase) -> _PhaseRun:
        """Freeze or unfreeze, then build this phase's data, optimizer and schedule."""
        cfg = self.cfg
        if phase.name == "freeze":
            self.model.freeze_backbone()
        else:
            self.model.unfreeze_backbone()
        batches = make_batches(self.train_samples, self.spec.geometry, phase.batch_size,
                               train=True, source=cfg.train_annotation, loading=self.loading)
        steps = len(batches)
        lr = scaled_lr(cfg.lr, phase.batch_size * self.dist.world_size, cfg.optimizer)
        optimizer = make_optimizer(self.model, cfg.optimizer, lr, weight_decay=cfg.weight_decay,
                                   momentum=cfg.momentum, device=self.execution.device)
        epochs = phase.end - phase.start
        if self.budget is not None and phase.name == self.phases[-1].name:
            scheduler = self.budget.scheduler(optimizer, steps, epochs, cfg)
        else:
            scheduler = make_scheduler(optimizer, cfg.schedule, epochs * steps,
                                       round(cfg.warmup_epochs * steps),
                                       cfg.step_epochs * steps, cfg.step_gamma)
        scaler = torch.amp.GradScaler(self.execution.device.type,
                                      enabled=self.execution.amp_dtype == torch.float16)
        if self.state.phase == phase.name and self.state.epoch < phase.end:
            optimizer.load_state_dict(self.state.optimizer)
            scheduler.load_state_dict(self.state.scheduler)
            if self.state.scaler is not None:
                scaler.load_state_dict(self.state.scaler)
        model = self.model
        if self.dist.enabled:  # re-wrapped per phase: DDP only syncs what was trainable at wrap
            device = self.execution.device
            model = DistributedDataParallel(model, device_ids=[device] if
                                            device.type == "cuda" else None)
        if cfg.compile:
            model = torch.compile(model)
        return _PhaseRun(phase, model, batches, optimizer, scheduler, scaler)

    def _train_epoch(self, run: _PhaseRun, epoch: int) -> dict:
        cfg, device = self.cfg, self.execution.device
        run.model.train()
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, correct
        count = 0  # known on the host: counting it on the device would sync every step
        steps, phase = len(run.batches), f" {run.phase.name}" if len(self.phases) > 1 else ""
        bar = tqdm(run.batches, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}{phase}",
                   disable=None if self.dist.is_main else True,  # None: terminals only
                   dynamic_ncols=True, leave=False)
        t0 = time.perf_counter()
        for step, (images, labels, lines) in enumerate(bar, 1):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            loss, logits = train_step(run.model, images, labels, self.augment, run.optimizer,
                                      run.scaler, self.execution, cfg.label_smoothing,
                                      self.class_weights)
            run.scheduler.step()
            self.margins.update(logits, labels, lines)
            count += len(labels)
            sums += torch.stack([loss.detach().double() * len(labels),
                                 (logits.argmax(1) == labels).sum().double()])
            self.clock.start(step / steps)
            if self.clock.announce(step / steps) and self.dist.is_main:
                print_eta(self.clock.eta(step / steps), cfg.epochs,
                          self.execution.device.type == "cpu")
            if step % LOG_EVERY == 0 or step == steps:
                loss_sum, correct = sums.tolist()  # the only host sync
                if not math.isfinite(loss_sum):
                    raise UserError(f"the loss became {loss_sum} at epoch {epoch + 1}: "
                                    "lower --lr or use --amp off")
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}",
                                lr=f"{run.optimizer.param_groups[0]['lr']:.4g}",
                                img_s=f"{count * self.dist.world_size / elapsed:.0f}",
                                run_eta=duration(self.clock.eta(step / steps)))
            if self.budget is not None and self.budget.done():
                break  # mid-epoch: the steps that fit are done
        elapsed = time.perf_counter() - t0
        totals = self.dist.all_reduce(torch.cat([sums, sums.new_tensor([count])]))
        loss_sum, correct, count = totals.tolist()
        return {"train_loss": loss_sum / max(count, 1), "train_top1": correct / max(count, 1),
                "img_per_s": count / elapsed}

    # ---------------------------------------------------------------- checkpoints
    def _save_checkpoints(self, val: EvalResult | None, run: _PhaseRun,
                          margins: MarginAccumulator) -> None:
        """Periodic copy, then ``best.pth`` on a new best top-1, then ``last.pth``.

        ``last.pth`` goes last: a run killed between the writes resumes from the previous
        epoch and writes the others again, so none is ever skipped.  The margin tallies go
        into the checkpoints a run resumes from, not into ``best.pth`` (the model users ship).
        """
        state = self.state
        state.optimizer, state.scheduler = run.optimizer.state_dict(), run.scheduler.state_dict()
        state.scaler, state.margins = run.scaler.state_dict(), margins.state_dict()
        scores = {} if val is None else {"val_top1": val.top1, "val_topk": val.topk}
        ckpt = make_checkpoint(self.spec, self.model.state_dict(), **state.to_dict(), **scores,
                               config=to_dict(self.cfg))
        if self.cfg.save_period and state.epoch % self.cfg.save_period == 0:
            save_checkpoint(ckpt, self.run_dir / f"epoch_{state.epoch:03d}.pth")
        if state.best_epoch == state.epoch:
            save_checkpoint({**ckpt, "margins": None}, self.run_dir / "best.pth")
        save_checkpoint(ckpt, self.run_dir / "last.pth")
