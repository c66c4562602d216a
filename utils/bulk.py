"""Predictions for many images at once: a CSV of them, or the images sorted into folders.

``predict.py --csv out.csv`` writes one row per image as soon as it is classified;
``predict.py --sort-into DIR`` *copies* (never moves) each image into ``DIR/<predicted
class>/``, and into ``DIR/_uncertain/`` when the top probability is under
``--min-confidence``.  Nothing is ever overwritten: a name taken (by an earlier run, or by an
image of the same name from another folder) gets ``name-2.jpg``, ``name-3.jpg``, ...
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Sequence

from utils.cli import UserError

UNCERTAIN = "_uncertain"


class CsvPredictions:
    """``path, class_1, probability_1, ..., class_k, probability_k``, a row per image."""

    def __init__(self, path: str | os.PathLike, k: int):
        self.path = Path(path)
        try:
            self.file = open(self.path, "x", newline="", encoding="utf-8")
        except FileExistsError:
            raise UserError(f"{self.path} exists: choose another --csv file") from None
        except OSError as exc:
            raise UserError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.writer = csv.writer(self.file)
        self.writer.writerow(["path", *(f"{name}_{i}" for i in range(1, k + 1)
                                       for name in ("class", "probability"))])

    def add(self, path: str, top: Sequence[tuple[str, float]]) -> None:
        self.writer.writerow([path, *(v for name, p in top for v in (name, f"{p:.6f}"))])
        self.file.flush()  # a long run interrupted still leaves every row it made

    def close(self) -> None:
        self.file.close()


def sort_into(folder: str | os.PathLike, image: str | os.PathLike,
              top: Sequence[tuple[str, float]], min_confidence: float = 0.0) -> Path:
    """Copy ``image`` into ``folder/<predicted class>/`` (or ``_uncertain/``); the copy's
    path, under a free name."""
    name, probability = top[0]
    target = Path(folder) / (name if probability >= min_confidence else UNCERTAIN)
    target.mkdir(parents=True, exist_ok=True)
    source = Path(image)
    for n in range(1, 10_000):
        path = target / (source.name if n == 1 else f"{source.stem}-{n}{source.suffix}")
        try:
            with open(source, "rb") as src, open(path, "xb") as dst:  # x: never overwrite
                shutil.copyfileobj(src, dst)
        except FileExistsError:
            continue
        except OSError as exc:
            path.unlink(missing_ok=True)  # no half copy left behind
            raise UserError(f"cannot copy {source} into {target}/: "
                            f"{exc.strerror or exc}") from None
        shutil.copystat(source, path)
        return path
    raise UserError(f"no free name for {source.name} in {target}/")
