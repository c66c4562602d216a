"""The import audit: copies and near-copies within a class, across classes and across the
splits; blank and tiny images.

``txt_annotation.py`` runs it on every import, after the held-out sets are carved (a
within-train copy becomes a leak once one copy is carved into test), from the fingerprints
its check took (:mod:`utils.data.fingerprints`).  Each finding is a row of
``dataset_audit.csv`` (:data:`COLUMNS`), of one kind:

``duplicate``
    two images of one class in one split: wasted, the class counts it twice;
``conflict``
    the same picture under two classes (in any splits): reported, never guessed -- both
    copies stay where they are until a person decides;
``leak``
    the same picture in two splits.  The held-out copy is dropped from its list (unless
    ``--keep-leaks``), so the held-out figure stays honest; of a val/test pair the val copy
    goes, so the test set stays as it was given.  With two classes it is also a
    ``conflict`` row;
``blank``
    a near-constant image (largest per-channel spread of its thumbnail under
    :data:`BLANK_SPREAD` levels);
``tiny``
    an image whose shorter side is under ``tiny_side`` pixels (:func:`auto_tiny_side`).

``distance`` is the hash distance in bits (0 for identical bytes, ``match`` = ``exact``),
the spread for ``blank`` and the shorter side for ``tiny``; ``similarity`` is the
thumbnails' correlation (1 for identical bytes).  A group of k identical files gives k - 1
rows, each against the copy a leak keeps.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import PIL

from utils.cli import UserError, warn
from utils.data import fingerprints
from utils.data.checks import Inspection
from utils.data.fingerprints import Fingerprints
from utils.data.lists import annotation_path
from utils.data.nearcopies import near_pairs
from utils.fileio import CsvWriter, write_atomic, write_if_changed
from utils.layout import SPLITS

#: Changed whenever the rules below change: part of the cached result's key.
VERSION = 1
#: Hash distance (bits of 63) within which a pair is a candidate near-copy, and the
#: correlation of the grey thumbnails from which it is one.
MAX_DISTANCE = 12
MIN_CORRELATION = 0.93
#: A pair further apart than FAR_DISTANCE bits must correlate at FAR_CORRELATION: on
#: CIFAR-10 the distinct look-alikes confirmed at 0.93 were 11-12 bits apart, while
#: resized and re-encoded copies stay within 10 bits.
FAR_DISTANCE, FAR_CORRELATION = 10, 0.95
#: Across two classes a near pair must also be this close: a copy under another label is
#: rare, a look-alike (a ship and a plane on the same grey sea) is not.  Identical bytes
#: always count.
CONFLICT_DISTANCE, CONFLICT_CORRELATION = 8, 0.95
#: Largest per-channel standard deviation (levels of 255) under which an image is blank.
BLANK_SPREAD = 3.0
#: The smallest input side the recipes train photos at (``utils/train/recipe.py``, a CPU
#: from scratch); smaller images train at their own size.
PHOTO_INPUT = 128
#: Of a pair in two splits, the first split in this order keeps its copy.
KEEP_ORDER = ("train", "test", "val")
#: The columns of ``dataset_audit.csv``.
COLUMNS = ("kind", "split", "class", "path", "other_split", "other_class", "other_path",
           "distance", "match", "similarity")


class Item(NamedTuple):
    """One usable image, as the lists will hold it (a named tuple: 60,000 of them build in
    0.04 s, frozen dataclasses in 0.1 s)."""

    split: str
    class_name: str
    path: str
    fingerprint: bytes


@dataclass
class AuditResult:
    """What :func:`audit` found: ``rows`` (dicts keyed by :data:`COLUMNS`), the held-out
    images that copy another split's (``leaks``), and the ``tiny_side`` it applied."""

    rows: list[dict] = field(default_factory=list)
    leaks: set[str] = field(default_factory=set)
    tiny_side: int = 0

    def flagged(self) -> dict[str, int]:
        """Per class, the images it has in the rows: the extra copy of a duplicate or leak,
        both images of a conflict (each in its class), each blank or tiny image."""
        seen: set[tuple[str, str]] = set()
        for row in self.rows:
            seen.add((row["class"], row["path"]))
            if row["kind"] == "conflict":
                seen.add((row["other_class"], row["other_path"]))
        counts: dict[str, int] = {}
        for name, _ in seen:
            counts[name] = counts.get(name, 0) + 1
        return counts

    def summary(self, dropped: bool) -> str:
        """One line: how many rows of each kind, and what became of the leaks."""
        kinds: dict[str, int] = {}
        for row in self.rows:
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        line = f"audit: {found or 'no copies, blank or tiny images'}"
        if self.leaks:
            line += (f"; {'dropped' if dropped else 'kept'} {len(self.leaks)} held-out "
                     "image(s) that copy another split's "
                     + ("(--keep-leaks keeps them)" if dropped else "(--keep-leaks)"))
        return line


