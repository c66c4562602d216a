"""Putting a dataset into ``datasets/`` without ever leaving it half-written.

A dataset is built in a hidden staging folder inside the target (same file system, so the
final renames are atomic; hidden, so scans ignore it), checked, and only then renamed into
place as ``train/`` (and ``val/``, ``test/`` when it has them). If anything fails on the
way, the staging folder is removed and the target is exactly as it was; an existing dataset
is only replaced when the caller asks for it. (A run killed outright leaves its
``.staging-*`` folder behind; the next install removes it.)

:func:`import_dataset` fills the staging folder from a folder or an archive (.zip, .tar,
.tar.gz, ...) laid out as ``train/<class>/...`` with optional ``val/<class>/...`` (also
named ``valid/`` or ``validation/``: imported as ``val/``) and ``test/<class>/...``, or simply
as ``<class>/...`` (imported as ``train/``: annotating holds
the validation and test images out of it), either optionally wrapped in one top-level
folder.  Archives come from strangers, so every member is vetted before it is
written, and only ever inside the staging folder: an absolute path, a ``..`` component, a
link or a device file aborts the whole import.  A folder is held to the same rule: it may
hold regular files and folders only (a link could copy in ``/etc/passwd``, or loop).
Hidden files are skipped.  Files are copied byte for byte.

Archives are unpacked by :mod:`utils.data.archives`, which vets every member and counts
every byte, and any import must leave room on the disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable, NoReturn

from utils.cli import UserError
from utils.data.archives import (BLOCK, Budget, extract_tar, extract_zip, max_ratio_setting,
                                 write_file)
from utils.fileio import write_atomic
from utils.data.scan import split_folders
from utils.layout import DATASETS, SPLIT_ALIASES, SPLITS
from utils.names import class_name_problem, same_names, shown

_IGNORED_TOP_LEVEL = {"__MACOSX"}  # resource forks added by macOS's "Compress"


def has_dataset(target: str | os.PathLike) -> bool:
    """True when a split folder of ``target`` holds anything (hidden files aside)."""
    for split in SPLITS:
        folder = Path(target) / split
        try:
            if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
                return True
        except OSError:
            return True  # cannot be listed: never replace it unasked
    return False


#: Where ``target`` records what its dataset was imported from (hidden: scans skip it).
ORIGIN_FILE = ".origin.json"


def origin_of(source: str | os.PathLike) -> dict:
    """What importing ``source`` would put in ``datasets/``: its path and a cheap
    fingerprint (an archive's size and time; a folder's file names, sizes and times), so a
    source edited since its import is told apart from the copy."""
    path = Path(source).resolve()
    if not path.is_dir():
        info = path.stat()
        return {"source": str(path), "fingerprint": f"{info.st_size}:{info.st_mtime_ns}"}
    digest = hashlib.sha1()
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            try:
                info = os.stat(os.path.join(folder, name), follow_symlinks=False)
            except OSError:
                continue
            relative = os.path.relpath(os.path.join(folder, name), path)
            digest.update(f"{relative}:{info.st_size}:{info.st_mtime_ns}\n".encode(
                "utf-8", "surrogateescape"))
    return {"source": str(path), "fingerprint": digest.hexdigest()[:16]}


def held_origin(target: str | os.PathLike) -> dict | None:
    """The origin recorded when ``target``'s dataset was installed (None: unknown)."""
    try:
        value = json.loads((Path(target) / ORIGIN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def install_dataset(target: str | os.PathLike, build: Callable[[Path], None],
                    replace: bool = False, origin: dict | None = None) -> None:
    """Build a dataset with ``build`` and move it into ``target``, all or nothing.

    ``build(staging)`` must create ``staging/train`` and may create ``staging/val`` and
    ``staging/test``.  They replace every split folder of ``target`` (only with
    ``replace``; a split the new dataset lacks is removed too, so no old image stays behind;
    other entries of ``target`` are kept).  On any failure ``target`` is left as it was.
    ``origin`` (see :func:`origin_of`) is recorded beside it.
    """
    target = Path(target)
    if has_dataset(target) and not replace:
        raise UserError(f"{target}/ already holds a dataset (use --force to replace it)")
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is a file, not a folder: move it away or choose another "
                        f"dataset folder")
    created = not target.exists()
    staging = None
    try:
        target.mkdir(parents=True, exist_ok=True)
        for leftover in target.glob(".staging-*"):  # from a run that was killed outright
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
        build(staging)
        if not (staging / "train").is_dir():
            raise UserError("the new dataset has no train/ folder")
        for split in SPLITS:
            if (staging / split).is_dir():
                _check_class_names(staging / split)
        _swap_in(staging, target)
        (target / ORIGIN_FILE).unlink(missing_ok=True)
        if origin is not None:
            write_atomic(target / ORIGIN_FILE, json.dumps(origin))
    except OSError as exc:  # disk full, permissions, ...: the user's to fix
        raise UserError(f"cannot write the dataset into {target}/: {_reason(exc)}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # also drops a replaced dataset
        if created and target.is_dir() and not any(target.iterdir()):
            target.rmdir()


def _check_class_names(split: Path) -> None:
    """Refuse class folders whose names the annotation files could not hold (before they
    reach ``datasets/``, where annotating would refuse them anyway)."""
    names = [e.name for e in os.scandir(split) if not e.name.startswith(".") and e.is_dir()]
    for name in names:
        problem = class_name_problem(name)
        if problem:
            raise UserError(f"the new dataset's class folder '{split.name}/{shown(name)}' "
                            f"cannot be used: {problem} (rename it at the source)")
    same = same_names(names)
    if same:
        raise UserError(f"the new dataset's class folders {' and '.join(map(repr, same))} in "
                        f"{split.name}/ are one name written in two Unicode forms: merge them "
                        f"at the source")


def _reason(exc: OSError) -> str:
    """An OSError in a few words, with the file it is about."""
    if exc.strerror and exc.filename:
        return f"{exc.strerror} ({shown(exc.filename)})"
    return exc.strerror or str(exc)[:200]


def _swap_in(staging: Path, target: Path) -> None:
    """Move ``target``'s split folders into ``staging/old`` and the staged ones into ``target``.

    Renames within one file system are atomic; if one fails, the ones already done are
    undone so the old dataset is back in place.
    """
    (staging / "old").mkdir()
    moves = [(target / s, staging / "old" / s) for s in (*SPLITS, *SPLIT_ALIASES)
             if os.path.lexists(target / s)]  # an old validation/ would be a second val/
    moves += [(staging / s, target / s) for s in SPLITS if (staging / s).is_dir()]
    done = []
    try:
        for src, dst in moves:
            os.rename(src, dst)
            done.append((src, dst))
    except OSError:
        for src, dst in reversed(done):
            os.rename(dst, src)
        raise


# ---------------------------------------------------------------------------------------------
# Importing a folder or an archive


def import_dataset(source: str | os.PathLike, target: str | os.PathLike = DATASETS,
                   replace: bool = False, max_ratio: float | None = None) -> None:
    """Copy the dataset in folder or archive ``source`` into ``target`` (see module notes).

    ``max_ratio`` (default: :func:`max_ratio_setting`) bounds how many times its size an
    archive may unpack to.
    """
    source, target = Path(source), Path(target)
    ratio = max_ratio_setting() if max_ratio is None else max_ratio
    print(f"importing {shown(source)} into {target}/ ...", flush=True)
    try:
        install_dataset(target, _builder(source, target, ratio), replace, origin_of(source))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error,
            NotImplementedError) as exc:  # corrupt archive, unsupported zip compression
        raise UserError(f"cannot read archive {shown(source)}: {exc}") from None
    splits = [f"{s}/" for s in SPLITS if (target / s).is_dir()]
    print(f"imported {shown(source)} into {target}/ ({', '.join(splits)})")


def _builder(source: Path, target: Path, ratio: float) -> Callable[[Path], None]:
    """The function that fills a staging folder from ``source``."""
    if source.is_dir():
        if _overlaps(source, target):
            raise UserError(f"--from {shown(source)} overlaps {target}/: import from another "
                            f"folder")

        def copy(staging: Path) -> None:
            root, splits = _dataset_root(source)
            # everything refused before anything is copied
            files = _vet_folder(root, [Path(folder).name for folder in splits.values()])
            budget = Budget(source, target, None)
            budget.check(sum(size + BLOCK for _, size in files), len(files))
            for relative, _ in files:  # counted again: a file may grow meanwhile
                first, *rest = relative.parts
                into = (staging / SPLIT_ALIASES.get(first, first) if splits
                        else staging / "train" / first)
                _copy(root / relative, into.joinpath(*rest), budget)
        return copy
    if zipfile.is_zipfile(source):
        extract = extract_zip
    elif source.is_file() and _is_tar(source):
        extract = extract_tar
    elif not source.exists():
        raise UserError(f"--from {shown(source)}: no such file or folder")
    else:
        raise UserError(f"--from {shown(source)}: not a folder or a .zip / .tar / .tar.gz "
                        f"archive")

    def unpack(staging: Path) -> None:
        extract(source, staging / "extracted", Budget(source, target, ratio))
        root, splits = _dataset_root(staging / "extracted", name=source)
        if not splits:
            os.rename(root, staging / "train")
        for split, folder in splits.items():
            os.rename(folder, staging / split)
    return unpack


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _dataset_root(folder: Path, name: Path | None = None) -> tuple[Path, dict[str, str]]:
    """Where the dataset in ``folder`` starts, and its split folders (split -> folder,
    train first; :func:`~utils.data.scan.split_folders`).

    ``folder`` or its one visible sub-folder holds ``train/`` (and maybe ``val/``,
    ``test/``); or, holding no split folders at all, two or more class folders, returned
    with no splits (the whole root is the training set).
    """
    def visible(path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir()
                      if not p.name.startswith(".") and p.name not in _IGNORED_TOP_LEVEL)

    top = visible(folder)
    roots = [folder] + ([folder / top[0]] if len(top) == 1 and (folder / top[0]).is_dir()
                        else [])
    for root in roots:
        if (root / "train").is_dir():
            splits = split_folders(root)
            for alias in (Path(f).name for f in splits.values()):
                if alias in SPLIT_ALIASES:
                    print(f"{alias}/ is the validation set: imported as val/")
            return root, splits
    root = roots[-1]
    names = visible(root)
    if len([n for n in names if (root / n).is_dir()]) >= 2 and \
            not set(names) & {*SPLITS, *SPLIT_ALIASES}:
        return root, {}
    folders = [n for n in top if (folder / n).is_dir()]
    if len(folders) == 1 and not (folder / folders[0] / "train").is_dir() and len(roots) == 2 \
            and not any((root / n).is_dir() for n in names):
        raise UserError(f"{shown(name or folder)} holds one class folder ({shown(folders[0])}): "
                        "a classifier needs at least two classes, one folder of images each")
    found = ", ".join(map(shown, top[:5])) + (", ..." if len(top) > 5 else "") or "nothing"
    raise UserError(f"{shown(name or folder)} must hold train/<class>/ (with optional val/ "
                    f"and test/), or just one folder per class, optionally inside one "
                    f"top-level folder (found: {found})")


def _vet_folder(root: Path, splits: list[str]) -> list[tuple[Path, int]]:
    """Every regular file under ``root``'s splits (the whole root without splits), as
    (path relative to ``root``, size).

    Hidden entries are skipped; a link or a special file anywhere (the splits and the
    folder wrapping them included) refuses the whole import, as in an archive.
    """
    todo = [root / split for split in splits] if splits else [root]
    for path in [root, *todo]:
        if path.is_symlink():
            _refuse_entry(root, path, "link")
    files = []
    while todo:
        folder = todo.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise UserError(f"cannot read {shown(folder)}: {exc.strerror or exc}") from None
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                _refuse_entry(root, path, "link")
            elif entry.is_dir(follow_symlinks=False):
                todo.append(path)
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                files.append((path.relative_to(root), size))
            else:
                _refuse_entry(root, path, "device or special file")
    return sorted(files)


def _refuse_entry(root: Path, path: Path, kind: str) -> NoReturn:
    raise UserError(f"refused folder {shown(root)}: {shown(path)} is a {kind} (only regular "
                    f"files and folders are imported)")


def _copy(src: Path, dst: Path, budget: Budget) -> None:
    """Copy one vetted file, never through a link or pipe that appeared since it was vetted."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(src, flags)
    except OSError as exc:
        raise UserError(f"cannot read {shown(src)}: {exc.strerror or exc}") from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"cannot import {shown(src)}: it is no longer a regular file")
        write_file(dst, f, budget)


