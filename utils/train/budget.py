"""``--time-budget``: the whole command's wall clock, fitted in optimizer steps.

The budget is the user's: from the moment the command started (interpreter start-up and
imports included, :func:`process_seconds`) to its exit, the final test and ``report.html``
included.  Training stops a *reserve* before the end, kept for the test and the report.
How many optimizer steps fit is estimated once the data are ready (from a measured step,
:func:`utils.train.steps.measure_speed`) and again after every epoch, from the pace the run
actually reached; the learning rate follows a schedule over those steps (warm-up, then
cosine or step decay), written as a function of the share of the steps done, so a new
estimate only stretches or compresses what is left of it.  The run stops when its steps are
done, mid-epoch if need be, so the whole budget is used and never overrun.

A run resumed from its ``last.pth`` finishes the steps its schedule had planned when it was
saved: the schedule keeps its step count in its state, and the clock is not read again.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import torch

#: Seconds the end of a run takes beyond scoring its test images (report.html with its
#: plots and Grad-CAM gallery, results.json, the interpreter's exit): measured on a 2-core
#: CPU, where the test itself took 1.7-4 s.
REPORT_SECONDS = 4.0
#: The reserve counts the test images at this many times their measured evaluation pace:
#: the probe runs on a warm network with random images, the test decodes real ones.
TEST_MARGIN = 1.5
#: The longest warm-up, as a share of the steps (``--warmup-epochs`` may ask for less).
WARMUP_SHARE = 0.05


def process_seconds() -> float:
    """Seconds since the OS started this process (Linux); elsewhere, since the first call.

    ``/proc/<pid>/stat`` gives the start time in clock ticks after boot, ``/proc/uptime``
    the time since boot: the difference counts the interpreter's start and every import.
    """
    global _FALLBACK_START
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        if _FALLBACK_START is None:
            _FALLBACK_START = time.perf_counter()
        return time.perf_counter() - _FALLBACK_START


_FALLBACK_START: float | None = None


class BudgetSchedule(torch.optim.lr_scheduler.LRScheduler):
    """The learning rate over ``total_steps``: linear warm-up, then cosine decay to zero (or
    step decay by ``gamma`` every ``step_size`` steps), stepped after every optimizer step.

    ``total_steps`` and ``warmup`` may change while it runs (:meth:`StepBudget.fit`); both
    are part of :meth:`state_dict`, so a resumed run follows the same curve.
    """

    def __init__(self, optimizer, total_steps: int, warmup: int, schedule: str = "cosine",
                 step_size: int = 1, gamma: float = 0.1):
        self.total_steps, self.warmup = max(1, total_steps), max(0, warmup)
        self.schedule, self.step_size, self.gamma = schedule, max(1, step_size), gamma
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The share of the base rate at optimizer step ``step`` (0 before the first)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "step":
            return self.gamma ** ((step - self.warmup) // self.step_size)
        progress = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    @property
    def steps_done(self) -> int:
        """Optimizer steps taken under this schedule."""
        return self.last_epoch


class StepBudget:
    """The steps of a ``--time-budget`` run that fit before its deadline.

    Args:
        seconds: the budget, counted from the start of the process.
        reserve: seconds kept after training for the final test, the report and the exit.
        warmup_steps: the warm-up asked for, in steps (at most :data:`WARMUP_SHARE` of the
            steps is used).
        agree: for a ``torchrun`` job, makes its processes agree on a step count (each
            measures its own pace, and all must stop at the same step); ``None``: one
            process, which also stops at the deadline, whatever the count.
        say: print each estimate (the main process).

    ``seconds`` infinite: no clock (a resumed run, which finishes its planned steps).
    """

    def __init__(self, seconds: float, reserve: float, warmup_steps: int,
                 agree: Callable[[int], int] | None = None, say: bool = True):
        self.seconds, self.reserve, self.warmup_steps = seconds, reserve, warmup_steps
        self.agree, self.say = agree or int, say
        self.watch_clock = agree is None
        self.most_steps: int | None = None  #: a cap (``--epochs`` given beside the budget)
        self.schedule: BudgetSchedule | None = None
        self.step_seconds = 0.0  #: training seconds per step (probe, then measured)
        self.epoch_overhead = 0.0  #: seconds an epoch costs beyond its steps
        self.fits: list[tuple[float, int]] = []  #: (process seconds, total steps) per estimate
        self._epoch_start_step = 0

    @property
    def clocked(self) -> bool:
        """Whether the clock ends the run (not a resumed run finishing its planned steps)."""
        return math.isfinite(self.seconds)

    @property
    def deadline(self) -> float:
        """Process seconds at which training must stop."""
        return self.seconds - self.reserve

    def steps_that_fit(self, steps_done: int, steps_per_epoch: int) -> int:
        """Total steps (done ones included, at least one more) that fit in the time left."""
        left = self.deadline - process_seconds()
        per_step = self.step_seconds + self.epoch_overhead / max(steps_per_epoch, 1)
        total = steps_done + max(1, int(left / per_step)) if per_step > 0 else steps_done + 1
        return total if self.most_steps is None else max(1, min(total, self.most_steps))

    def scheduler(self, optimizer, steps_per_epoch: int, epochs: int, cfg) -> BudgetSchedule:
        """The schedule of the run's last phase, which starts now: over the steps that fit
        in the time left, or (a resumed run, no clock) over its ``epochs``; ``cfg`` gives
        the decay (``schedule``, ``step_epochs``, ``step_gamma``)."""
        total = self.agree(self.steps_that_fit(0, steps_per_epoch) if self.clocked
                           else epochs * steps_per_epoch)
        self.schedule = BudgetSchedule(optimizer, total, self._warmup(total), cfg.schedule,
                                       cfg.step_epochs * steps_per_epoch, cfg.step_gamma)
        self.fits.append((round(process_seconds(), 1), total))
        if self.say and self.clocked:
            print(f"time budget: {total} steps ({total / steps_per_epoch:.1f} epochs of "
                  f"{steps_per_epoch}) fit before {self.deadline:.0f} s of this command "
                  f"(now {process_seconds():.0f} s; the last {self.reserve:.0f} s are kept for "
                  "the test and the report)", flush=True)
        return self.schedule

    def _warmup(self, total: int) -> int:
        return min(self.warmup_steps, round(WARMUP_SHARE * total))

    def epoch_done(self, train_seconds: float, epoch_seconds: float,
                   steps_per_epoch: int) -> None:
        """Re-estimate the total steps from the epoch just finished: its steps took
        ``train_seconds``, the whole epoch (validation and checkpoints too)
        ``epoch_seconds``."""
        schedule = self.schedule
        if schedule is None:  # a freeze phase before the budget's own
            return
        steps = schedule.steps_done - self._epoch_start_step
        self._epoch_start_step = schedule.steps_done
        if steps <= 0 or not self.clocked or self.done():
            return
        self.step_seconds = train_seconds / steps
        self.epoch_overhead = max(0.0, epoch_seconds - train_seconds)
        total = self.agree(self.steps_that_fit(schedule.steps_done, steps_per_epoch))
        schedule.total_steps, schedule.warmup = total, self._warmup(total)
        self.fits.append((round(process_seconds(), 1), total))

    def done(self) -> bool:
        """True once the schedule's steps are taken, or (one process) the deadline has
        come: processes of a ``torchrun`` job stop at the step they agreed on."""
        if self.schedule is not None and self.schedule.steps_done >= self.schedule.total_steps:
            return True
        return self.watch_clock and process_seconds() >= self.deadline

    @property
    def time_limited(self) -> bool:
        """Whether the clock, not the most epochs allowed, set how long the run trained."""
        return self.schedule is not None and self.clocked and (
            self.most_steps is None or self.schedule.total_steps < self.most_steps)

    def epochs(self, steps_per_epoch: int, first_epoch: int, planned: int) -> int:
        """The epochs the steps now planned make, the last one maybe partial (``planned``
        while the budget's phase has not started)."""
        if self.schedule is None:
            return planned
        return first_epoch + max(1, -(-self.schedule.total_steps // max(steps_per_epoch, 1)))

    def summary(self) -> dict:
        """For results.json: the budget and every estimate of the steps that fit."""
        return {"time_budget_s": self.seconds, "reserve_s": round(self.reserve, 1),
                "steps": self.schedule.steps_done if self.schedule else 0,
                "fits": self.fits}