def auto_tiny_side(sizes: np.ndarray) -> int:
    """The default ``tiny_side`` for images of (width, height) ``sizes`` (the training
    images'): a quarter of the smallest input a recipe trains them at -- their median
    shorter side, at most :data:`PHOTO_INPUT` -- so 8 px for CIFAR-10's 32, 32 px for
    photos.  Smaller, an image is enlarged over 4x: mostly blur."""
    if not len(sizes):
        return 0
    median = statistics.median(sizes.min(axis=1).tolist())
    return max(1, round(min(median, PHOTO_INPUT) / 4))


def audit(items: Sequence[Item], tiny_side: int | None = None) -> AuditResult:
    """Find duplicates, conflicts, leaks, blank and tiny images among ``items`` (train,
    then val, then test: the order of the lists).

    ``tiny_side``: images with a shorter side under it are tiny; ``None`` chooses
    :func:`auto_tiny_side` from the training images, 0 flags none.
    """
    result = AuditResult()
    if not items:
        return result
    prints = Fingerprints.of([it.fingerprint for it in items], BLANK_SPREAD)
    pairs = _pairs(items, prints)
    rank = {split: r for r, split in enumerate(KEEP_ORDER)}
    for (x, y), (distance, match, similarity) in sorted(pairs.items()):
        kept, other = items[x], items[y]
        if rank.get(other.split, len(rank)) < rank.get(kept.split, len(rank)):
            kept, other = other, kept
        kinds = []
        if kept.split != other.split:
            kinds.append("leak")
            result.leaks.add(other.path)
        if kept.class_name != other.class_name:
            kinds.append("conflict")
        for kind in kinds or ["duplicate"]:
            result.rows.append(_row(kind, other, kept, distance, match, similarity))
    for k in np.flatnonzero(prints.spread < BLANK_SPREAD).tolist():
        result.rows.append(_row("blank", items[k], None, round(float(prints.spread[k]), 2)))
    if tiny_side is None:
        tiny_side = auto_tiny_side(prints.sizes[[it.split == "train" for it in items]])
    result.tiny_side = tiny_side
    short = prints.sizes.min(axis=1)
    for k in np.flatnonzero(short < tiny_side).tolist():
        result.rows.append(_row("tiny", items[k], None, int(short[k])))
    return result


def _pairs(items: Sequence[Item], prints: Fingerprints
           ) -> dict[tuple[int, int], tuple[int, str, float]]:
    """``(x, y) -> (distance, match, similarity)`` of every copy pair, once each.

    Identical bytes: each copy against its group's first in :data:`KEEP_ORDER` (the one a
    leak keeps), so every held-out copy of a training image is a leak.  Near pairs between
    two groups: once, between the groups' firsts; across classes and far in the hash only
    under the stricter bars.
    """
    n = len(items)
    rank = {split: r for r, split in enumerate(KEEP_ORDER)}
    _, group = np.unique(prints.digests, axis=0, return_inverse=True)
    group = group.ravel()
    keep_rank = np.array([rank.get(it.split, len(rank)) for it in items])
    first_of = np.full(group.max() + 1, -1)
    pairs: dict[tuple[int, int], tuple[int, str, float]] = {}
    for k in np.lexsort((np.arange(n), keep_rank, group)).tolist():
        g = group[k]
        if first_of[g] < 0:
            first_of[g] = k
        else:
            pairs[(min(int(first_of[g]), k), max(int(first_of[g]), k))] = (0, "exact", 1.0)
    a, b, d, corr = near_pairs(prints.grey, MAX_DISTANCE, MIN_CORRELATION)
    for x, y, distance, c in zip(a.tolist(), b.tolist(), d.tolist(), corr.tolist()):
        if items[x].class_name != items[y].class_name and (
                c < CONFLICT_CORRELATION or distance > CONFLICT_DISTANCE):
            continue
        if distance > FAR_DISTANCE and c < FAR_CORRELATION:
            continue
        x, y = int(first_of[group[x]]), int(first_of[group[y]])
        if x != y and (min(x, y), max(x, y)) not in pairs:
            pairs[(min(x, y), max(x, y))] = (distance, "near", round(c, 3))
    return pairs


