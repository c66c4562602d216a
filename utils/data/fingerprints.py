"""Image fingerprints: what the import audit (:mod:`utils.data.audit`) knows of each image.

The import check decodes every image once (:mod:`utils.data.checks`); from that one read it
also takes the image's fingerprint, 792 bytes of plain ``bytes`` (cheap to send back from
a worker process, to cache, and to join by the 60,000):

* a 128-bit BLAKE2b digest of the file's bytes: exact copies;
* width and height (4 bytes each, little-endian): images far smaller than the rest;
* a 16x16 RGB thumbnail (box-filtered, row-major), from which everything else -- grey
  thumbnails, blankness, the perceptual hash -- is derived later in bulk
  (:class:`Fingerprints`, :mod:`utils.data.nearcopies`).

The worker's share is one small resize: about 10 us on a 32x32 CIFAR image (its decode:
86 us), 0.16 ms on a 500x374 photo.  Fingerprints are cached beside the check verdicts,
keyed the same way (the file's absolute path and stamp): :class:`FingerprintStore`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

#: Side of the thumbnail kept per image.
THUMB_SIDE = 16
#: Changed whenever the fingerprint's content or computation changes (drops caches).
VERSION = 1
_HEAD = 16 + 8  # the digest, then width and height
#: Bytes of one fingerprint.
FINGERPRINT_BYTES = _HEAD + THUMB_SIDE * THUMB_SIDE * 3


def fingerprint(digest: bytes, image: Image.Image) -> bytes:
    """The fingerprint of a decoded image (upright RGB, as the check decodes it) whose
    file's bytes have BLAKE2b-128 ``digest``.

    The thumbnail is a box filter (an area average: stable under resizing and
    re-encoding).  ``reducing_gap=4`` lets Pillow first shrink a large photo by an integer
    factor (fast) while keeping it 4 times the thumbnail: a gap of 2 doubled the hash
    distance of resized copies (p99 10 bits instead of 6).
    """
    thumb = image.resize((THUMB_SIDE, THUMB_SIDE), Image.BOX, reducing_gap=4.0)
    return (digest + image.width.to_bytes(4, "little") + image.height.to_bytes(4, "little")
            + thumb.tobytes())


@dataclass
class Fingerprints:
    """Many fingerprints as arrays (row i is image i)."""

    digests: np.ndarray  #: (n, 2) uint64: the digest as two numbers
    sizes: np.ndarray  #: (n, 2) int64: width, height
    grey: np.ndarray  #: (n, S, S) float32 grey thumbnails, levels 0..255
    spread: np.ndarray  #: (n,) float32: the thumbnail's largest per-channel deviation

    @classmethod
    def of(cls, fps: Sequence[bytes], exact_below: float) -> "Fingerprints":
        """The arrays of ``fps``, joined once (no per-image Python beyond the join).

        ``spread`` is exact only under ``exact_below``; above, it is the grey thumbnail's
        standard deviation, which never exceeds the largest channel's (grey is a weighted
        mean of the channels): computing every channel's for every image would cost more
        than the rest together.
        """
        n = len(fps)
        raw = np.frombuffer(b"".join(fps), dtype=np.uint8).reshape(n, FINGERPRINT_BYTES)
        digests = np.ascontiguousarray(raw[:, :16]).view(np.uint64)
        sizes = np.ascontiguousarray(raw[:, 16:_HEAD]).view("<u4").astype(np.int64)
        rgb = raw[:, _HEAD:].reshape(n, THUMB_SIDE * THUMB_SIDE, 3)
        # ITU-R 601 luma in 8.8 fixed point, as Pillow's "L" (integers: no float copy of
        # the colour thumbnails).
        grey = (rgb[..., 0] * np.uint16(77) + rgb[..., 1] * np.uint16(150)
                + rgb[..., 2] * np.uint16(29)).astype(np.float32) / 256
        spread = grey.std(axis=1)
        low = np.flatnonzero(spread < exact_below)
        if len(low):
            spread[low] = rgb[low].astype(np.float32).std(axis=1).max(axis=1)
        return cls(digests, sizes, grey.reshape(n, THUMB_SIDE, THUMB_SIDE), spread)


class FingerprintStore:
    """Fingerprints remembered per file (its absolute path) and stamp, in one ``.npz`` file.

    The stamp is the verdict cache's (size, mtime, ctime, inode), so a fingerprint is
    reused exactly when the verdict is.  Binary, because 60,000 thumbnails are 47 MB as
    numbers and would be three times that as JSON.  A missing, damaged or outdated file
    is an empty store.
    """

    def __init__(self, file: str | os.PathLike):
        self.file = Path(file)
        self._entries: dict[str, tuple[tuple[int, ...], bytes]] = {}
        try:
            with np.load(self.file) as z:  # never unpickles (allow_pickle is off by default)
                if int(z["version"]) != VERSION:
                    return
                paths = z["paths"].tobytes().decode("utf-8", "surrogateescape").split("\0")
                stamps, blobs = z["stamps"].tolist(), z["blobs"]
        except (OSError, ValueError, KeyError, EOFError):
            return  # no store yet, or an unreadable one: fingerprint again
        if blobs.ndim == 2 and blobs.shape[1] == FINGERPRINT_BYTES and \
                len(paths) == len(blobs) == len(stamps):
            self._entries = {p: (tuple(s), blobs[i].tobytes())
                             for i, (p, s) in enumerate(zip(paths, stamps))}

    def get(self, key: str, stamp: Sequence[int] | None) -> bytes | None:
        """The fingerprint of ``key`` (a file's absolute path) at ``stamp``, or None."""
        entry = self._entries.get(key)
        if entry is None or stamp is None or entry[0] != tuple(stamp):
            return None
        return entry[1]

    def put(self, key: str, stamp: Sequence[int] | None, fp: bytes) -> None:
        """Remember ``fp`` for ``key`` at ``stamp`` (nothing without a stamp)."""
        if stamp is not None and len(fp) == FINGERPRINT_BYTES:
            self._entries[key] = (tuple(stamp), fp)

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget every file not in ``keys`` (gone from the dataset)."""
        wanted = set(keys)
        self._entries = {k: e for k, e in self._entries.items() if k in wanted}

    def save(self) -> None:
        """Write the store atomically (an ``OSError`` leaves the previous file)."""
        paths = list(self._entries)
        stamps = np.array([self._entries[p][0] for p in paths], dtype=np.int64).reshape(
            len(paths), -1)
        blobs = np.frombuffer(b"".join(self._entries[p][1] for p in paths),
                              dtype=np.uint8).reshape(len(paths), FINGERPRINT_BYTES)
        # Paths as one NUL-separated string: a str array would be UTF-32, padded to the
        # longest path.
        joined = "\0".join(paths).encode("utf-8", "surrogateescape")
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, version=np.int64(VERSION), stamps=stamps, blobs=blobs,
                         paths=np.frombuffer(joined, dtype=np.uint8))
            os.replace(tmp, self.file)
        finally:
            tmp.unlink(missing_ok=True)
