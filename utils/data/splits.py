"""Held-out images: carving test and validation sets out of the training folders.

The carve is stratified (each class gives the same fractions) and stable: an image's side
is decided by a hash of the seed and its path inside the split folder, not by its position
in a listing, so re-runs give the same split, a moved project gives the same split, and
adding images to a class only moves the images it has to.  The test set is carved first:
adding a ``val/`` folder later leaves it exactly as it was.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

#: The largest share of a class that may be held out (per set).
MAX_FRACTION = 0.5


def held_out_counts(total: int, fractions: Sequence[float]) -> list[int]:
    """How many of a class's ``total`` images each of ``fractions`` holds out.

    The nearest whole number of the class, but at least one per set while the class keeps
    one for training (so every class is validated) and never the last one (so every class
    is trained on): taken in order, so the first set is served first.
    """
    counts, left = [], total
    for fraction in fractions:
        count = 0 if fraction <= 0 else max(1, round(total * fraction))
        count = min(count, left - 1) if left > 1 else 0
        counts.append(count)
        left -= count
    return counts


def carve(paths: Sequence[str], fractions: dict[str, float], seed: int,
          root: str | os.PathLike) -> tuple[list[str], dict[str, list[str]]]:
    """Split one class's ``paths`` into the kept ones and one held-out list per fraction.

    ``root`` is the split folder: paths are hashed relative to it, so the same dataset at
    another place splits the same way.  Lists keep the order of ``paths``.
    """
    def rank(path: str) -> str:
        relative = os.path.relpath(path, root).replace(os.sep, "/")
        return hashlib.sha1(f"{seed}:{relative}".encode("utf-8", "surrogateescape")).hexdigest()

    ranked = sorted(paths, key=rank)
    side, start = {}, 0
    for name, count in zip(fractions, held_out_counts(len(paths), list(fractions.values()))):
        side.update((path, name) for path in ranked[start:start + count])
        start += count
    held = {name: [p for p in paths if side.get(p) == name] for name in fractions}
    return [p for p in paths if p not in side], held
