"""Unpacking a dataset archive from a stranger: every member vetted, every byte counted.

Archives come from strangers, so every member is vetted before it is written, and only
ever inside the destination folder: an absolute path, a ``..`` component, a link or a device
file aborts the whole import (:mod:`utils.data.importing` then removes its staging folder).

Size: the bytes actually written are counted (an archive's declared sizes can lie), plus
4 KiB per file and folder (what an empty file still costs).  An archive may unpack to at
most ``max_ratio`` times its own size (:data:`DEFAULT_MAX_RATIO`, or ``$DATASET_MAX_RATIO``,
or ``txt_annotation.py --max-ratio``; at least 64 MiB whatever the ratio), which stops zip
bombs, and any import must leave room on the target's disk (see :class:`Budget`).  Either
limit is one clear error.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import NoReturn

from utils.cli import UserError
from utils.names import shown

#: How many times its own size an archive may unpack to.  Photos and PNGs barely compress
#: and even uncompressed BMP/TIFF datasets stay far below; a zip bomb is 1,000x and more.
DEFAULT_MAX_RATIO = 100.0
RATIO_ENV = "DATASET_MAX_RATIO"
_RATIO_FLOOR = 64 * 2**20  # small archives of flat images may compress well: no bomb
BLOCK = 4096  # each file or folder takes at least a block on disk
_RESERVE = 2**30  # free space an import leaves on the disk (at most; 10% of what is free)
_RESERVE_FILES = 100_000  # free inodes it leaves, likewise


def max_ratio_setting() -> float:
    """The archive expansion limit: ``$DATASET_MAX_RATIO`` if set, else the default."""
    value = os.environ.get(RATIO_ENV)
    if not value:
        return DEFAULT_MAX_RATIO
    try:
        ratio = float(value)
    except ValueError:
        ratio = float("nan")
    if not ratio > 0 or ratio == float("inf"):
        raise UserError(f"{RATIO_ENV}={value!r} is not a positive number")
    return ratio


class Budget:
    """Bytes and files an import may still write; going past either is a one-line refusal.

    The disk of ``target`` must keep 10% of its free space and free files (inodes), at most
    1 GiB and 100,000; an archive (``ratio`` given) may also write at most ``ratio`` times
    its size, and at least 64 MiB whatever the ratio.
    """

    def __init__(self, source: Path, target: Path, ratio: float | None):
        usage, vfs = shutil.disk_usage(target), os.statvfs(target)
        self.room = usage.free - min(_RESERVE, usage.free // 10)
        # File systems that do not count inodes (btrfs, ...) report none at all.
        self.files_room = (vfs.f_favail - min(_RESERVE_FILES, vfs.f_favail // 10)
                           if vfs.f_files else None)
        self.limit, self.bomb = self.room, None
        if ratio is not None:
            bound = max(_RATIO_FLOOR, int(ratio * source.stat().st_size))
            if bound < self.limit:
                self.limit, self.bomb = bound, ratio
        self.source, self.target = source, target
        self.used, self.files = 0, 0

    def spend(self, nbytes: int, files: int = 0) -> None:
        """Count ``nbytes`` and ``files`` more; refuse once past a limit."""
        self.used += nbytes
        self.files += files
        self.check(self.used, self.files)

    def check(self, nbytes: int, files: int) -> None:
        """Refuse now if ``nbytes`` and ``files`` in all would be past a limit."""
        if nbytes > self.limit:
            if self.bomb is not None:
                raise UserError(f"refused archive {shown(self.source)}: it unpacks to more "
                                f"than {_size(self.limit)}, over {self.bomb:g} times its size "
                                f"(a zip bomb?); if it is genuine, raise the limit with "
                                f"--max-ratio N or {RATIO_ENV}=N")
            raise UserError(f"cannot import {shown(self.source)}: it needs more than "
                            f"{_size(self.room)} and the disk of {self.target}/ cannot spare "
                            f"more: free some space")
        if self.files_room is not None and files > self.files_room:
            raise UserError(f"cannot import {shown(self.source)}: it holds more than "
                            f"{self.files_room:,} files and folders, more than the disk of "
                            f"{self.target}/ can spare")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def write_file(dst: Path, src, budget: Budget) -> None:
    """Copy the stream ``src`` into the new file ``dst``, counting every byte written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    budget.spend(BLOCK, files=1)
    with open(dst, "wb") as out:
        while chunk := src.read(2**20):
            budget.spend(len(chunk))
            out.write(chunk)



def _member_parts(name: str, archive: Path) -> list[str]:
    """Path components of an archive member, refusing any that would escape the target."""
    posix = name.replace("\\", "/")  # Windows tools sometimes write backslashes
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix) or ".." in parts:
        raise UserError(f"refused archive {shown(archive)}: member {name!r} would be written "
                        f"outside the dataset folder (absolute path or '..')")
    return parts


def _refuse(archive: Path, name: str, kind: str) -> NoReturn:
    raise UserError(f"refused archive {shown(archive)}: member {name!r} is a {kind} (only "
                    f"regular files and folders are allowed)")


def _write_member(dest: Path, parts: list[str], is_dir: bool, open_member,
                  budget: Budget) -> None:
    path = dest.joinpath(*parts)
    if is_dir:
        budget.spend(BLOCK, files=1)
        path.mkdir(parents=True, exist_ok=True)
        return
    with open_member() as src:
        write_file(path, src, budget)


def extract_tar(archive: Path, dest: Path, budget: Budget) -> None:
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
                    raise UserError(f"refused archive {shown(archive)}: {exc}") from None
            if parts:
                _write_member(dest, parts, member.isdir(), lambda: tar.extractfile(member),
                              budget)


def extract_zip(archive: Path, dest: Path, budget: Budget) -> None:
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
                raise UserError(f"cannot import {shown(archive)}: member "
                                f"{info.filename!r} is encrypted")
            members.append((info, _member_parts(info.filename, archive)))
        # The declared sizes: a bomb that admits its size is refused before anything is
        # written (one that lies is stopped by the count while writing).
        budget.check(sum(info.file_size + BLOCK for info, _ in members), len(members))
        for info, parts in members:
            if parts:
                _write_member(dest, parts, info.is_dir(), lambda: zf.open(info), budget)
