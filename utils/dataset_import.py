"""Putting a dataset into ``datasets/`` without ever leaving it half-written.

A dataset is built in a hidden staging folder inside the target (same file system, so the
final renames are atomic; hidden, so scans ignore it), checked, and only then renamed into
place as ``train/`` and ``test/``.  If anything fails on the way, the staging folder is
removed and the target is exactly as it was; an existing dataset is only replaced when the
caller asks for it.  (A run killed outright leaves its ``.staging-*`` folder behind; the next
install removes it.)

:func:`import_dataset` fills the staging folder from a folder or an archive (.zip, .tar,
.tar.gz, ...) holding ``train/<class>/...`` and ``test/<class>/...``, optionally wrapped in
one top-level folder.  Archives come from strangers, so every member is vetted before it is
written, and only ever inside the staging folder: an absolute path, a ``..`` component, a
link or a device file aborts the whole import.  Files are copied byte for byte.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable, NoReturn

from utils.cli import UserError

SPLITS = ("train", "test")
_IGNORED_TOP_LEVEL = {"__MACOSX"}  # resource forks added by macOS's "Compress"


def has_dataset(target: str | os.PathLike) -> bool:
    """True when ``target/train`` or ``target/test`` holds anything (hidden files aside)."""
    for split in SPLITS:
        folder = Path(target) / split
        if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
            return True
    return False


def install_dataset(target: str | os.PathLike, build: Callable[[Path], None],
                    replace: bool = False) -> None:
    """Build a dataset with ``build`` and move it into ``target``, all or nothing.

    ``build(staging)`` must create ``staging/train`` and ``staging/test``.  They replace
    ``target/train`` and ``target/test`` (only with ``replace``; other entries of ``target``
    are kept).  On any failure ``target`` is left as it was.
    """
    target = Path(target)
    if has_dataset(target) and not replace:
        raise UserError(f"{target}/ already holds a dataset (use --force to replace it)")
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    for leftover in target.glob(".staging-*"):  # from a run that was killed outright
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
    try:
        build(staging)
        for split in SPLITS:
            if not (staging / split).is_dir():
                raise UserError(f"the new dataset has no {split}/ folder")
        _swap_in(staging, target)
    except OSError as exc:  # disk full, permissions, ...: the user's to fix
        raise UserError(f"cannot write the dataset into {target}/: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # also drops a replaced dataset
        if created and not any(target.iterdir()):
            target.rmdir()


def _swap_in(staging: Path, target: Path) -> None:
    """Move ``target/{train,test}`` into ``staging/old`` and the staged ones into ``target``.

    Renames within one file system are atomic; if one fails, the ones already done are
    undone so the old dataset is back in place.
    """
    (staging / "old").mkdir()
    moves = [(target / s, staging / "old" / s) for s in SPLITS if os.path.lexists(target / s)]
    moves += [(staging / s, target / s) for s in SPLITS]
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


def import_dataset(source: str | os.PathLike, target: str | os.PathLike = "datasets",
                   replace: bool = False) -> None:
    """Copy the dataset in folder or archive ``source`` into ``target`` (see module notes)."""
    source, target = Path(source), Path(target)
    print(f"importing {source} into {target}/ ...", flush=True)
    try:
        install_dataset(target, _builder(source, target), replace)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error,
            NotImplementedError) as exc:  # corrupt archive, unsupported zip compression
        raise UserError(f"cannot read archive {source}: {exc}") from None
    print(f"imported {source} into {target}/")


def _builder(source: Path, target: Path) -> Callable[[Path], None]:
    """The function that fills a staging folder from ``source``."""
    if source.is_dir():
        if _overlaps(source, target):
            raise UserError(f"--from {source} overlaps {target}/: import from another folder")

        def copy(staging: Path) -> None:
            root = _dataset_root(source)
            for split in SPLITS:
                shutil.copytree(root / split, staging / split,
                                ignore=shutil.ignore_patterns(".*"))
        return copy
    if zipfile.is_zipfile(source):
        extract = _extract_zip
    elif source.is_file() and _is_tar(source):
        extract = _extract_tar
    elif not source.exists():
        raise UserError(f"--from {source}: no such file or folder")
    else:
        raise UserError(f"--from {source}: not a folder or a .zip / .tar / .tar.gz archive")

    def unpack(staging: Path) -> None:
        extract(source, staging / "extracted")
        root = _dataset_root(staging / "extracted", name=source)
        for split in SPLITS:
            os.rename(root / split, staging / split)
    return unpack


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _dataset_root(folder: Path, name: Path | None = None) -> Path:
    """``folder`` if it holds train/ and test/, else the one sub-folder that does."""
    if all((folder / split).is_dir() for split in SPLITS):
        return folder
    visible = sorted(p.name for p in folder.iterdir()
                     if not p.name.startswith(".") and p.name not in _IGNORED_TOP_LEVEL)
    if len(visible) == 1 and all((folder / visible[0] / split).is_dir() for split in SPLITS):
        return folder / visible[0]
    found = ", ".join(visible[:5]) + (", ..." if len(visible) > 5 else "") or "nothing"
    raise UserError(f"{name or folder} must hold train/<class>/ and test/<class>/ folders, "
                    f"optionally inside one top-level folder (found: {found})")


# Archives: every member is vetted before it is written, and only inside ``dest``; a refusal
# aborts the import, whose staging folder is then removed.


def _member_parts(name: str, archive: Path) -> list[str]:
    """Path components of an archive member, refusing any that would escape the target."""
    posix = name.replace("\\", "/")  # Windows tools sometimes write backslashes
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix) or ".." in parts:
        raise UserError(f"refused archive {archive}: member {name!r} would be written outside "
                        f"the dataset folder (absolute path or '..')")
    return parts


def _refuse(archive: Path, name: str, kind: str) -> NoReturn:
    raise UserError(f"refused archive {archive}: member {name!r} is a {kind} (only regular "
                    f"files and folders are allowed)")


def _write_member(dest: Path, parts: list[str], is_dir: bool, open_member) -> None:
    path = dest.joinpath(*parts)
    if is_dir:
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_member() as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out)


def _extract_tar(archive: Path, dest: Path) -> None:
    dest.mkdir()
    # One streaming pass: a 60,000-member archive is decompressed once, not twice.
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            parts = _member_parts(member.name, archive)
            if member.issym() or member.islnk():
                _refuse(archive, member.name, "link")
            if not (member.isfile() or member.isdir()):
                _refuse(archive, member.name, "device or special file")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: a second line of defence
                try:
                    tarfile.data_filter(member, str(dest))
                except tarfile.FilterError as exc:
                    raise UserError(f"refused archive {archive}: {exc}") from None
            if parts:
                _write_member(dest, parts, member.isdir(), lambda: tar.extractfile(member))


def _extract_zip(archive: Path, dest: Path) -> None:
    dest.mkdir()
    with zipfile.ZipFile(archive) as zf:
        members = []
        for info in zf.infolist():  # the central directory: vet every member first
            mode = info.external_attr >> 16  # Unix mode bits, when a Unix tool wrote the zip
            if stat.S_ISLNK(mode):
                _refuse(archive, info.filename, "link")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                _refuse(archive, info.filename, "device or special file")
            if info.flag_bits & 0x1:
                raise UserError(f"cannot import {archive}: member {info.filename!r} is encrypted")
            members.append((info, _member_parts(info.filename, archive)))
        for info, parts in members:
            if parts:
                _write_member(dest, parts, info.is_dir(), lambda: zf.open(info))
