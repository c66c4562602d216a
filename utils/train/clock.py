"""How long a run still needs, measured from its own epochs."""
from __future__ import annotations

import time

from tqdm import tqdm

from utils.cli import warn


class RunClock:
    """The time left in a run, from the share of its epochs done (evaluation included).

    The run's duration is announced once, when a whole epoch like the rest has been
    measured: its training steps, validation, checkpoints and plots (a 3.4-minute run once
    announced 2 minutes from its first steps alone).  Epochs before ``steady_from`` (a
    frozen-backbone phase, several times faster) are left out of the rate.  A run a
    ``--time-budget`` clocks is not announced (``announce=False``): its budget line has
    said when it ends, and an epoch's pace times the epochs first planned said otherwise.
    """

    def __init__(self, epochs: int, steady_from: int = 0, announce: bool = True):
        self.epochs, self.done = max(epochs, 1), 0
        self.steady_from = min(max(steady_from, 0), self.epochs - 1)
        self.started, self.offset, self.announced = None, 0.0, not announce

    def start(self, epoch_fraction: float) -> None:
        """Start once the run's first step is done: set-up (the decode cache) and the first
        steps' allocations do not repeat, and timing them made a 2-minute run announce 7."""
        if self.started is None:
            self.started, self.offset = time.perf_counter(), self.done + epoch_fraction

    def epoch_done(self) -> None:
        self.done += 1
        if self.done == self.steady_from:  # the steady phase starts: time it alone
            self.started, self.offset = time.perf_counter(), float(self.done)

    def eta(self, epoch_fraction: float) -> float:
        """Seconds left, when the current epoch is ``epoch_fraction`` done."""
        if self.started is None:
            return 0.0
        elapsed = time.perf_counter() - self.started
        progress = self.done + epoch_fraction - self.offset
        return elapsed / progress * (self.epochs - self.done - epoch_fraction) \
            if progress > 0 else 0.0

    def announce(self, epoch_fraction: float) -> bool:
        """Whether to print the run's duration now: once, in the first epoch after one
        steady epoch was measured whole."""
        if self.announced or self.started is None or self.done <= self.steady_from:
            return False
        self.announced = True
        return True


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def print_eta(seconds: float, epochs: int, cpu: bool) -> None:
    """The time a run still needs, from its first steps; a warning when it takes hours on
    a CPU."""
    tqdm.write(f"about {duration(seconds)} more for this run's {epochs} epoch(s), "
               "measured on a whole epoch (the bar's run_eta keeps it current)")
    if seconds > 3600 and cpu:
        warn(f"this run will take about {duration(seconds)} on this CPU: fewer --epochs, "
             "a smaller --input-shape, --time-budget or --patience shortens it")
