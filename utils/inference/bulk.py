"""Predictions for many images at once: a CSV of them, or the images sorted into folders.

``predict.py --csv out.csv`` writes one row per image as soon as it is classified;
``predict.py --sort-into DIR`` *copies* (never moves) each image into ``DIR/<predicted
class>/``, into ``DIR/_unknown/`` when ``--reject auto`` answers "unknown", and into
``DIR/_uncertain/`` when the top probability is under ``--min-confidence``;
``predict.py --cam DIR`` writes each image's class-activation map there (:func:`write_new`).
Nothing is ever overwritten: a name taken (by an earlier run, or by an image of the same name
from another folder) gets ``name-2.jpg``, ``name-3.jpg``, ...
"""
from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from utils.cli import UserError
from utils.fileio import CsvWriter

UNCERTAIN = "_uncertain"
UNKNOWN = "_unknown"


class CsvPredictions:
    """``path, class_1, probability_1, ..., class_k, probability_k``, a row per image; with
    ``reject`` (``--reject auto``) an ``answer`` column after the path: ``unknown`` or the
    top class."""

    def __init__(self, path: str | os.PathLike, k: int, reject: bool = False):
        self.path = Path(path)
        try:
            self.file = open(self.path, "x", newline="", encoding="utf-8")
        except FileExistsError:
            raise UserError(f"{self.path} exists: choose another --csv file") from None
        except OSError as exc:
            raise UserError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.writer = CsvWriter(self.file)
        self.writer.writerow(["path", *(["answer"] if reject else []),
                              *(f"{name}_{i}" for i in range(1, k + 1)
                                for name in ("class", "probability"))])

    def add(self, path: str, top: Sequence[tuple[str, float]],
            unknown: bool | None = None) -> None:
        """A row; ``unknown`` (``--reject auto`` only) fills the ``answer`` column."""
        answer = [] if unknown is None else ["unknown" if unknown else top[0][0]]
        self.writer.writerow([path, *answer,
                              *(v for name, p in top for v in (name, f"{p:.6f}"))])
        self.file.flush()  # a long run interrupted still leaves every row it made

    def close(self) -> None:
        self.file.close()


def bucket(name: str, classes: Sequence[str]) -> str:
    """A folder name for images of no class (``_uncertain``, ``_unknown``): ``name``, with
    more leading underscores while a class is called that, so a real class is never mixed
    with them."""
    while name in classes:
        name = "_" + name
    return name


def sort_into(folder: str | os.PathLike, image: str | os.PathLike,
              top: Sequence[tuple[str, float]], min_confidence: float = 0.0,
              uncertain: str = UNCERTAIN, unknown: str | None = None) -> Path:
    """Copy ``image`` into ``folder/<predicted class>/``, or ``folder/<unknown>/`` when the
    answer is "unknown" (``unknown`` given: the bucket's name), or ``uncertain/``; the
    copy's path, under a free name (or the copy already there: sorting an image twice, or
    again after an interrupted run, adds nothing)."""
    name, probability = top[0]
    source = Path(image)

    def copy(dst):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, dst)

    target = Path(folder) / (unknown if unknown is not None else
                             name if probability >= min_confidence else uncertain)
    path = write_new(target, source.name, copy, what=f"copy {source}")
    shutil.copystat(source, path)
    return path


def write_new(folder: str | os.PathLike, name: str, write: Callable[[BinaryIO], None], *,
              what: str) -> Path:
    """Create ``folder/name`` (or ``name-2``, ``name-3``, ... when taken) holding what
    ``write(file)`` writes, and return its path.

    The content is written to a hidden temporary file first and then linked to its name,
    which fails rather than replace anything: an existing file is never opened for writing,
    and a run killed mid-write leaves no partial file under a real name (only a hidden
    ``.partial`` file, removed by the next write into that folder).  A file already holding
    exactly this content under one of the names is returned instead of a new copy.
    ``what`` names the action in the error message.
    """
    folder = Path(folder)
    stem, suffix = os.path.splitext(name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(folder)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".partial",
                                   dir=folder)
        try:
            with os.fdopen(fd, "wb") as dst:
                write(dst)
            for n in range(1, 10_000):
                path = folder / (name if n == 1 else f"{stem}-{n}{suffix}")
                try:
                    os.link(tmp, path)  # atomic, and never over an existing file
                    return path
                except FileExistsError:
                    if path.is_file() and filecmp.cmp(path, tmp, shallow=False):
                        return path
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"cannot {what} into {folder}/: {exc.strerror or exc}") from None
    raise UserError(f"no free name for {name} in {folder}/")


def _remove_stale_partials(folder: Path) -> None:
    """Temporary files left by a killed run of :func:`write_new` (their process is gone)."""
    for stale in folder.glob(".*.partial"):
        try:
            pid = int(stale.name.rsplit(".", 3)[-3])
            os.kill(pid, 0)  # still running: its file is not stale
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError):
            continue
