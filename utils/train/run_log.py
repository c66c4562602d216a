"""What a run leaves to read: ``metrics.csv``, TensorBoard events and the curve plots."""
from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from utils.evaluation.metrics import METRICS
from utils.evaluation.plots import plot_curves

#: ``metrics.csv``'s columns: the training figures, then validation's (every metric).
COLUMNS = ("epoch", "phase", "lr", "train_loss", "train_top1",
           *(f"val_{metric.key}" for metric in METRICS), "seconds", "img_per_s")
#: Columns as runs before this version named them (a resumed old run keeps its rows).
_OLD_COLUMNS = {"train_acc": "train_top1", "val_acc": "val_top1", "val_recall": "val_mean_recall",
                **{f"val_top{k}": "val_topk" for k in range(2, 6)}}
#: Seconds between redraws of the curve plots: a redraw takes about 0.4 s on a 2-core CPU,
#: 4% of the epochs of a short CPU run; :meth:`RunLog.finish` brings them up to date.
PLOT_SECONDS = 30.0


class RunLog:
    """Appends one row per epoch and redraws ``loss.png`` / ``accuracy.png`` (at most every
    :data:`PLOT_SECONDS`, and at the end).

    On resume, rows after the resumed epoch (written by a run killed before its checkpoint
    landed) are dropped, and TensorBoard events past it are purged, so the logs read as if
    the run had never stopped.  Rows that cannot be read (a file edited by hand) are dropped
    too.  Validation columns stay empty in a run without a validation set.
    """

    def __init__(self, run_dir: Path, resume_epoch: int = 0):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        self.columns = COLUMNS
        self.rows = [r for r in self._read() if _epoch(r) is not None
                     and _epoch(r) <= resume_epoch]
        self._rewrite()
        self.writer = SummaryWriter(str(self.run_dir), purge_step=resume_epoch + 1)
        # When the plots were last drawn, and from how many rows (resumed ones are drawn).
        self._plotted, self._plotted_rows, self._best_epoch = -math.inf, len(self.rows), None

    def _read(self) -> list[dict]:
        try:  # utf-8-sig: a spreadsheet that re-saved the file may have added a BOM
            with open(self.csv_path, newline="", encoding="utf-8-sig") as f:
                return [{_OLD_COLUMNS.get(k, k): v for k, v in row.items()}
                        for row in csv.DictReader(f)]
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, csv.Error):
            return []  # unreadable: the checkpoint, not this file, is what a resume trusts

    def _rewrite(self) -> None:
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp")  # a kill keeps the old rows
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.csv_path)

    def log_epoch(self, row: dict, best_epoch: int | None = None) -> None:
        """Record one finished epoch everywhere; ``best_epoch`` (of ``best.pth``) is marked."""
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)
        epoch = int(row["epoch"])
        for key in self.columns[2:]:
            if row.get(key) not in (None, ""):
                split, _, name = key.partition("_")
                tag = f"{name}/{split}" if split in ("train", "val") else key
                self.writer.add_scalar(tag, float(row[key]), epoch)
        self.writer.flush()
        self._best_epoch = best_epoch
        if time.monotonic() - self._plotted >= PLOT_SECONDS:
            self._plot()

    def finish(self) -> list[dict]:
        """The rows, with the curve plots brought up to date (for the run's report)."""
        if len(self.rows) != self._plotted_rows:
            self._plot()
        return self.rows

    def _plot(self) -> None:
        plot_curves(self.rows, self.run_dir, run_name=self.run_dir.name,
                    best_epoch=self._best_epoch)
        self._plotted, self._plotted_rows = time.monotonic(), len(self.rows)

    def log_test(self, results: dict, epoch: int) -> None:
        """The final test figures, as ``test/...`` scalars at the epoch they belong to."""
        for key, value in results.items():
            if isinstance(value, float):
                self.writer.add_scalar(f"test/{key}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def val_columns(val) -> dict:
    """An epoch's validation figures (an ``EvalResult``) as ``metrics.csv`` columns."""
    if val is None:
        return {}
    return {f"val_{metric.key}": getattr(val, metric.key) for metric in METRICS}


def epoch_line(record: dict, val, epochs: int, best_epoch: int) -> str:
    """The line printed at the end of an epoch: its record's figures, and validation's."""
    line = (f"epoch {record['epoch']}/{epochs}: train loss "
            f"{record['train_loss']:.4f} top-1 {record['train_top1']:.4f} | ")
    if val is not None:
        figures = ", ".join(f"{m.title(val.k)} {val.describe(m, short=True)}" for m in val.shown)
        line += f"val {figures}{' (best)' if best_epoch == record['epoch'] else ''} | "
    return line + f"{record['img_per_s']:.0f} img/s, {record['seconds']:.1f}s"


def _epoch(row: dict) -> int | None:
    try:
        return int(row["epoch"])
    except (KeyError, TypeError, ValueError):
        return None
