"""Fault injection: a training run SIGKILLed again and again still finishes, losing nothing.

One short CPU run is killed at chosen moments: in the middle of a training step, during the
end-of-epoch evaluation, just after the epoch's metrics row is written (before its
checkpoint), and in the middle of a checkpoint write.  After every kill each checkpoint on
disk must load and no finished epoch may be lost; each time the run is resumed with
``--resume logs/<run>/last.pth``.  In the end the run has all its epochs, one metrics row per
epoch, a best.pth that really is the best epoch, and no leftover temporary files.

Where in an epoch the process is comes from what a user sees too: the tqdm bar on stderr
(``epoch 2/4 unfreeze: ... 6/15``; the loss appears on it after the last step), the rows of
``metrics.csv`` and the temporary file of an atomic checkpoint write.  Which step is hit
is drawn from a seeded generator, so a failure replays.
"""
from __future__ import annotations

import csv
import fcntl
import os
import pty
import random
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, make_dataset, run_script
from tests.test_train import FAST
from utils.model.checkpoint import load_checkpoint

EPOCHS = 4
STEPS = 15  # 3 classes x 40 images / batch 8
BAR = re.compile(rb"epoch (\d+)/\d+(?: \w+)?:.*?\| *(\d+)/(\d+)")


class Training:
    """A running ``train.py`` whose stderr, a terminal (the progress bar draws only on
    one), is collected as it arrives."""

    def __init__(self, project: Path, *args):
        self._terminal, child_end = pty.openpty()
        # Wide enough for the whole bar, its loss and rate included (a new pty is 0 wide).
        fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 500, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=project,
            stdout=subprocess.DEVNULL, stderr=child_end,
            # Every step redraws the bar: the kill points are read off it, and tqdm's usual
            # 0.1 s throttle can skip the one a point waits for on a fast (or loaded) machine.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "0"})
        os.close(child_end)  # the child's copy is its own: reading ends when it exits
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        try:
            while chunk := os.read(self._terminal, 65536):
                self.stderr += chunk
        except OSError:  # EIO: the child's end of the terminal is closed
            pass
        finally:
            os.close(self._terminal)

    def bar(self) -> tuple[int, int, bool] | None:
        """(epoch, steps done, whether the loss is shown) of the latest progress bar."""
        for segment in reversed(re.split(rb"[\r\n]", self.stderr[-4096:])):
            match = BAR.search(segment)
            if match:
                return int(match[1]), int(match[2]), b"loss=" in segment
        return None

    def kill_when(self, condition, timeout=120.0) -> None:
        """SIGKILL the process as soon as ``condition()`` holds (polled every millisecond)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"train.py ended before the kill point:\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"kill point never reached:\n{self.log()}")
            time.sleep(0.001)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join()

    def finish(self, timeout=300.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join()
        return code

    def log(self) -> str:
        return self.stderr.decode(errors="replace")[-3000:]


def metric_epochs(run_dir: Path) -> list[int]:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            return [int(r["epoch"]) for r in csv.DictReader(f) if r.get("epoch")]
    except (FileNotFoundError, ValueError):  # not written yet, or a row half-written
        return []


def temp_files(run_dir: Path, kind: str = "") -> list[str]:
    """Names of the temporary files of atomic writes (of ``kind`` files, e.g. ``.pth``)."""
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name.endswith(".tmp") and kind in p.name)


# Kill points.  Each gets the run and the epoch it should strike (the first one the process
# trains) and returns the condition to poll.

def in_a_step(run, run_dir, epoch, rng):
    step = rng.randint(2, STEPS - 3)
    return lambda: (bar := run.bar()) is not None and bar[0] == epoch and step <= bar[1] \
        and not bar[2]


def in_evaluation(run, run_dir, epoch, rng):
    # The loss shows on the bar after the last step; the row is written after evaluating.
    return lambda: (bar := run.bar()) is not None and bar[0] == epoch and bar[2] \
        and epoch not in metric_epochs(run_dir)


def after_the_metrics_row(run, run_dir, epoch, rng):
    return lambda: epoch in metric_epochs(run_dir)


def in_a_checkpoint_write(run, run_dir, epoch, rng):
    return lambda: bool(temp_files(run_dir, ".pth."))


@pytest.fixture()
def project(tmp_path):
    make_dataset(tmp_path, classes=("red", "green", "blue"), train=40, test=40)
    result = run_script("txt_annotation.py", "--workers", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_repeatedly_killed_run_resumes_to_the_end_and_loses_nothing(project):
    rng = random.Random(20240607)
    run_dir = project / "logs" / "k"
    args = [*FAST, "--epochs", EPOCHS, "--save-period", 1, "--run-name", "k"]
    # The first kill waits for epoch 1's checkpoint: without one there is nothing to resume.
    plan = [(in_a_step, 2), (in_evaluation, None), (after_the_metrics_row, None),
            (in_a_checkpoint_write, None), (in_a_step, None)]
    done = 0  # epochs safely checkpointed so far
    kills, torn_writes = 0, 0
    for moment, epoch in plan:
        run = Training(project, *args)
        target = epoch or done + 1
        run.kill_when(moment(run, run_dir, target, rng))
        kills += 1
        torn_writes += bool(temp_files(run_dir, ".pth."))

        checkpoints = {p.name: load_checkpoint(p) for p in run_dir.glob("*.pth")}
        last = checkpoints["last.pth"]["epoch"]
        assert done <= last <= target, (moment.__name__, done, last)  # nothing finished is lost
        if moment is not in_a_checkpoint_write:
            assert last == target - 1, moment.__name__  # killed before the epoch's checkpoint
        for name, ckpt in checkpoints.items():
            if name.startswith("epoch_"):
                assert ckpt["epoch"] == int(name[6:9])
        done = last
        args = ["--resume", run_dir / "last.pth"]

    run = Training(project, *args)
    assert run.finish() == 0, run.log()
    assert kills == len(plan) and torn_writes >= 1  # one kill really did hit a write
    last, best = load_checkpoint(run_dir / "last.pth"), load_checkpoint(run_dir / "best.pth")
    assert last["epoch"] == EPOCHS
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert sorted(p.name for p in run_dir.glob("epoch_*.pth")) == [
        f"epoch_{e:03d}.pth" for e in range(1, EPOCHS + 1)]
    val = [float(r["val_top1"]) for r in rows]
    assert best["epoch"] == last["best_epoch"] == val.index(max(val)) + 1
    assert best["val_top1"] == pytest.approx(max(val), abs=1e-6)
    assert temp_files(run_dir) == []  # the torn writes were cleaned up
