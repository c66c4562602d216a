"""Predictions for many images at once: a CSV of them, or the images sorted into folders.

``predict.py --csv out.csv`` writes one row per image as soon as it is classified;
``predict.py --sort-into DIR`` *copies* (never moves) each image into ``DIR/<predicted
class>/``, and into ``DIR/_uncertain/`` when the top probability is under
``--min-confidence``; ``predict.py --cam DIR`` writes each image's class-activation map
there (:func:`write_new`).  Nothing is ever overwritten: a name taken (by an earlier run, or by an
image of the same name from another folder) gets ``name-2.jpg``, ``name-3.jpg``, ...
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

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
    source = Path(image)

    def copy(dst):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, dst)

    target = Path(folder) / (name if probability >= min_confidence else UNCERTAIN)
    path = write_new(target, source.name, copy, what=f"copy {source}")
    shutil.copystat(source, path)
    return path


def write_new(folder: str | os.PathLike, name: str, write: Callable[[BinaryIO], None], *,
              what: str) -> Path:
    """Create ``folder/name`` (or ``name-2``, ``name-3``, ... when taken) and fill it with
    ``write(file)``; an existing file is never opened for writing, and a failed write leaves
    no partial file.  ``what`` names the action in the error message."""
    folder = Path(folder)
    stem, suffix = os.path.splitext(name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot {what} into {folder}/: {exc.strerror or exc}") from None
    for n in range(1, 10_000):
        path = folder / (name if n == 1 else f"{stem}-{n}{suffix}")
        try:
            with open(path, "xb") as dst:  # x: never overwrite
                write(dst)
        except FileExistsError:
            continue
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise UserError(f"cannot {what} into {folder}/: {exc.strerror or exc}") from None
        return path
    raise UserError(f"no free name for {name} in {folder}/")
