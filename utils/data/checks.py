"""Checking that every listed file decodes, with verdicts remembered between runs.

Before an image is listed it is fully decoded with :func:`utils.data.image.load_image`, in a
process pool; verdicts are cached by path and file stamp so that re-runs over 60,000 images
take seconds.  The import's check (:func:`inspect_images`) also takes each image's
fingerprint from that same read and decode (:mod:`utils.data.fingerprints`), for the
audit, and caches it beside the verdict.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import PIL
from tqdm import tqdm

from utils.cli import UserError, warn
from utils.data.fingerprints import FingerprintStore, fingerprint
from utils.data.image import ImageError, image_problem, load_image_and_digest, pixel_limit
from utils.fileio import write_atomic

#: The fingerprint store's file, beside the verdict cache.
FINGERPRINTS_FILE = "fingerprints.npz"


@dataclass
class Inspection:
    """What :func:`inspect_images` learnt: the unusable files with why, every file's stamp
    (None: it could not be stat'ed), and the fingerprints of the images it decoded."""

    problems: dict[str, str]
    stamps: dict[str, list[int] | None]
    fresh: dict[str, bytes] = field(default_factory=dict)
    store_file: Path | None = None

    def fingerprints(self, paths: Sequence[str], workers: int = 1) -> dict[str, bytes]:
        """The fingerprints of usable ``paths``: taken by this check, else cached, else
        (a cache from before fingerprints, or lost) taken now with one more decode."""
        found = {p: self.fresh[p] for p in paths if p in self.fresh}
        if len(found) < len(paths) and self.store_file is not None:
            store = FingerprintStore(self.store_file)
            for p in paths:
                if p not in found:
                    fp = store.get(os.path.abspath(p), self.stamps.get(p))
                    if fp is not None:
                        found[p] = fp
        missing = [p for p in paths if p not in found]
        for p, (_, fp) in zip(missing, _decode_all(missing, workers, _inspect)):
            if fp is not None:  # else it no longer decodes: left out of the audit
                found[p] = self.fresh[p] = fp
        if missing:
            self.save_fingerprints()
        return found

    def save_fingerprints(self) -> None:
        """Add the fresh fingerprints to the store, forgetting files no longer checked."""
        if self.store_file is None or not self.fresh:
            return
        store = FingerprintStore(self.store_file)
        store.keep_only(os.path.abspath(p) for p in self.stamps)
        for p, fp in self.fresh.items():
            store.put(os.path.abspath(p), self.stamps.get(p), fp)
        try:
            store.save()
        except OSError as exc:
            warn(f"image fingerprints not cached ({exc.strerror or exc}): the next run "
                 "fingerprints every image again")


def check_images(paths: Sequence[str], workers: int = 1,
                 cache_file: str | os.PathLike | None = None) -> dict[str, str]:
    """Fully decode every file; returns ``{path: reason}`` for those that fail.

    Decoding runs in ``workers`` processes (in this process when ``workers <= 1``).  With
    ``cache_file``, verdicts are remembered per path and :func:`_stamp` so a re-run only
    decodes new or changed files (see :func:`inspect_images`).
    """
    return _check(paths, workers, cache_file, _problem).problems


def inspect_images(paths: Sequence[str], workers: int = 1,
                   cache_file: str | os.PathLike | None = None) -> Inspection:
    """:func:`check_images`, taking each decoded image's fingerprint from the same read.

    With ``cache_file``, verdicts are remembered per path and :func:`_stamp`, and
    fingerprints beside them (:data:`FINGERPRINTS_FILE`, same keys), so a re-run only
    decodes new or changed files; the verdicts are dropped when Pillow's version or the
    pixel limit changes, since either can change one.  A cache that cannot be saved is
    only a warning: the next run checks everything again.
    """
    inspection = _check(paths, workers, cache_file, _inspect)
    if cache_file is not None:
        inspection.store_file = Path(cache_file).with_name(FINGERPRINTS_FILE)
        inspection.save_fingerprints()
    return inspection


def _check(paths: Sequence[str], workers: int, cache_file, work: Callable) -> Inspection:
    """Verdicts from the cache, ``work`` (:func:`_problem` or :func:`_inspect`, in
    ``workers`` processes) for the other files; the cache rewritten."""
    version = f"stamps 2, pillow {PIL.__version__}, max pixels {pixel_limit()}"
    cache = _read_cache(cache_file, version)
    keys = {p: os.path.abspath(p) for p in paths}
    stamps = {p: _stamp(p) for p in paths}  # taken before decoding: a later edit re-checks
    verdicts, todo, fresh = {}, [], {}
    for p in paths:
        entry = cache.get(keys[p])
        if (stamps[p] is not None and isinstance(entry, list) and entry[:-1] == stamps[p]
                and isinstance(entry[-1], (str, type(None)))):
            verdicts[p] = entry[-1]
        else:
            todo.append(p)
    for p, (reason, fp) in zip(todo, _decode_all(todo, workers, work)):
        verdicts[p] = reason
        if fp is not None:
            fresh[p] = fp
    if cache_file is not None:
        entries = {keys[p]: [*stamps[p], verdicts[p]] for p in paths if stamps[p]}
        try:
            write_atomic(Path(cache_file), json.dumps({"version": version, "files": entries}))
        except UserError as exc:
            warn(f"image checks not cached ({exc}): the next run checks every image again")
    problems = {p: reason for p, reason in verdicts.items() if reason is not None}
    return Inspection(problems, stamps, fresh)


def _problem(path: str) -> tuple[str | None, None]:
    """Why ``path`` cannot be used as an image (None when it decodes cleanly)."""
    return image_problem(path), None


def _inspect(path: str) -> tuple[str | None, bytes | None]:
    """Why ``path`` cannot be used as an image (None when it decodes cleanly), and its
    fingerprint when it can: one read, one decode."""
    try:
        image, digest = load_image_and_digest(path)
    except ImageError as exc:
        return exc.reason, None
    return None, fingerprint(digest, image)


def _decode_all(paths: list[str], workers: int, work: Callable) -> Iterator:
    """``work(path)`` for each path, in order, in ``workers`` processes, with a progress bar
    on a terminal."""
    with tqdm(total=len(paths), desc="checking images", unit="img", disable=None,
              leave=False) as bar:
        if workers <= 1 or len(paths) < 2:
            for p in paths:
                yield work(p)
                bar.update()
            return
        chunk = max(1, min(256, len(paths) // (4 * workers)))
        with ProcessPoolExecutor(min(workers, len(paths))) as pool:
            for result in pool.map(work, paths, chunksize=chunk):
                yield result
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
