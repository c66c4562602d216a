"""Annotation files: the class list and the ``<class_id>;<path>`` image lists.

``txt_annotation.py`` writes four files from ``datasets/{train,val,test}/<class>/``:

* ``model_data/cls_classes.txt``: the sorted train class folder names, one per line;
  line *i* is the name of class id *i*;
* ``cls_train.txt`` / ``cls_val.txt`` / ``cls_test.txt``: one ``<class_id>;<path>`` line per
  usable image.  Training learns from the first, picks its best epoch on the second, and
  reports the third once, at the end.  Without a ``val/`` (or ``test/``) folder, that set is
  carved out of ``train/`` (:mod:`utils.data.splits`).

The four files are one unit: each list starts with a comment line holding the fingerprint
of the class list it was written for (``# classes: 10, fingerprint 3f2a9c1b7d4e``), and
reading a list against another class list is an error, so ids can never silently point at
the wrong names.  Lists without that line (written by hand) are still read.

Paths are written relative to the folder holding the annotation file (the project root by
default) when the image lies inside it, with ``/`` separators, so a project folder can be
moved or shared as a whole; images elsewhere get absolute paths.  Reading resolves relative
paths against that same folder, so the lists work from any working directory.

Before an image is listed it is fully decoded with :func:`utils.data.image.load_image`, in a
process pool; verdicts are cached by path and file stamp so that re-runs over 60,000 images
take seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import PIL
from tqdm import tqdm

from utils.data import splits
from utils.cli import UserError, warn
from utils.fileio import write_atomic
from utils.data.image import IMAGE_EXTENSIONS, image_problem, is_image_file, pixel_limit
from utils.names import class_name_problem, name_problem, same_names, shown

DEFAULT_CLASSES = "model_data/cls_classes.txt"
#: The annotation file of each split, as txt_annotation.py writes them (in the project root).
ANNOTATION_FILES = {"train": "cls_train.txt", "val": "cls_val.txt", "test": "cls_test.txt"}
SPLITS = tuple(ANNOTATION_FILES)
#: Largest / smallest training class above which the import suggests class weights.
IMBALANCE_WARNING = 3.0
_HINT = "run `python txt_annotation.py` first"
_FINGERPRINT = re.compile(r"^# classes: (\d+), fingerprint ([0-9a-f]{12})$")


# ---------------------------------------------------------------------------------------------
# Reading and writing


def read_classes(path: str | os.PathLike = DEFAULT_CLASSES) -> list[str]:
    """The class names, in class-id order, from a ``cls_classes.txt`` file."""
    text = _read_text(path, "class list")
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    if not classes:
        raise UserError(f"class list {path} is empty: {_HINT}")
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
    return _write_if_changed(Path(path), "".join(f"{name}\n" for name in classes))


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
    return _write_if_changed(path, text)


def _write_if_changed(path: Path, text: str) -> bool:
    """:func:`~utils.fileio.write_atomic` unless the file already holds ``text``; True if
    written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: writing it says why, if it cannot be written either
    write_atomic(path, text)
    return True


# ---------------------------------------------------------------------------------------------
# Scanning dataset folders


# Links.  A dataset may keep its images elsewhere (``datasets/train -> /data/train``, a class
# folder or an image linked from another disk), so links are followed when they lead outside
# the split folders.  A link into a split folder (train/, val/, test/), or to a folder holding
# one, would list the same files twice -- a class linked to train/ or to another class, a
# test class linked to its train class -- so it is refused: an error for a class folder, a
# skipped entry below one.  On top of that, files are identified by (device, inode), so a
# file reached twice (hard links, two links to one outside folder) is listed once: under
# two classes it is skipped in both, since its label is ambiguous.

