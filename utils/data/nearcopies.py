"""Near-copies among many images: resized, re-encoded or slightly cropped versions of one
picture, found among 60,000 images in a fraction of a second.

Each grey thumbnail (:mod:`utils.data.fingerprints`) gives a 63-bit DCT hash: the signs of
its 8x8 lowest-frequency cosine coefficients against their median, DC excluded (the
classic perceptual hash).  Re-encoding and resizing move few bits; distinct images differ
in about half of them.  Pairs within ``max_distance`` bits are found by multi-index,
multi-probe hashing (:func:`hamming_pairs`): the hash is cut into 3 chunks of 21 bits and
bucketed on each; a query looks up, per chunk, its own key with every subset of its
:data:`PROBE_BITS` least reliable bits flipped (those whose coefficient lay nearest the
median: the ones a re-encode flips).  Only bucket-mates are compared, never all pairs.

Every candidate is then confirmed on the thumbnails themselves (:func:`near_pairs`): the
correlation of the two grey thumbnails.  The hash alone pairs distinct pictures of similar
composition (a ship and a plane on the same grey sea); copies correlate at 0.95 and more.
The thresholds, and why the hash is hand-written rather than ``imagehash``'s (3.5x slower
per image, one image at a time, no per-bit reliability), are in the README's "Clean your
data" and the measurements behind them in the issue-23 notes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.data.fingerprints import THUMB_SIDE

#: Side of the low-frequency block of DCT coefficients behind the hash (minus DC: 63 bits).
HASH_BLOCK = 8
_BITS = HASH_BLOCK * HASH_BLOCK - 1
#: Chunks of the hash for the multi-index search, and the bits flipped per chunk's probes.
CHUNKS = 3
PROBE_BITS = 4
_CHUNK_WIDTH = -(-_BITS // CHUNKS)


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix of size n (rows are frequencies)."""
    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


def _bit_positions(chunks: int) -> np.ndarray:
    """Bit position of each AC coefficient (in the DCT block's order) in the 63-bit hash.

    Coefficients are ranked by frequency (zig-zag: the sum of the two frequencies) and
    dealt round-robin to the chunks, so that every chunk holds low and high frequencies
    alike: a chunk of only high frequencies would flip far more often.
    """
    freq = np.add.outer(np.arange(HASH_BLOCK), np.arange(HASH_BLOCK)).ravel()[1:]
    ranks = np.empty(len(freq), dtype=np.int64)
    ranks[np.argsort(freq, kind="stable")] = np.arange(len(freq))
    return (ranks % chunks) * _CHUNK_WIDTH + ranks // chunks


def _hash_matrix() -> np.ndarray:
    """(S*S, 63): a flattened thumbnail times it gives its AC coefficients, each in its
    bit's place in the hash.  One plain matrix product for the whole 2-D DCT (60,000
    thumbnails in tens of milliseconds), rather than n small transforms."""
    dct = _dct_matrix(THUMB_SIDE)[:HASH_BLOCK]  # (B, S): frequency x pixel
    # Coefficient (a, b): column frequency a, row frequency b, of pixel (row i, column j).
    full = np.einsum("bi,aj->ijab", dct, dct).reshape(THUMB_SIDE ** 2, HASH_BLOCK ** 2)
    return np.ascontiguousarray(full[:, 1:][:, np.argsort(_bit_positions(CHUNKS))],
                                dtype=np.float32)


_HASH_MATRIX = _hash_matrix()