def _row(kind: str, item: Item, other: Item | None, distance, match: str = "",
         similarity: float | str = "") -> dict:
    return {"kind": kind, "split": item.split, "class": item.class_name, "path": item.path,
            "other_split": other.split if other else "",
            "other_class": other.class_name if other else "",
            "other_path": other.path if other else "", "distance": distance, "match": match,
            "similarity": similarity}


# ---------------------------------------------------------------------------------------------
# The audit of an import: cached, written


def audit_lists(lists: dict[str, dict[str, list[str]]], inspection: Inspection,
                cache_file: str | os.PathLike | None, tiny_side: int | None = None,
                workers: int = 1) -> AuditResult:
    """:func:`audit` of the usable images as the lists will hold them (``lists[split]
    [class]``: paths), from the fingerprints ``inspection`` took.

    With ``cache_file``, the result is kept under a key of every image's split, class,
    path and stamp (and the rules' versions): a re-run over unchanged data reads it back
    instead of loading 60,000 fingerprints, so the audit costs it next to nothing.
    """
    entries = [(split, name, path) for split in SPLITS for name, paths in
               lists.get(split, {}).items() for path in paths]
    key = _key(entries, inspection.stamps, tiny_side)
    cached = _read_result(cache_file, key)
    if cached is not None:
        return cached
    prints = inspection.fingerprints([p for _, _, p in entries], workers)
    result = audit([Item(s, c, p, prints[p]) for s, c, p in entries if p in prints], tiny_side)
    if cache_file is not None:
        try:
            write_atomic(cache_file, json.dumps({"key": key, "rows": result.rows,
                                                 "leaks": sorted(result.leaks),
                                                 "tiny_side": result.tiny_side}))
        except UserError as exc:
            warn(f"audit not cached ({exc}): the next run audits again")
    return result


def _key(entries: Sequence[tuple[str, str, str]], stamps: dict[str, list[int] | None],
         tiny_side: int | None) -> str:
    """What an audit's result depends on: every image's split, class and path (as given,
    relative to the working folder, which is hashed too), every checked file's stamp, the
    setting, and the versions of the rules, the fingerprints and Pillow's decoder."""
    digest = hashlib.sha1(f"audit {VERSION}, fingerprints {fingerprints.VERSION}, pillow "
                          f"{PIL.__version__}, tiny {tiny_side}, in {os.getcwd()}\n"
                          .encode("utf-8", "surrogateescape"))
    digest.update("\n".join(["\0".join(e) for e in entries]).encode("utf-8", "surrogateescape"))
    # Stamps as one array, in the check's order: formatting 60,000 of them as text, or
    # looking each up, would cost more than the rest together.
    known = [stamp or (-1, -1, -1, -1) for stamp in stamps.values()]
    digest.update(np.fromiter(itertools.chain.from_iterable(known), dtype=np.int64).tobytes())
    return digest.hexdigest()


def _read_result(file: str | os.PathLike | None, key: str) -> AuditResult | None:
    """The cached result of ``key``, or None (no cache, another key, or unreadable)."""
    if file is None:
        return None
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
        if data["key"] == key:
            return AuditResult(list(data["rows"]), set(data["leaks"]), int(data["tiny_side"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # audit again
    return None


def write_audit_csv(path: str | os.PathLike, rows: Sequence[dict]) -> bool:
    """Write ``dataset_audit.csv`` (a header alone when nothing was found), paths as the
    annotation files beside it write them; False when it already held exactly that."""
    base = os.path.abspath(os.path.dirname(os.path.abspath(path)))
    buffer = io.StringIO(newline="")
    writer = CsvWriter(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        shown = {**row, "path": annotation_path(row["path"], base),
                 "other_path": annotation_path(row["other_path"], base)
                 if row["other_path"] else ""}
        writer.writerow([shown[column] for column in COLUMNS])
    return write_if_changed(path, buffer.getvalue())
