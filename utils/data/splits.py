"""Held-out images: carving test and validation sets out of the training folders.

An image's side is decided by its own hash alone (of the seed and its path inside the split
folder), compared with the fractions: the test set takes the images whose hash falls in
``[0, test_fraction)``, validation those in the next ``val_fraction``.  So re-runs give the
same split, a moved project gives the same split, and adding images to a class never moves
another image from one set to another (a quota cut from one ranking would: new images
ranking first push earlier ones across the cut).  The test set is decided first: adding a
``val/`` folder later leaves it exactly as it was.

Each set holds about its fraction of every class, and every class keeps at least one
training image and gives at least one image to each set when it has two or more (a class
whose hashes happen to miss a set lends it the image nearest to that set's range).
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

#: The largest share of a class that may be held out (per set).
MAX_FRACTION = 0.5


def carve(paths: Sequence[str], fractions: dict[str, float], seed: int,
          root: str | os.PathLike) -> tuple[list[str], dict[str, list[str]]]:
    """Split one class's ``paths`` into the kept ones and one held-out list per fraction
    (in the order of ``fractions``: test first).

    ``root`` is the split folder: paths are hashed relative to it, so the same dataset at
    another place splits the same way.  Lists keep the order of ``paths``.
    """
    def position(path: str) -> float:
        relative = os.path.relpath(path, root).replace(os.sep, "/")
        digest = hashlib.sha1(f"{seed}:{relative}".encode("utf-8", "surrogateescape"))
        return int(digest.hexdigest()[:15], 16) / 16**15  # uniform in [0, 1)

    where = {path: position(path) for path in paths}
    side: dict[str, str] = {}
    low = 0.0
    bands = {}
    for name, fraction in fractions.items():
        bands[name] = (low, low + fraction)
        side.update((p, name) for p in paths if low <= where[p] < low + fraction)
        low += fraction
    kept = [p for p in paths if p not in side]
    if not kept and paths:  # a class is always trained on: its highest-placed image stays
        back = max(paths, key=where.get)
        del side[back]
        kept = [back]
    names = list(bands)
    for i, (name, (start, end)) in enumerate(bands.items()):
        if end <= start or name in side.values():
            continue
        # Training's spare images first; else a later set's (test is served before val).
        donors = kept if len(kept) >= 2 else [p for p, s in side.items() if s in names[i + 1:]]
        if donors:
            lent = min(donors, key=lambda p: min(abs(where[p] - start), abs(where[p] - end)))
            side[lent] = name
            if lent in kept:
                kept.remove(lent)
    held = {name: [p for p in paths if side.get(p) == name] for name in fractions}
    return [p for p in paths if p not in side], held
