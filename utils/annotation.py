"""Annotation files: the class list and the ``<class_id>;<path>`` image lists.

``txt_annotation.py`` writes three files from ``datasets/{train,test}/<class>/``:

* ``model_data/cls_classes.txt``: the sorted train class folder names, one per line;
  line *i* is the name of class id *i*;
* ``cls_train.txt`` / ``cls_test.txt``: one ``<class_id>;<path>`` line per usable image.

Paths are written relative to the folder holding the annotation file (the project root by
default) when the image lies inside it, with ``/`` separators, so a project folder can be
moved or shared as a whole; images elsewhere get absolute paths.  Reading resolves relative
paths against that same folder, so the lists work from any working directory.

Before an image is listed it is fully decoded with :func:`utils.image.load_image`, in a
process pool; verdicts are cached by (path, size, mtime) so that re-runs over 60,000 images
take seconds.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import PIL
from tqdm import tqdm

from utils.cli import UserError, warn
from utils.image import IMAGE_EXTENSIONS, image_problem, is_image_file, pixel_limit

DEFAULT_CLASSES = "model_data/cls_classes.txt"
#: The annotation file of each split, as txt_annotation.py writes them (in the project root).
ANNOTATION_FILES = {"train": "cls_train.txt", "test": "cls_test.txt"}
_HINT = "run `python txt_annotation.py` first"


# ---------------------------------------------------------------------------------------------
# Reading and writing


def read_classes(path: str | os.PathLike = DEFAULT_CLASSES) -> list[str]:
    """The class names, in class-id order, from a ``cls_classes.txt`` file."""
    text = _read_text(path, "class list")
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    if not classes:
        raise UserError(f"class list {path} is empty: {_HINT}")
    return classes


def read_annotation(path: str | os.PathLike,
                    num_classes: int | None = None) -> list[tuple[int, str]]:
    """``(class_id, image_path)`` pairs from an annotation file, in file order.

    Relative image paths are resolved against the annotation file's folder.  With
    ``num_classes`` given, a class id outside ``[0, num_classes)`` is an error (a list written
    for another class list).
    """
    text = _read_text(path, "annotation file")
    base = os.path.dirname(os.fspath(path))
    samples = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        # Split at the first ';' only: the label never holds one, a file name may.
        label, sep, image = line.partition(";")
        if not sep or not label.strip().isdecimal() or not image.strip():
            raise UserError(f"{path}:{lineno}: malformed line {line[:80]!r}, expected "
                            f"<class_id>;<path> ({_HINT} to rewrite it)")
        class_id = int(label)
        if num_classes is not None and class_id >= num_classes:
            raise UserError(f"{path}:{lineno}: class id {class_id} is out of range for "
                            f"{num_classes} classes (stale annotations? {_HINT})")
        samples.append((class_id, os.path.join(base, image)))
    if not samples:
        raise UserError(f"annotation file {path} lists no images: {_HINT}")
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
    return _write_if_changed(Path(path), "".join(f"{name}\n" for name in classes))


def write_annotation(path: str | os.PathLike, samples: Iterable[tuple[int, str]]) -> bool:
    """Write ``<class_id>;<path>`` lines; returns False when the file was already identical."""
    path = Path(path)
    base = os.path.abspath(path.parent)
    text = "".join(f"{label};{annotation_path(image, base)}\n" for label, image in samples)
    return _write_if_changed(path, text)


def _write_if_changed(path: Path, text: str) -> bool:
    """:func:`_write_atomic` unless the file already holds ``text``; True if written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    _write_atomic(path, text)
    return True


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temp file and a rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Scanning dataset folders


@dataclass
class SplitScan:
    """What one split folder (``datasets/train`` or ``datasets/test``) holds."""

    images: dict[str, list[str]] = field(default_factory=dict)  #: class -> sorted image paths
    ignored: list[str] = field(default_factory=list)  #: files without an image extension


