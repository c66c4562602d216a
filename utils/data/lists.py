"""Annotation files: the class list and the ``<class_id>;<path>`` image lists.

``txt_annotation.py`` writes four files from ``datasets/{train,val,test}/<class>/``
(:mod:`utils.data.prepare`):

* ``model_data/cls_classes.txt``: the sorted train class folder names, one per line;
  line *i* is the name of class id *i*;
* ``cls_train.txt`` / ``cls_val.txt`` / ``cls_test.txt``: one ``<class_id>;<path>`` line per
  usable image.  Training learns from the first, picks its best epoch on the second, and
  reports the third once, at the end.

The four files are one unit: each list starts with a comment line holding the fingerprint
of the class list it was written for (``# classes: 10, fingerprint 3f2a9c1b7d4e``), and
reading a list against another class list is an error, so ids can never silently point at
the wrong names.  Lists without that line (written by hand) are still read.

Paths are written relative to the folder holding the annotation file (the project root by
default) when the image lies inside it, with ``/`` separators, so a project folder can be
moved or shared as a whole; images elsewhere get absolute paths.  Reading resolves relative
paths against that same folder, so the lists work from any working directory.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from utils.cli import UserError
from utils.fileio import write_if_changed
from utils.layout import ANNOTATION_FILES, DEFAULT_CLASSES, SPLITS
from utils.names import class_name_problem, shown

_HINT = "run `python txt_annotation.py` first"
_FINGERPRINT = re.compile(r"^# classes: (\d+), fingerprint ([0-9a-f]{12})$")


def read_classes(path: str | os.PathLike = DEFAULT_CLASSES) -> list[str]:
    """The class names, in class-id order, from a ``cls_classes.txt`` file."""
    text = _read_text(path, "class list")
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    if not classes:
        raise UserError(f"class list {path} is empty: {_HINT}")
    for name in classes:  # a hand-written list is held to the class folders' rules
        problem = class_name_problem(name)
        if problem:
            raise UserError(f"class list {path}: {shown(name)!r} cannot be a class name: "
                            f"{problem}")
    return classes


def class_fingerprint(classes: Sequence[str]) -> str:
    """A short hash of a class list, in order: what an annotation file was written for."""
    return hashlib.sha1("\n".join(classes).encode("utf-8", "surrogateescape")).hexdigest()[:12]


def read_annotation(path: str | os.PathLike, classes: Sequence[str] | None = None, *,
                    allow_empty: bool = False) -> list[tuple[int, str]]:
    """``(class_id, image_path)`` pairs from an annotation file, in file order.

    Relative image paths are resolved against the annotation file's folder.  With
    ``classes`` given, a file written for another class list (its fingerprint line) or a
    class id outside the list is an error.  An empty list is an error unless
    ``allow_empty`` (a validation set of fraction 0).
    """
    text = _read_text(path, "annotation file")
    base = os.path.dirname(os.fspath(path))
    samples = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            written_for = _FINGERPRINT.match(line)
            if written_for and classes is not None \
                    and written_for[2] != class_fingerprint(classes):
                raise UserError(f"{path} was written for another class list ({written_for[1]} "
                                f"classes) than the one in use ({len(classes)} classes): "
                                "re-run `python txt_annotation.py`")
            continue
        if not line.strip():
            continue
        # Split at the first ';' only: the label never holds one, a file name may.
        label, sep, image = line.partition(";")
        if not sep or not label.strip().isdecimal() or not image.strip():
            raise UserError(f"{path}:{lineno}: malformed line {line[:80]!r}, expected "
                            f"<class_id>;<path> ({_HINT} to rewrite it)")
        class_id = int(label)
        if classes is not None and class_id >= len(classes):
            raise UserError(f"{path}:{lineno}: class id {class_id} is out of range for "
                            f"{len(classes)} classes (stale annotations? {_HINT})")
        samples.append((class_id, os.path.join(base, image)))
    if not samples and not allow_empty:
        split = Path(path).stem.removeprefix("cls_")
        raise UserError(f"annotation file {path} lists no images: put images in "
                        f"datasets/{split}/<class>/ (or the dataset folder it was written "
                        f"from), then run `python txt_annotation.py`")
    return samples


def _read_text(path: str | os.PathLike, what: str) -> str:
    """A class list's or annotation file's text; a missing, binary or unreadable file is a
    :class:`UserError` (users pass these paths by hand, and sometimes the wrong one)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found: {_HINT}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text file: {_HINT}") from None
    except OSError as exc:  # a folder, no permission, ...
        raise UserError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None


def annotation_path(image: str | os.PathLike, base: str) -> str:
    """``image`` as written in an annotation file kept in folder ``base`` (absolute path)."""
    full = os.path.abspath(image)
    if full.startswith(base.rstrip(os.sep) + os.sep):
        full = full[len(base.rstrip(os.sep)) + 1:]
    return full.replace(os.sep, "/")


def write_classes(path: str | os.PathLike, classes: Sequence[str]) -> bool:
    """Write the class list; returns False when the file already held exactly that."""
    return write_if_changed(Path(path), "".join(f"{name}\n" for name in classes))


def write_annotation(path: str | os.PathLike, samples: Iterable[tuple[int, str]],
                     classes: Sequence[str] | None = None) -> bool:
    """Write ``<class_id>;<path>`` lines, after the fingerprint line of ``classes`` when
    given; returns False when the file was already identical."""
    path = Path(path)
    base = os.path.abspath(path.parent)
    header = (f"# classes: {len(classes)}, fingerprint {class_fingerprint(classes)}\n"
              if classes is not None else "")
    text = header + "".join(f"{label};{annotation_path(image, base)}\n"
                            for label, image in samples)
    return write_if_changed(path, text)


def write_annotations(classes: Sequence[str], samples: dict[str, list[tuple[int, str]]],
                      classes_file: str | os.PathLike = DEFAULT_CLASSES,
                      out_dir: str | os.PathLike = ".") -> None:
    """Write the class list and every split's list, each list tied to the class list by its
    fingerprint line; print what was written.

    Everything that could fail has been checked before: only the disk can fail here, and a
    list left from before then no longer matches the class list, which reading catches.
    """
    outputs = [(Path(classes_file), write_classes(classes_file, classes), len(classes), "classes")]
    for split in SPLITS:
        path = Path(out_dir) / ANNOTATION_FILES[split]
        outputs.append((path, write_annotation(path, samples[split], classes),
                        len(samples[split]), "images"))
    for path, changed, count, noun in outputs:
        print(f"{path}: {count} {noun} ({'written' if changed else 'unchanged'})")
