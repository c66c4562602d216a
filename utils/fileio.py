"""Writing files safely: small text files so that a reader, or a run killed mid-write, sees
the old file or the new one, never half of one; CSV files that a spreadsheet opens as data,
never as formulas; outputs checked before any work is spent on them."""
from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path

from utils.cli import UserError
from utils.layout import DATASETS
from utils.names import shown


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A failure (disk full, read-only folder, a folder in the way) is a :class:`UserError`
    naming the file; the previous file is untouched and no temporary file is left.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {shown(path)}: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder could not be written in the first place


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """:func:`write_atomic` unless the file already holds ``text`` (a re-run on the same
    data touches nothing); True if written."""
    try:
        with open(path, encoding="utf-8", newline="") as f:  # as written: CSV rows end in \r\n
            if f.read() == text:
                return False
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: writing it says why, if it cannot be written either
    write_atomic(path, text)
    return True


@contextlib.contextmanager
def writing(what: str, then: str = ""):
    """Turn a failed write inside the block (a full disk, a read-only folder) into one
    :class:`UserError` naming ``what`` was being written and, in ``then``, what is safe."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"could not write {what}: {exc.strerror or exc}"
                        + (f"; {then}" if then else "")) from None


def write_json(path: str | os.PathLike, data) -> None:
    """:func:`write_atomic` of ``data`` as indented JSON."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


#: What a spreadsheet takes for the start of a formula in a cell (OWASP, "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """``value`` as a CSV cell a spreadsheet shows as text: a string starting like a formula
    (``=HYPERLINK(...)``, ``+``, ``-``, ``@``) gets a leading ``'``; numbers pass as they are.

    Class and file names are user data (a folder named ``=cmd|' /C calc'!A0`` is valid on
    Linux), and every CSV the project writes is opened in spreadsheets.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """A CSV cell read back as it was before :func:`spreadsheet_safe` (``'=x`` is ``=x``)."""
    if value.startswith("'") and value[1:].startswith(_FORMULA_STARTS):
        return value[1:]
    return value


class CsvWriter:
    """``csv.writer`` whose every row goes through :func:`spreadsheet_safe`."""

    def __init__(self, file):
        self._writer = csv.writer(file)

    def writerow(self, row) -> None:
        self._writer.writerow([spreadsheet_safe(cell) for cell in row])


def output_target(path: str | os.PathLike, *, folder: bool, protect=(),
                  datasets: str | os.PathLike = DATASETS) -> Path:
    """Check an output path before any work: never inside the dataset folder (the next
    annotation run would take the outputs for images), never onto an input (``protect``),
    and a folder output not onto an existing file (nor a file output onto a folder).

    Returns the path; anything else is a one-line :class:`UserError`, raised before the
    command spends minutes on work it then could not write.
    """
    path = Path(path)
    resolved = path.resolve()
    if within(path, datasets):
        raise UserError(f"{path}: outputs never go inside {datasets}/, where they would be "
                        "taken for images: choose another folder")
    for source in protect:
        if source is not None and Path(source).exists() and resolved == Path(source).resolve():
            raise UserError(f"{path} is an input of this command: writing there would "
                            "destroy it; choose another path")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder: choose another --out")
    if not folder and path.is_dir():
        raise UserError(f"{path} is a folder: give a file name")
    return path


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links and ``..`` resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents
