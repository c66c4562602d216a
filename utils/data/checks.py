"""Checking that every listed file decodes, with verdicts remembered between runs.

Before an image is listed it is fully decoded with :func:`utils.data.image.load_image`, in a
process pool; verdicts are cached by path and file stamp so that re-runs over 60,000 images
take seconds.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import PIL
from tqdm import tqdm

from utils.cli import UserError, warn
from utils.data.image import image_problem, pixel_limit
from utils.fileio import write_atomic


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
