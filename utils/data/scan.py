"""Scanning a dataset's split folders: which image files each class folder holds.

Links.  A dataset may keep its images elsewhere (``datasets/train -> /data/train``, a class
folder or an image linked from another disk), so links are followed when they lead outside
the split folders.  A link into a split folder (train/, val/, test/; :func:`split_folders`
names them), or to a folder holding
one, would list the same files twice -- a class linked to train/ or to another class, a
test class linked to its train class -- so it is refused: an error for a class folder, a
skipped entry below one.  On top of that, files are identified by (device, inode), so a
file reached twice (hard links, two links to one outside folder) is listed once: under
two classes it is skipped in both, since its label is ambiguous.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from utils.cli import UserError
from utils.data.image import is_image_file
from utils.layout import SPLIT_ALIASES, SPLITS
from utils.names import class_name_problem, name_problem, same_names, shown


@dataclass
class SplitScan:
    """What one split folder (``datasets/train`` or ``datasets/test``) holds."""

    images: dict[str, list[str]] = field(default_factory=dict)  #: class -> sorted image paths
    ignored: list[str] = field(default_factory=list)  #: files without an image extension
    #: Files and folders that cannot be listed -> why (a name that cannot be written, a link
    #: into a split, a file seen twice).  The images among them are also in ``images``, so
    #: they are counted as skipped.
    unusable: dict[str, str] = field(default_factory=dict)


def split_folders(dataset: str | os.PathLike) -> dict[str, str]:
    """The split folders of ``dataset``: split name -> folder, in :data:`SPLITS` order.

    The validation folder may also be called ``valid/`` or ``validation/``
    (:data:`~utils.layout.SPLIT_ALIASES`); two folders for one split are a
    :class:`UserError`, since either choice would silently drop the other's images.
    """
    found: dict[str, str] = {}
    for name in (*SPLITS, *SPLIT_ALIASES):
        folder = os.path.join(dataset, name)
        if not os.path.isdir(folder):
            continue
        split = SPLIT_ALIASES.get(name, name)
        if split in found:
            raise UserError(f"{shown(dataset)} holds both {os.path.basename(found[split])}/ "
                            f"and {name}/, two {split} folders: merge them into one")
        found[split] = folder
    return {split: found[split] for split in SPLITS if split in found}


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
    folders += [os.path.realpath(os.path.join(dataset, name))
                for name in (*SPLITS, *SPLIT_ALIASES)
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
