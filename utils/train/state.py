"""What a training run needs, beyond its weights and config, to continue exactly.

Saved into every training checkpoint and restored from it in one place.  Random state is
not part of it: every epoch re-seeds everything from ``(seed, epoch)``, so a resumed run
draws the same crops, flips and batch orders it would have drawn.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
    """

    epoch: int = 0
    phase: str = ""
    best_top1: float = -1.0
    best_epoch: int = 0
    optimizer: dict | None = None
    scheduler: dict | None = None
    scaler: dict | None = None

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
        for key in ("optimizer", "scheduler", "scaler"):
            if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
                raise UserError(f"{source}: cannot resume: {key} state is not a dict")
        phase = ckpt.get("phase", "")
        if not isinstance(phase, str):
            raise UserError(f"{source}: cannot resume: phase is {phase!r}")
        return cls(int(ckpt["epoch"]), phase, float(ckpt["best_top1"]),
                   int(ckpt.get("best_epoch", 0)), ckpt["optimizer"], ckpt["scheduler"],
                   ckpt.get("scaler"))
