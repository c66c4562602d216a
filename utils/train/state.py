"""What a training run needs, beyond its weights and config, to continue exactly.

Saved into every training checkpoint and restored from it in one place.  Random state is
not part of it: every epoch re-seeds everything from ``(seed, epoch)``, so a resumed run
draws the same crops, flips and batch orders it would have drawn.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from utils.cli import UserError


@dataclass
class TrainState:
    """Progress of a run at the end of an epoch.

    Attributes:
        epoch: epochs finished.
        phase: the phase that epoch belonged to (``freeze`` or ``unfreeze``).
        best_top1: the best validation top-1 so far (-1 before the first epoch).
        best_epoch: the epoch that scored it (what ``best.pth`` holds).
        optimizer, scheduler, scaler: their ``state_dict()`` s at that point.
        run_id: the run's identity, also kept in its folder (:data:`RUN_ID_FILE`): a
            checkpoint copied into another run's folder cannot resume (and overwrite) it.
        train_fingerprint: what the training list was (:func:`train_fingerprint`): a run
            resumes only on the data it started with.
        margins: the margin tallies of the epochs so far, every process's summed
            (:class:`utils.train.margins.MarginAccumulator`); not kept in ``best.pth``.
    """

    epoch: int = 0
    phase: str = ""
    best_top1: float = -1.0
    best_epoch: int = 0
    optimizer: dict | None = None
    scheduler: dict | None = None
    scaler: dict | None = None
    run_id: str | None = None
    train_fingerprint: str | None = None
    margins: dict | None = None

    def improves(self, top1: float) -> bool:
        """True when ``top1`` beats the best so far (the first epoch always does)."""
        return top1 > self.best_top1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str = "checkpoint") -> "TrainState":
        """The state saved in a training checkpoint, each entry checked for type."""
        missing = [k for k in ("epoch", "optimizer", "scheduler", "best_top1") if k not in ckpt]
        if missing:
            raise UserError(f"{source}: cannot resume: the checkpoint has no "
                            f"{', '.join(missing)} (is it a last.pth?)")
        numbers = {"epoch": int, "best_epoch": int, "best_top1": float}
        for key, kind in numbers.items():
            value = ckpt.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or (kind is int and value != int(value)) or value < -1:
                raise UserError(f"{source}: cannot resume: {key} is {value!r}")
        for key in ("optimizer", "scheduler", "scaler", "margins"):
            if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
                raise UserError(f"{source}: cannot resume: {key} state is not a dict")
        for key in ("phase", "run_id", "train_fingerprint"):
            if ckpt.get(key) is not None and not isinstance(ckpt[key], str):
                raise UserError(f"{source}: cannot resume: {key} is {ckpt[key]!r}")
        return cls(int(ckpt["epoch"]), ckpt.get("phase", ""), float(ckpt["best_top1"]),
                   int(ckpt.get("best_epoch", 0)), ckpt["optimizer"], ckpt["scheduler"],
                   ckpt.get("scaler"), ckpt.get("run_id"), ckpt.get("train_fingerprint"),
                   ckpt.get("margins"))


def say_what_was_kept(run_dir: Path, state: TrainState, epochs: int) -> None:
    """After Ctrl-C: what is on disk, and the command that continues the run."""
    last = run_dir / "last.pth"
    if not last.exists():
        print(f"\ninterrupted in the first epoch: nothing saved in {run_dir} yet",
              file=sys.stderr)
        return
    print(f"\ninterrupted: {run_dir} keeps last.pth (epoch {state.epoch} of {epochs}) and "
          f"best.pth (epoch {state.best_epoch}); continue with\n"
          f"  python train.py --resume {last}", file=sys.stderr, flush=True)


#: The file in a run folder holding the run's identity (written when the folder is claimed).
RUN_ID_FILE = ".run_id"


def train_fingerprint(samples: Sequence[tuple[int, str]], annotation: str | os.PathLike) -> str:
    """A hash of a training list: its labels and paths (relative to the list's folder, so a
    moved project keeps it) and the number of images, e.g. ``5000:3f2a9c1b7d4e``."""
    base = os.path.dirname(os.path.abspath(annotation))
    digest = hashlib.sha1()
    for label, path in samples:
        relative = os.path.relpath(os.path.abspath(path), base)
        digest.update(f"{label};{relative}\n".encode("utf-8", "surrogateescape"))
    return f"{len(samples)}:{digest.hexdigest()[:12]}"