#: Sub-folders of a dataset that are scanned: a link must not lead into (or around) one.
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SplitScan:
    """What one split folder (``datasets/train`` or ``datasets/test``) holds."""

    images: dict[str, list[str]] = field(default_factory=dict)  #: class -> sorted image paths
    ignored: list[str] = field(default_factory=list)  #: files without an image extension
    #: Files and folders that cannot be listed -> why (a name that cannot be written, a link
    #: into a split, a file seen twice).  The images among them are also in ``images``, so
    #: they are counted as skipped.
    unusable: dict[str, str] = field(default_factory=dict)


def find_classes(split_dir: str | os.PathLike) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``split_dir``: the class folders.

    A name that cannot round-trip through ``cls_classes.txt`` (see :mod:`utils.names`), two
    names that differ only in their Unicode form, and a class folder that links into a split
    folder are a :class:`UserError` naming the folder, raised before anything is written.
    """
    splits = _split_folders(split_dir)
    names = []
    for entry in _split_entries(split_dir):
        if entry.name.startswith(".") or not _is_dir(entry):
            continue
        problem = class_name_problem(entry.name)
        if problem:
            raise UserError(f"class folder '{shown(entry.path)}' cannot be used: {problem} "
                            f"(rename the folder)")
        problem = _link_problem(entry, splits)
        if problem:
            raise UserError(f"class folder {shown(entry.path)} cannot be used: {problem}")
        names.append(entry.name)
    same = same_names(names)
    if same:
        raise UserError(f"class folders {' and '.join(map(repr, same))} in {shown(split_dir)}/ "
                        f"are one name written in two Unicode forms: merge them")
    return sorted(names)


def scan_splits(folders: dict[str, str | os.PathLike]) -> dict[str, SplitScan]:
    """Image files per class folder (searched recursively) of each split folder of a dataset.

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``, ...) are skipped
    silently; other files without an image extension, including loose files next to the
    class folders, are returned in ``ignored`` so the user can be told.  No file is listed
    twice (see the notes on links above): ``folders`` go in order, train first, and a file
    found in two splits is kept in the first only (a test image must not be a training
    image); one under two classes is kept in none.
    """
    scanned = {split: _scan(folder) for split, folder in folders.items()}
    _drop_twins(list(scanned.values()))
    return {split: scan for split, (scan, _) in scanned.items()}


def _scan(split_dir) -> tuple[SplitScan, dict[str, tuple[int, int]]]:
    """One split's :class:`SplitScan`, and the (device, inode) of each image listed."""
    problem = name_problem(os.path.abspath(split_dir))
    if problem:  # every image path would hold it
        raise UserError(f"{shown(os.path.abspath(split_dir))}/ cannot be used: {problem}, "
                        f"and its image paths could not be written to the annotation files")
    scan, identities = SplitScan(), {}
    scan.ignored = sorted(e.path for e in _split_entries(split_dir)
                          if not e.name.startswith(".") and not _is_dir(e))
    splits = _split_folders(split_dir)
    for name in find_classes(split_dir):
        # Per class: one folder linked under two classes must show up under both, so that
        # its files are seen to be twins.
        walked: dict[tuple[int, int], str] = {}
        files, todo = [], [os.path.join(split_dir, name)]
        while todo:
            folder = todo.pop()
            listed = _listing(folder, walked)
            if isinstance(listed, str):
                scan.unusable[folder] = listed
                continue
            entries, device = listed
            for entry in entries:
                problem = name_problem(entry.name) or _link_problem(entry, splits)
                if _is_dir(entry):
                    if problem:
                        scan.unusable[entry.path] = problem
                    else:
                        todo.append(entry.path)
                elif not is_image_file(entry.name):
                    scan.ignored.append(entry.path)
                else:
                    files.append(entry.path)
                    if problem:
                        scan.unusable[entry.path] = problem
                    else:
                        identity = _identity(entry, device)
                        if identity:  # else a broken link: checking the image says so
                            identities[entry.path] = identity
        scan.images[name] = sorted(files)
    return scan, identities


