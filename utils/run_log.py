"""What a run leaves to read: ``metrics.csv``, TensorBoard events and the curve plots."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from utils.plots import plot_curves

COLUMNS = ("epoch", "phase", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5",
           "seconds", "img_per_s")


class RunLog:
    """Appends one row per epoch and redraws ``loss.png`` / ``accuracy.png``.

    On resume, rows after the resumed epoch (written by a run killed before its checkpoint
    landed) are dropped, and TensorBoard events past it are purged, so the logs read as if
    the run had never stopped.
    """

    def __init__(self, run_dir: Path, resume_epoch: int = 0):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        self.rows = [r for r in self._read() if int(r["epoch"]) <= resume_epoch]
        self._rewrite()
        self.writer = SummaryWriter(str(self.run_dir), purge_step=resume_epoch + 1)

    def _read(self) -> list[dict]:
        if not self.csv_path.exists():
            return []
        with open(self.csv_path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self) -> None:
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp")  # a kill keeps the old rows
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.csv_path)

    def log_epoch(self, row: dict, best_epoch: int | None = None) -> None:
        """Record one finished epoch everywhere; ``best_epoch`` (of ``best.pth``) is marked."""
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
        epoch = int(row["epoch"])
        for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"),
                         ("accuracy/train", "train_acc"), ("accuracy/val", "val_acc"),
                         ("accuracy/val_top5", "val_top5"), ("lr", "lr"),
                         ("speed/img_per_s", "img_per_s")):
            self.writer.add_scalar(tag, float(row[key]), epoch)
        self.writer.flush()
        plot_curves([{k: float(v) for k, v in r.items() if k != "phase"} for r in self.rows],
                    self.run_dir, run_name=self.run_dir.name, best_epoch=best_epoch)

    def close(self) -> None:
        self.writer.close()
