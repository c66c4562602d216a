"""A reviewed fix of the dataset: ``txt_annotation.py --apply relabel.csv`` and ``--undo``.

``relabel.csv`` (the report's review section downloads it) has a header and the columns
``path`` and ``class`` (others are ignored): ``path`` names an image as the annotation
files and ``label_issues.csv`` do (relative to the folder of the annotation files, or
absolute); ``class`` is the class it belongs to, or ``_removed`` to take it out of the
dataset.

* A relabelled image moves to ``datasets/<split>/<class>/`` (its sub-folders kept), a
  removed one to ``datasets/_removed/<split>/<old class>/``: outside the split folders, so
  no scan lists it.  Files are renamed, never copied, never deleted.  A name already taken
  in the new folder gets ``~<old class>`` (then a number) before its extension.
* Every row is checked before anything moves: a path outside ``datasets/``, not an image in
  a class folder of a split, a missing file, an unknown class, or one path given two
  classes is a one-line error, and the dataset is left as it was.
* Applying the same file twice is harmless: an image already in its class, or moved there
  by a batch not undone, is left alone.
* Each batch is written to the undo log (:data:`LOG_NAME`, beside the dataset folder, so
  that apply then undo leaves the dataset folder byte for byte as it was) and flushed to
  disk *before* the first file moves, so even an interrupted batch can be undone.
  ``--undo`` moves the last batch's files back and removes the folders it created, if
  empty.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Sequence

from utils.cli import UserError
from utils.fileio import unescape_cell
from utils.names import shown

#: The class of a removal in ``relabel.csv``, and the folder removed images go to.
REMOVED = "_removed"
#: The undo log, beside the dataset folder.
LOG_NAME = "relabel_undo.jsonl"


@dataclass(frozen=True)
class Move:
    """One file to move, both paths relative to the dataset folder ('/' separators)."""

    source: str
    target: str


def apply(csv_path: str | os.PathLike, datasets: str | os.PathLike, classes: Sequence[str],
          base: str | os.PathLike = ".") -> list[Move]:
    """Check every row of ``csv_path`` (:func:`plan`), log the batch, then move the files;
    returns the moves made (none when everything was already in place).

    ``classes`` are the dataset's classes; ``base`` is the folder relative paths are read
    from (the annotation files').
    """
    log = log_file(datasets)
    moves = plan(csv_path, datasets, classes, base=base, log=log)
    if not moves:
        return []
    root = os.path.realpath(datasets)
    created: list[str] = []  # the folders this batch creates, outermost first, for the undo
    for move in moves:
        folder, missing = os.path.dirname(move.target), []
        while folder and not os.path.isdir(os.path.join(root, folder)):
            missing.append(folder)
            folder = os.path.dirname(folder)
        created += [f for f in reversed(missing) if f not in created]
    batch = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{len(_read_log(log))}"
    _append(log, {"id": batch, "csv": os.path.abspath(csv_path), "created": created,
                  "moves": [[m.source, m.target] for m in moves]})
    for move in moves:
        target = os.path.join(root, *move.target.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.lexists(target):  # appeared since the plan: never overwrite
            raise UserError(f"{move.target} appeared while moving: stopped; `python "
                            "txt_annotation.py --undo` puts back what was moved")
        os.rename(os.path.join(root, *move.source.split("/")), target)
    return moves


def undo(datasets: str | os.PathLike) -> list[Move]:
    """Move the files of the last batch not undone back where they were; returns the moves
    (none when there is nothing to undo).  A batch interrupted half-way is undone for the
    files it had moved.  Checked first: a place taken meanwhile is an error, nothing moves."""
    log = log_file(datasets)
    batches = _open_batches(log)
    if not batches:
        return []
    batch, root = batches[-1], os.path.realpath(datasets)
    back = []
    for source, target in reversed(batch["moves"]):
        at_target = os.path.lexists(os.path.join(root, *target.split("/")))
        if at_target and os.path.lexists(os.path.join(root, *source.split("/"))):
            raise UserError(f"cannot undo: {source} exists again (and {target} too): move "
                            "one of them away first")
        if at_target:  # else never moved (an interrupted batch) or moved back by hand
            back.append(Move(target, source))
    for move in back:
        source = os.path.join(root, *move.target.split("/"))
        os.makedirs(os.path.dirname(source), exist_ok=True)
        os.rename(os.path.join(root, *move.source.split("/")), source)
    for folder in reversed(batch.get("created", [])):
        try:
            os.rmdir(os.path.join(root, *folder.split("/")))  # only ever an empty folder
        except OSError:
            pass  # not empty (files added since) or already gone: kept
    _append(log, {"undo": batch["id"], "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return back


def log_file(datasets: str | os.PathLike) -> str:
    """The undo log of a dataset folder: beside it, not in it."""
    return os.path.join(os.path.dirname(os.path.abspath(datasets)), LOG_NAME)


# ---------------------------------------------------------------------------------------------
# Planning: everything is checked here, nothing moves


def plan(csv_path: str | os.PathLike, datasets: str | os.PathLike, classes: Sequence[str], *,
         base: str | os.PathLike = ".", log: str | os.PathLike | None = None) -> list[Move]:
    """The moves ``csv_path`` asks for, every row checked first; a :class:`UserError` names
    the file and line of the first problem.  Rows already satisfied -- the image is in that
    class, or a batch of ``log`` not undone moved it there -- give no move."""
    root = os.path.realpath(datasets)
    if not os.path.isdir(root):
        raise UserError(f"{datasets}/: no such folder")
    if REMOVED in classes:
        raise UserError(f"a class is named {REMOVED!r}, which relabel.csv uses for removals: "
                        "rename that class folder first")
    done = {m[0]: m[1] for batch in _open_batches(log) for m in batch["moves"]}
    wanted_of: dict[str, str] = {}
    moves, taken = [], set()
    for line, path, wanted in _read_rows(csv_path):
        where = f"{csv_path}:{line}"
        if wanted != REMOVED and wanted not in classes:
            raise UserError(f"{where}: unknown class {wanted!r} (the classes are "
                            f"{', '.join(classes)}; {REMOVED} removes an image)")
        rel = _inside(path, root, os.fspath(base))
        if rel is None:
            raise UserError(f"{where}: {shown(path)} is outside {datasets}/: refused")
        parts = rel.split("/")
        if len(parts) < 3 or parts[0] == REMOVED or any(p.startswith(".") for p in parts):
            raise UserError(f"{where}: {shown(path)} is not an image in a class folder of a "
                            f"split ({datasets}/<split>/<class>/...)")
        if rel in wanted_of:
            if wanted_of[rel] != wanted:
                raise UserError(f"{where}: {shown(path)} is listed twice, with two classes "
                                f"({wanted_of[rel]!r} and {wanted!r})")
            continue  # the same row again
        wanted_of[rel] = wanted
        full = os.path.join(root, *parts)
        if not os.path.lexists(full):
            moved = done.get(rel)
            if moved and os.path.lexists(os.path.join(root, *moved.split("/"))) \
                    and _class_of(moved) == wanted:
                continue  # applied before: nothing to do
            raise UserError(f"{where}: {shown(path)}: no such file")
        if os.path.isdir(full):
            raise UserError(f"{where}: {shown(path)} is a folder, not an image")
        split, current, rest = parts[0], parts[1], parts[2:]
        if wanted == current:
            continue  # already there
        folder = [REMOVED, split, current] if wanted == REMOVED else [split, wanted]
        target = _free_name(root, folder + rest[:-1], rest[-1], current, taken)
        taken.add(target)
        moves.append(Move(rel, target))
    return moves


def _read_rows(csv_path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """(line number, path, class) of each row; a malformed file is a :class:`UserError`.
    A cell a spreadsheet-safe writer prefixed with ``'`` is read as it was meant."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # a BOM: Excel's
            reader = csv.DictReader(f)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            if "path" not in reader.fieldnames or "class" not in reader.fieldnames:
                raise UserError(f"{csv_path}: the header must name the columns 'path' and "
                                f"'class' (found: {', '.join(reader.fieldnames) or 'nothing'})")
            rows = [(reader.line_num, unescape_cell((row["path"] or "").strip()),
                     unescape_cell((row["class"] or "").strip())) for row in reader]
    except FileNotFoundError:
        raise UserError(f"{csv_path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{csv_path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise UserError(f"{csv_path}: not a valid CSV file ({exc})") from None
    except OSError as exc:
        raise UserError(f"{csv_path}: cannot be read ({exc.strerror or exc})") from None
    for line, path, _ in rows:
        if not path:
            raise UserError(f"{csv_path}:{line}: no path")
    return rows


def _inside(path: str, root: str, base: str) -> str | None:
    """``path`` relative to the dataset folder ``root`` ('/'-separated), or None when it is
    outside.  The folder holding the file is resolved (links and '..' included), the file
    itself is not: an image that is a link stays the link it is."""
    full = path if os.path.isabs(path) else os.path.join(base, path)
    folder = os.path.realpath(os.path.dirname(os.path.abspath(full)))
    name = os.path.basename(full)
    if name in ("", ".", "..") or os.path.commonpath([folder, root]) != root:
        return None
    return os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")


def _class_of(rel: str) -> str:
    """The class a dataset-relative path stands for (``_removed`` for a removed file)."""
    parts = rel.split("/")
    return REMOVED if parts[0] == REMOVED else parts[1]


def _free_name(root: str, folder: list[str], name: str, old_class: str,
               taken: set[str]) -> str:
    """``folder/name``, or ``folder/<stem>~<old class>[-k]<ext>`` when that is taken on
    disk or by another move of this batch."""
    stem, ext = os.path.splitext(name)
    renamed = (f"{stem}~{old_class}{'' if k == 1 else f'-{k}'}{ext}" for k in range(1, 10_000))
    for candidate in itertools.chain([name], renamed):
        rel = "/".join(folder + [candidate])
        if rel not in taken and not os.path.lexists(os.path.join(root, *rel.split("/"))):
            return rel
    raise UserError(f"no free name for {name} in {'/'.join(folder)}/")


# ---------------------------------------------------------------------------------------------
# The undo log: one JSON object per line, one line per batch (and one per undo)


def _read_log(log: str | os.PathLike | None) -> list[dict]:
    if log is None or not os.path.exists(log):
        return []
    try:
        with open(log, encoding="utf-8") as f:
            entries = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as exc:
        raise UserError(f"undo log {log} cannot be read ({exc}): fix or move it") from None
    if not all(isinstance(e, dict) for e in entries):
        raise UserError(f"undo log {log} is not a relabel log: fix or move it")
    return entries


def _open_batches(log: str | os.PathLike | None) -> list[dict]:
    """The batches of the log not undone yet, oldest first."""
    entries = _read_log(log)
    undone = {e["undo"] for e in entries if "undo" in e}
    return [e for e in entries if "moves" in e and e.get("id") not in undone]


def _append(log: str | os.PathLike, entry: dict) -> None:
    """Append one line to the log and flush it to disk before going on."""
    try:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise UserError(f"cannot write the undo log {log} ({exc.strerror or exc})") from None