def _split_entries(split_dir) -> list[os.DirEntry]:
    """The entries of a split folder; one that cannot be listed is a :class:`UserError`."""
    try:
        with os.scandir(split_dir) as entries:
            return list(entries)
    except OSError as exc:
        raise UserError(f"cannot read {shown(split_dir)}/: {exc.strerror or exc}") from None


def _listing(folder: str, walked: dict[tuple[int, int], str]
             ) -> tuple[list[os.DirEntry], int] | str:
    """The non-hidden entries of ``folder`` and its device, or why it is not walked.

    ``walked`` maps the (device, inode) of the folders of this class walked so far to their
    path: a folder reached again (through links, maybe in a loop) is walked once.
    """
    try:
        info = os.stat(folder)
        key = (info.st_dev, info.st_ino)
        if key in walked:
            return f"the same folder as {shown(walked[key])}, reached again through a link"
        walked[key] = folder
        with os.scandir(folder) as listing:
            return [e for e in listing if not e.name.startswith(".")], info.st_dev
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def _identity(entry: os.DirEntry, device: int) -> tuple[int, int] | None:
    """(device, inode) of the file ``entry`` is or links to; None for a broken link."""
    if not entry.is_symlink():
        return device, entry.inode()  # the listing carries it: no system call
    try:
        target = entry.stat()
    except OSError:
        return None
    return target.st_dev, target.st_ino


def _split_folders(split_dir) -> list[str]:
    """Real paths of ``split_dir`` and then of its sibling split folders."""
    dataset = os.path.dirname(os.path.abspath(split_dir))
    folders = [os.path.realpath(split_dir)]
    folders += [os.path.realpath(os.path.join(dataset, name)) for name in SPLIT_NAMES
                if os.path.isdir(os.path.join(dataset, name))]
    return list(dict.fromkeys(folders))


def _link_problem(entry: os.DirEntry, splits: list[str]) -> str | None:
    """Why link ``entry`` must not be followed (see the notes on links), or None."""
    if not entry.is_symlink() or not os.path.exists(entry.path):
        return None  # not a link, or a broken one: checking the image says so
    target = os.path.realpath(entry.path)
    for split in splits:
        where = {split: "inside", target: "around"}.get(os.path.commonpath([target, split]))
        if where:
            return (f"it links to {shown(target)}, {where} the split folder {shown(split)}, so "
                    f"its images would be listed twice (only links out of the splits are "
                    f"followed)")
    return None


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, False for a link that loops or cannot be followed."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _drop_twins(scanned: list[tuple[SplitScan, dict[str, tuple[int, int]]]]) -> None:
    """Mark every listing of a file after its first as unusable, and all of them when the
    file is under two classes."""
    places: dict[tuple[int, int], list[tuple[SplitScan, str, str]]] = {}
    for scan, identities in scanned:
        for name, paths in scan.images.items():
            for path in paths:
                if path in identities and path not in scan.unusable:
                    places.setdefault(identities[path], []).append((scan, name, path))
    for found in places.values():
        if len({name for _, name, _ in found}) > 1:
            for scan, name, path in found:
                other = next(p for _, n, p in found if n != name)
                scan.unusable[path] = (f"the same file as {shown(other)}, of another class: "
                                       f"one image cannot have two labels")
        else:
            for scan, _, path in found[1:]:
                scan.unusable[path] = f"the same file as {shown(found[0][2])}, listed once"


# ---------------------------------------------------------------------------------------------
# Checking images


