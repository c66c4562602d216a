"""Time to accuracy: what a run of the current defaults reaches in a given wall-clock time.

Each budget is one whole ``train.py --time-budget`` run in its own process (the defaults
for the data and this device, fitted to the budget), scored on the test list it reports,
then a separate ``eval.py`` process on the same list: the figures a user feels, measured
the way they would be, including start-up.  Peak memory is each process's own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from utils.cli import UserError

ROOT = Path(__file__).resolve().parents[2]  # the project: train.py and eval.py


@dataclass
class Reached:
    """One budget's run."""

    budget: float  #: seconds asked for
    seconds: float  #: training wall clock, as the run measured it (set-up excluded)
    process: float  #: the whole train.py process, start-up and final test included
    epochs: int
    top1: float
    peak_mib: float
    eval_seconds: float  #: eval.py on the test list, whole process
    eval_peak_mib: float


def _run(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run a project script; (wall seconds, peak RSS in MiB, stderr) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()  # read as it comes: a full pipe would stall the run
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise UserError(f"{args[0]} failed: {stderr.strip().splitlines()[-1:]}")
    return seconds, usage.ru_maxrss / 1024, stderr


def reach(budgets: list[float], train_args: list[str], test_annotation: str,
          project: Path = Path(".")) -> list[Reached]:
    """Train the defaults once per budget (seconds) and score each run on the test list."""
    results = []
    with tempfile.TemporaryDirectory(prefix="tta-", dir=project) as logs:
        for budget in budgets:
            name = f"budget-{budget:g}"
            process, peak, _ = _run([str(ROOT / "train.py"), "--time-budget", f"{budget / 60}",
                                     "--save-dir", logs, "--run-name", name,
                                     "--test-annotation", test_annotation, *train_args],
                                    project)
            run = Path(logs) / name
            report = json.loads((run / "results.json").read_text())
            eval_seconds, eval_peak, _ = _run([str(ROOT / "eval.py"), "--model",
                                               str(run / "best.pth"), "--annotation",
                                               test_annotation, "--out", str(run / "eval")],
                                              project)
            results.append(Reached(budget, report["seconds"], process, report["epochs"],
                                   report["test"]["top1"], peak, eval_seconds, eval_peak))
    return results


def report(results: list[Reached]) -> str:
    """The table ``benchmark.py --time-to-accuracy`` prints."""
    lines = [f"{'budget':>8} {'trained':>8} {'process':>8} {'epochs':>6} {'top-1':>7} "
             f"{'peak MiB':>9} {'eval s':>7} {'eval MiB':>9}"]
    for r in results:
        lines.append(f"{r.budget:>7g}s {r.seconds:>7.1f}s {r.process:>7.1f}s {r.epochs:>6} "
                     f"{r.top1:>7.2%} {r.peak_mib:>9,.0f} {r.eval_seconds:>6.1f}s "
                     f"{r.eval_peak_mib:>9,.0f}")
    return "\n".join(lines)
