"""File and class names that survive the annotation format, and showing any name on one line.

The annotation files are UTF-8 text with one entry per line, read back with
``str.splitlines()`` and (for the class list) ``str.strip()``.  A name survives that round
trip only if it is valid UTF-8 (Python turns undecodable bytes into lone surrogates), holds
no control character or line separator (``splitlines`` also splits at ``\\x1c``-``\\x1e``,
``\\x85``, ``\\u2028`` and ``\\u2029``), and, for a class name, has no leading or trailing
whitespace and is not empty.  Such names are refused where they are found, with the path
shown escaped by :func:`shown`, never written as a broken line.
"""
from __future__ import annotations

import os
import unicodedata
from typing import Iterable

# Control characters (Cc: includes \t \n \r \x1c-\x1f \x7f-\x9f), line and paragraph
# separators, and lone surrogates (undecodable bytes).
_UNWRITABLE = {"Cc", "Zl", "Zp", "Cs"}


def name_problem(text: str | os.PathLike) -> str | None:
    """Why ``text`` (a file name or path) cannot be one annotation line, or None."""
    text = os.fspath(text)
    if text.isascii() and text.isprintable():
        return None  # the usual case, decided without looking at each character
    for char in text:
        category = unicodedata.category(char)
        if category in _UNWRITABLE:
            return ("its name is not valid UTF-8" if category == "Cs"
                    else f"its name holds the control character {_escape(char)}")
    return None


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name in ``cls_classes.txt``, or None.

    The rules of a class folder's name, wherever a name comes from (a folder, a checkpoint,
    an ``.onnx`` model's metadata), so any writer can use it as one folder name: one path
    component (no separator, not ``.`` or ``..``), not hidden (hidden folders are not
    scanned), and one annotation line.
    """
    if not name.strip():
        return "a class name cannot be empty or only whitespace"
    if name != name.strip():
        return "a class name cannot start or end with whitespace"
    if "/" in name or "\\" in name or "\0" in name:
        return "a class name cannot hold a path separator"
    if name.startswith("."):
        return "a class name cannot start with '.' (hidden folders are not read)"
    problem = name_problem(name)
    return problem and problem.replace("its name", "the name")


def same_names(names: Iterable[str]) -> list[str] | None:
    """Names that differ only in their Unicode form (``é`` as one character or two, as macOS
    writes it), sorted; None when there are none.  Such folders look the same everywhere."""
    forms: dict[str, list[str]] = {}
    for name in names:
        forms.setdefault(unicodedata.normalize("NFC", name), []).append(name)
    return next((sorted(same) for same in forms.values() if len(same) > 1), None)


def shown(path: str | os.PathLike) -> str:
    """``path`` as it can be printed on one line: undecodable bytes as ``\\xNN``, control
    characters and line separators escaped, everything else (accents, CJK, ...) as is."""
    return "".join(_escape(c) if unicodedata.category(c) in _UNWRITABLE else c
                   for c in os.fsdecode(path))


def _escape(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # the byte that os.fsdecode could not decode
        return f"\\x{ord(char) - 0xdc00:02x}"
    return repr(char)[1:-1]