@dataclass
class Codes:
    """Hashes and, per bit, how close its coefficient was to flipping (its margin from the
    median, relative to the image's mean margin): small margins are unreliable bits."""

    hashes: np.ndarray  #: (n,) uint64
    margins: np.ndarray  #: (n, 63) float32, indexed by bit position

    @classmethod
    def of(cls, grey: np.ndarray) -> "Codes":
        """The codes of (n, S, S) grey thumbnails, in bulk."""
        ac = grey.reshape(len(grey), -1) @ _HASH_MATRIX  # (n, 63), in bit order
        median = np.partition(ac, _BITS // 2, axis=1)[:, _BITS // 2:_BITS // 2 + 1]
        margins = np.abs(ac - median)
        margins /= margins.mean(axis=1, keepdims=True) + 1e-6
        bits = (ac > median).astype(np.uint64) << np.arange(_BITS, dtype=np.uint64)
        return cls(np.bitwise_or.reduce(bits, axis=1), margins)


def _chunk_keys(codes: Codes, chunk: int) -> tuple[np.ndarray, int, int]:
    """Each code's key in ``chunk``, and the chunk's first bit and width."""
    lo = chunk * _CHUNK_WIDTH
    width = min(_CHUNK_WIDTH, _BITS - lo)
    keys = ((codes.hashes >> np.uint64(lo)) & np.uint64((1 << width) - 1)).astype(np.int64)
    return keys, lo, width


def _probes(codes: Codes, chunk: int, probe_bits: int) -> np.ndarray:
    """(n, 2**probe_bits) keys of ``chunk`` to look up for each code: its own key with
    every subset of its ``probe_bits`` least reliable bits in that chunk flipped."""
    keys, lo, width = _chunk_keys(codes, chunk)
    if probe_bits == 0:
        return keys[:, None]
    weak = np.argpartition(codes.margins[:, lo:lo + width], probe_bits - 1,
                           axis=1)[:, :probe_bits].astype(np.int64)
    flips = np.zeros((len(keys), 1), dtype=np.int64)
    for k in range(probe_bits):
        flips = np.concatenate([flips, flips ^ (np.int64(1) << weak[:, k:k + 1])], axis=1)
    return keys[:, None] ^ flips


def hamming_pairs(codes: Codes, max_distance: int, probe_bits: int = PROBE_BITS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, distance)`` with ``a < b``: the pairs of ``codes`` within ``max_distance``
    bits that multi-index, multi-probe hashing finds, each pair once.

    Exact where it promises: a pair within ``CHUNKS - 1`` bits has an identical chunk
    (pigeonhole), so it is always found; beyond, a near-copy is missed only when every
    chunk has a flipped bit outside the probed ones (the audit's planted tests measure how
    rare that is).  Every pair returned is within ``max_distance``.
    """
    found_a, found_b = [], []
    for chunk in range(CHUNKS):
        keys, _, width = _chunk_keys(codes, chunk)
        order = np.argsort(keys, kind="stable")
        # Bucket k holds order[starts[k]:starts[k + 1]].
        starts = np.zeros((1 << width) + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys, minlength=1 << width), out=starts[1:])
        probes = _probes(codes, chunk, probe_bits)
        owners = np.repeat(np.arange(len(codes.hashes)), probes.shape[1])
        probes = probes.ravel()
        first, counts = starts[probes], starts[probes + 1] - starts[probes]
        hit = counts > 0
        owners, first, counts = owners[hit], first[hit], counts[hit]
        total = int(counts.sum())
        if total:  # expand each probe's bucket [first, first + count) into its members
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            found_a.append(np.repeat(owners, counts))
            found_b.append(order[np.repeat(first, counts) + offsets])
    if not found_a:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    # Distance first (elementwise, cheap), then one row per pair: only survivors are sorted.
    q, i = np.concatenate(found_a), np.concatenate(found_b)
    dist = np.bitwise_count(codes.hashes[q] ^ codes.hashes[i]).astype(np.int64)
    keep = (dist <= max_distance) & (q != i)
    a, b = np.minimum(q, i)[keep], np.maximum(q, i)[keep]
    key, first = np.unique(a * len(codes.hashes) + b, return_index=True)
    return key // len(codes.hashes), key % len(codes.hashes), dist[keep][first]


def near_pairs(grey: np.ndarray, max_distance: int, min_correlation: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, distance, correlation)`` of the pairs of (n, S, S) grey thumbnails whose
    hashes lie within ``max_distance`` bits and whose thumbnails correlate at
    ``min_correlation`` or more; ``a < b``, each pair once."""
    empty = np.zeros(0, dtype=np.int64)
    if len(grey) < 2:
        return empty, empty, empty, np.zeros(0, np.float32)
    a, b, d = hamming_pairs(Codes.of(grey), max_distance)
    corr = _correlations(grey, a, b)
    keep = corr >= min_correlation
    return a[keep], b[keep], d[keep], corr[keep]


def _correlations(grey: np.ndarray, a: np.ndarray, b: np.ndarray,
                  batch: int = 4096) -> np.ndarray:
    """The correlation of the grey thumbnails of each pair ``(a[k], b[k])``."""
    out = np.empty(len(a), dtype=np.float32)
    if not len(a):
        return out
    # Only the images in some pair, renumbered: normalising all 60,000 costs more.
    rows, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    flat = grey[rows].reshape(len(rows), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-3)
    ia, ib = inverse[:len(a)], inverse[len(a):]
    for s in range(0, len(a), batch):
        out[s:s + batch] = np.einsum("ij,ij->i", flat[ia[s:s + batch]], flat[ib[s:s + batch]])
    return out