def find_classes(split_dir: str | os.PathLike) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``split_dir``."""
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def scan_split(split_dir: str | os.PathLike) -> SplitScan:
    """Image files per class folder of ``split_dir`` (searched recursively).

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``, ...) are skipped
    silently; other files without an image extension, including loose files next to the
    class folders, are returned in ``ignored`` so the user can be told.
    """
    scan = SplitScan()
    with os.scandir(split_dir) as entries:
        scan.ignored = sorted(e.path for e in entries
                              if not e.is_dir() and not e.name.startswith("."))
    for name in find_classes(split_dir):
        files = []
        for folder, subdirs, names in os.walk(os.path.join(split_dir, name)):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            for file in names:
                if is_image_file(file):
                    files.append(os.path.join(folder, file))
                elif not file.startswith("."):
                    scan.ignored.append(os.path.join(folder, file))
        scan.images[name] = sorted(files)
    return scan


# ---------------------------------------------------------------------------------------------
# Checking images


def check_images(paths: Sequence[str], workers: int = 1,
                 cache_file: str | os.PathLike | None = None) -> dict[str, str]:
    """Fully decode every file; returns ``{path: reason}`` for those that fail.

    Decoding runs in ``workers`` processes (in this process when ``workers <= 1``).  With
    ``cache_file``, verdicts are remembered per (path, size, mtime) so a re-run only decodes
    new or changed files; the whole cache is dropped when Pillow's version or the pixel limit
    changes, since either can change a verdict.
    """
    version = f"pillow {PIL.__version__}, max pixels {pixel_limit()}"
    cache = _read_cache(cache_file, version)
    keys = {p: os.path.abspath(p) for p in paths}
    stamps = {p: _stamp(p) for p in paths}  # taken before decoding: a later edit re-checks
    verdicts, todo = {}, []
    for p in paths:
        entry = cache.get(keys[p])
        if entry is not None and stamps[p] is not None and entry[:2] == stamps[p]:
            verdicts[p] = entry[2]
        else:
            todo.append(p)
    for p, reason in zip(todo, _decode_all(todo, workers)):
        verdicts[p] = reason
    if cache_file is not None:
        entries = {keys[p]: [*stamps[p], verdicts[p]] for p in paths if stamps[p]}
        _write_atomic(Path(cache_file), json.dumps({"version": version, "files": entries}))
    return {p: reason for p, reason in verdicts.items() if reason is not None}


def _decode_all(paths: list[str], workers: int) -> Iterator[str | None]:
    """:func:`image_problem` for each path, in order, with a progress bar on a terminal."""
    with tqdm(total=len(paths), desc="checking images", unit="img", disable=None,
              leave=False) as bar:
        if workers <= 1 or len(paths) < 2:
            for p in paths:
                yield image_problem(p)
                bar.update()
            return
        chunk = max(1, min(256, len(paths) // (4 * workers)))
        with ProcessPoolExecutor(min(workers, len(paths))) as pool:
            for reason in pool.map(image_problem, paths, chunksize=chunk):
                yield reason
                bar.update()


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _read_cache(file: str | os.PathLike | None, version: str) -> dict[str, list]:
    if file is None:
        return {}
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
        if data["version"] == version and isinstance(data["files"], dict):
            return data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: check everything again
    return {}


# ---------------------------------------------------------------------------------------------
# Building the annotation files


def prepare_annotations(datasets: str | os.PathLike = "datasets",
                        classes_file: str | os.PathLike = DEFAULT_CLASSES,
                        out_dir: str | os.PathLike = ".", workers: int = 1) -> None:
    """Scan ``datasets/{train,test}``, check every image, write the class list and the lists.

    Unusable images are skipped with one warning each (path + reason) and a count per class
    is printed.  Files are only rewritten when their content changes, so a re-run on the same
    data touches nothing.  Verdicts are cached in ``<out_dir>/.cache/`` to keep re-runs fast.
    """
    datasets, out_dir = Path(datasets), Path(out_dir)
    splits = {split: datasets / split for split in ("train", "test")}
    for folder in splits.values():
        if not folder.is_dir():
            raise UserError(f"{folder}/ not found: put images in {datasets}/train/<class>/ and "
                            f"{datasets}/test/<class>/, or run `python txt_annotation.py "
                            f"--cifar10` (or `--from PATH`)")
    classes = find_classes(splits["train"])
    if not classes:
        raise UserError(f"{splits['train']}/ has no class folders: put each class's images "
                        f"in {splits['train']}/<class>/")
    scans = {split: scan_split(folder) for split, folder in splits.items()}
    strays = sorted(set(scans["test"].images) - set(classes))
    if strays:
        raise UserError(f"test class {', '.join(map(repr, strays))} has no folder in "
                        f"{splits['train']}/ (the class list comes from the train folders)")
    ignored = scans["train"].ignored + scans["test"].ignored
    if ignored:
        shown = ", ".join(ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        warn(f"ignored {len(ignored)} file(s) without an image extension ({shown}); "
             f"images must end in {', '.join(IMAGE_EXTENSIONS)}")

    every = [p for scan in scans.values() for files in scan.images.values() for p in files]
    problems = check_images(every, workers, cache_file=out_dir / ".cache" / "image-checks.json")
    for path, reason in problems.items():
        warn(f"skipped {path}: {reason}")

    # counts[name] = [usable train, usable test, skipped]
    counts = {name: [0, 0, 0] for name in classes}
    samples: dict[str, list[tuple[int, str]]] = {split: [] for split in splits}
    for column, split in enumerate(splits):
        for class_id, name in enumerate(classes):
            for path in scans[split].images.get(name, []):
                if path in problems:
                    counts[name][2] += 1
                else:
                    counts[name][column] += 1
                    samples[split].append((class_id, path))
    _print_counts(counts)
    for column, folder in enumerate(splits.values()):
        for name in classes:
            if counts[name][column] == 0:
                warn(f"class {name!r} has no usable images in {folder / name}/")
    if not samples["train"]:
        raise UserError(f"no usable training images in {splits['train']}/")

    outputs = [(Path(classes_file), write_classes(classes_file, classes), len(classes), "classes")]
    for split in splits:
        path = out_dir / ANNOTATION_FILES[split]
        outputs.append((path, write_annotation(path, samples[split]), len(samples[split]),
                        "images"))
    for path, changed, count, noun in outputs:
        print(f"{path}: {count} {noun} ({'written' if changed else 'unchanged'})")


def _print_counts(counts: dict[str, list[int]]) -> None:
    """The per-class table: usable train / test images and skipped files."""
    width = max(len("class"), *map(len, counts))
    rows = [*counts.items(), ("total", [sum(column) for column in zip(*counts.values())])]
    print(f"{'class':<{width}}  {'train':>7}  {'test':>7}  {'skipped':>7}")
    for name, (train, test, skipped) in rows:
        print(f"{name:<{width}}  {train:>7}  {test:>7}  {skipped:>7}")
