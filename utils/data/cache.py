"""Decoding images once: the uint8 cache every epoch's batches are looked up in.

:class:`DecodedCache` decodes every image of an annotation file once (in parallel) into one
uint8 tensor, saved under ``.cache/`` and reused until an annotated file changes (the
outdated copy is then deleted).  :class:`ImageDataset` is the same decoding per sample, for
a ``DataLoader`` (building the cache, and datasets too large for it).  Training images are
kept in their "base" form (:func:`utils.data.preprocess.to_base`), evaluation images in
their final one (:func:`utils.data.preprocess.to_uint8`).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.cli import UserError, warn
from utils.data import preprocess
from utils.data.image import load_or_warn
from utils.data.preprocess import Geometry
from utils.distributed import Dist
from utils.layout import CACHE_DIR

CACHE_FORMAT = 2  # 2: the annotation line of each cached image is kept beside its label


class ImageDataset(Dataset):
    """Per-sample decoding: ``(uint8 (3, H, W) tensor, label)``, or ``None`` if unreadable."""

    def __init__(self, samples: Sequence[tuple[int, str]], geometry: Geometry, train: bool):
        self.samples = list(samples)
        self.geometry = geometry
        self.train = train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        label, path = self.samples[index]
        image = load_or_warn(path)
        if image is None:
            return None
        to_tensor = preprocess.to_base if self.train else preprocess.to_uint8
        return to_tensor(image, self.geometry), label, index


def collate_valid(batch):
    """Stack a batch (images, labels, lines), dropping the images that could not be read."""
    batch = [item for item in batch if item is not None]
    if not batch:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0, dtype=torch.uint8), empty, empty
    images, labels, lines = zip(*batch)
    return (torch.stack(images), torch.tensor(labels, dtype=torch.long),
            torch.tensor(lines, dtype=torch.long))


def _cache_slot(source, geometry: Geometry, train: bool) -> str:
    """Names the caches of one annotation file at one geometry: one version is kept."""
    where = os.path.abspath(os.fspath(source))
    shape = f"{geometry.input_shape};{geometry.base}"
    return hashlib.sha1(f"{where};{shape};{train}".encode()).hexdigest()[:12]


def _cache_key(samples) -> str:
    """Changes whenever a listed file or the list itself changes (the slot holds the geometry).

    A file is known by its size, mtime, change time and inode: the mtime alone can be set
    back (``cp -p``, ``tar x``, ``touch -r``), the change time cannot, and a replaced file
    has a new inode or change time.  (Copying the whole project therefore rebuilds it.)
    """
    h = hashlib.sha1(f"{CACHE_FORMAT};".encode())
    for label, path in samples:
        try:
            st = os.stat(path)
            h.update(f"{label};{path};{st.st_size};{st.st_mtime_ns};{st.st_ctime_ns};"
                     f"{st.st_ino}\n".encode())
        except OSError:
            h.update(f"{label};{path};missing\n".encode())
    return h.hexdigest()[:20]


@dataclass
class DecodedCache:
    """All images of an annotation file decoded once: ``images`` (N, 3, H, W) uint8, their
    ``labels`` and their ``lines`` in the annotation file."""

    images: torch.Tensor
    labels: torch.Tensor
    lines: torch.Tensor
    skipped: int

    @classmethod
    def build(cls, samples, geometry: Geometry, train: bool, *, source, cache_dir=CACHE_DIR,
              workers=0, dist: Dist = Dist()) -> "DecodedCache":
        """Load the cache of annotation file ``source`` from ``cache_dir``, or decode and
        save it, deleting that file's outdated versions.  Under DDP one process per machine
        decodes while the others wait."""
        slot = _cache_slot(source, geometry, train)
        name = f"{slot}-{_cache_key(samples)}"
        folder = Path(cache_dir) / "decoded"
        images_file, labels_file = folder / f"{name}.images.npy", folder / f"{name}.labels.npy"
        decoded = None
        if dist.local_rank == 0 and not labels_file.exists():
            decoded = _decode_all(samples, geometry, train, workers)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                _save_npy(images_file, decoded[0].numpy())
                # Written last: marks the pair complete.  Labels and lines, one row each.
                _save_npy(labels_file, torch.stack(decoded[1:]).numpy())
            except OSError as exc:  # a full disk, a read-only folder: only speed is lost
                if dist.enabled:
                    raise UserError(f"cannot write the decode cache in {folder}: "
                                    f"{exc.strerror or exc} (free space, or --no-cache)") \
                        from None
                warn(f"decode cache not saved in {folder} ({exc.strerror or exc}): the "
                     "next run decodes the images again")
            else:
                # At 224x224 one version of a 50,000-image dataset is 10 GB: editing the
                # dataset must not leave the old one behind. Readers hold their own copy.
                for outdated in folder.glob(f"{slot}-*.npy"):
                    if not outdated.name.startswith(f"{name}."):
                        outdated.unlink(missing_ok=True)
        dist.barrier()
        if decoded is not None and not dist.enabled:
            images, labels, lines = decoded
        else:
            labels, lines = torch.from_numpy(np.load(labels_file))
            images = torch.from_numpy(np.load(images_file))
        skipped = len(samples) - len(labels)
        if skipped:
            warn(f"skipped {skipped} of {len(samples)} annotated images that could not be "
                 "read (re-run txt_annotation.py to list them)")
        return cls(images, labels, lines, skipped)


def decoded_nbytes(num_samples: int, geometry: Geometry, train: bool) -> int:
    """Bytes the decode cache of ``num_samples`` images would take."""
    h, w = geometry.base if train else geometry.input_shape
    return num_samples * 3 * h * w


def _decode_all(samples, geometry, train, workers):
    loader = DataLoader(ImageDataset(samples, geometry, train), batch_size=256,
                        num_workers=workers, collate_fn=collate_valid)
    parts = [batch for batch in loader if len(batch[1])]
    if not parts:
        raise UserError("none of the annotated images could be read")
    return tuple(torch.cat(column) for column in zip(*parts))


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write atomically under a name of this process's own: two runs building one cache
    at once each write their copy, and the rename keeps one; a failure leaves nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