def check_images(paths: Sequence[str], workers: int = 1,
                 cache_file: str | os.PathLike | None = None) -> dict[str, str]:
    """Fully decode every file; returns ``{path: reason}`` for those that fail.

    Decoding runs in ``workers`` processes (in this process when ``workers <= 1``).  With
    ``cache_file``, verdicts are remembered per path and :func:`_stamp` so a re-run only
    decodes new or changed files; the whole cache is dropped when Pillow's version or the
    pixel limit changes, since either can change a verdict.  A cache that cannot be saved
    is only a warning: the next run checks everything again.
    """
    version = f"stamps 2, pillow {PIL.__version__}, max pixels {pixel_limit()}"
    cache = _read_cache(cache_file, version)
    keys = {p: os.path.abspath(p) for p in paths}
    stamps = {p: _stamp(p) for p in paths}  # taken before decoding: a later edit re-checks
    verdicts, todo = {}, []
    for p in paths:
        entry = cache.get(keys[p])
        if (stamps[p] is not None and isinstance(entry, list) and entry[:-1] == stamps[p]
                and isinstance(entry[-1], (str, type(None)))):
            verdicts[p] = entry[-1]
        else:
            todo.append(p)
    for p, reason in zip(todo, _decode_all(todo, workers)):
        verdicts[p] = reason
    if cache_file is not None:
        entries = {keys[p]: [*stamps[p], verdicts[p]] for p in paths if stamps[p]}
        try:
            write_atomic(Path(cache_file), json.dumps({"version": version, "files": entries}))
        except UserError as exc:
            warn(f"image checks not cached ({exc}): the next run checks every image again")
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
    """Size, mtime, change time and inode: one version of a file, known without reading it.

    The mtime alone can be set back (``cp -p``, ``tar x``, ``touch -r`` restore it), so an
    image replaced by one of the same size would pass for the old one; the change time
    cannot be set from user space and moves on every write, rename or ``utime()``, and a
    file replaced by another gets a new inode or a new change time.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


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
                        out_dir: str | os.PathLike = ".", workers: int = 1,
                        val_fraction: float = 0.1, test_fraction: float = 0.1,
                        seed: int = 0) -> None:
    """Scan ``datasets/{train,val,test}``, check every image, write the class list and lists.

    ``val/`` and ``test/`` are optional: a missing (or image-less) one is carved out of
    ``train/``, ``val_fraction`` / ``test_fraction`` of each class (:mod:`utils.data.splits`,
    stable across re-runs).  Unusable images are skipped with one warning each (path +
    reason) and a count per class and split is printed, with the class imbalance.  Files
    are only rewritten when their content changes, so a re-run on the same data touches
    nothing.  Verdicts are cached in ``<out_dir>/.cache/`` to keep re-runs fast.
    """
    datasets, out_dir = Path(datasets), Path(out_dir)
    train_dir = datasets / "train"
    if not train_dir.is_dir():
        raise UserError(f"{train_dir}/ not found: put images in {train_dir}/<class>/ (and "
                        f"optionally {datasets}/val/<class>/ and {datasets}/test/<class>/), "
                        "or run `python txt_annotation.py --cifar10` (or `--from PATH`)")
    classes = find_classes(train_dir)
    if not classes:
        raise UserError(f"{train_dir}/ has no class folders: put each class's images "
                        f"in {train_dir}/<class>/")
    folders = {split: datasets / split for split in SPLITS if (datasets / split).is_dir()}
    scans = scan_splits(folders)
    for split in ("val", "test"):
        strays = sorted(set(scans.get(split, SplitScan()).images) - set(classes))
        if strays:
            raise UserError(f"{split} class {', '.join(map(repr, strays))} has no folder in "
                            f"{train_dir}/ (the class list comes from the train folders)")
    ignored = [path for scan in scans.values() for path in scan.ignored]
    if ignored:
        listed = ", ".join(map(shown, ignored[:3])) + (", ..." if len(ignored) > 3 else "")
        warn(f"ignored {len(ignored)} file(s) without an image extension ({listed}); "
             f"images must end in {', '.join(IMAGE_EXTENSIONS)}")

    unusable = {path: why for scan in scans.values() for path, why in scan.unusable.items()}
    every = [p for scan in scans.values() for files in scan.images.values() for p in files
             if p not in unusable]
    problems = {**unusable, **check_images(every, workers,
                                           cache_file=out_dir / ".cache" / "image-checks.json")}
    for path, reason in problems.items():
        warn(f"skipped {shown(path)}: {reason}")
    usable = {split: {name: [p for p in scan.images.get(name, []) if p not in problems]
                      for name in classes} for split, scan in scans.items()}
    skipped = {name: sum(p in problems for scan in scans.values()
                         for p in scan.images.get(name, [])) for name in classes}

    sources = {"train": f"{train_dir}/"}
    carved = {}  # the held-out sets without images of their own, test first
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if not any(usable.get(split, {}).values()):
            carved[split] = fraction
            if split in folders and fraction > 0:
                warn(f"{folders[split]}/ has no usable images: held out {fraction:.0%} of each "
                     f"class of {train_dir}/ as the {split} set instead")
            sources[split] = (f"{fraction:.0%} of each class of {train_dir}/ (no images in "
                              f"{datasets / split}/; --{split}-fraction {fraction:g})"
                              if fraction > 0 else f"none (no images in {datasets / split}/ "
                              f"and --{split}-fraction 0)")
            continue
        sources[split] = f"{folders[split]}/"
        for name in classes:
            if split == "val" and (folders[split] / name).is_dir() and not usable[split][name]:
                raise UserError(f"{folders[split] / name}/ has no usable images: add some, or "
                                f"remove the folder to validate without {name!r}")
    if carved:
        for split in carved:
            usable[split] = {}
        for name in classes:
            usable["train"][name], held = splits.carve(usable["train"][name], carved, seed,
                                                       train_dir)
            for split, paths in held.items():
                usable[split][name] = paths

    counts = {name: [len(usable[split][name]) for split in SPLITS] + [skipped[name]]
              for name in classes}
    _print_counts(counts)
    for split in SPLITS:
        print(f"{split:<5} images: {sources[split]}")
    _warn_about_counts(counts, classes, train_dir, val_fraction)
    for column, split in enumerate(SPLITS[1:], 1):
        if split in folders and split not in carved:
            for name in classes:
                if not counts[name][column]:
                    warn(f"class {name!r} has no usable images in {folders[split] / name}/: "
                         f"it is not in {ANNOTATION_FILES[split]}")
    if not any(usable["train"].values()):
        raise UserError(f"no usable training images in {train_dir}/")

    samples = {split: [(class_id, path) for class_id, name in enumerate(classes)
                       for path in usable[split][name]] for split in SPLITS}
    write_annotations(classes, samples, classes_file, out_dir)


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


def _warn_about_counts(counts: dict[str, list[int]], classes: Sequence[str], train_dir: Path,
                       val_fraction: float) -> None:
    """Empty classes, classes too small to validate, and class imbalance."""
    for name in classes:
        train, val, test, _ = counts[name]
        if train == 0:
            warn(f"class {name!r} has no usable images in {train_dir / name}/: there is "
                 "nothing to learn it from")
        elif train == 1 and val == 0 and val_fraction > 0:
            warn(f"class {name!r} has 1 usable training image: kept for training, none held "
                 "out to validate it (add images)")
    trained = {name: counts[name][0] for name in classes if counts[name][0]}
    if len(set(trained.values())) > 1:
        largest, smallest = max(trained, key=trained.get), min(trained, key=trained.get)
        ratio = trained[largest] / trained[smallest]
        print(f"imbalance: {largest!r} has {ratio:.1f}x the training images of {smallest!r}")
        if ratio >= IMBALANCE_WARNING:
            warn(f"classes are imbalanced ({ratio:.1f}x): top-1 favours the large classes; "
                 "watch mean recall, and consider `train.py --class-weights auto`")


def _print_counts(counts: dict[str, list[int]]) -> None:
    """The per-class table: usable train / val / test images and skipped files."""
    width = max(len("class"), *map(len, counts))
    rows = [*counts.items(), ("total", [sum(column) for column in zip(*counts.values())])]
    print(f"{'class':<{width}}  " + "  ".join(f"{h:>7}" for h in (*SPLITS, "skipped")))
    for name, numbers in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{n:>7}" for n in numbers))
