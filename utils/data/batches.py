"""From annotation lines to batches of uint8 images on the device.

Two sources give the same batches:

* :class:`DecodedCache` decodes every image once (in parallel) into one uint8 tensor,
  saved under ``.cache/`` and reused until an annotated file changes (the outdated copy
  is then deleted).  Batches are then plain index lookups, on the GPU when the tensor
  fits there: the data pipeline costs nothing per epoch.  This is the default.
* :class:`ImageDataset` + a ``DataLoader`` decode per sample in worker processes, for
  datasets too large for the cache budget.

Both yield ``(images, labels, lines)`` batches: uint8 images in the same "base" form
(:func:`utils.data.preprocess.to_base` for training, :func:`utils.data.preprocess.to_uint8` for
evaluation), so augmentation (``utils.data.augment``) and evaluation see identical pixels whichever
path produced them, and for each image its line in the annotation (what an error analysis
needs to name the file; unreadable images are skipped, so positions alone would not do).
:func:`one_by_one_batches` is the naive loop both replace, kept to measure the difference.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from utils.cli import UserError
from utils.data import preprocess
from utils.data.cache import DecodedCache, ImageDataset, collate_valid, decoded_nbytes
from utils.data.image import load_or_warn
from utils.data.preprocess import Geometry
from utils.distributed import Dist
from utils.layout import CACHE_DIR

#: The random stream of batch shuffling; augmentation draws streams 0 .. world_size - 1.
SHUFFLE_STREAM = 100_003


def training_batches(images: int, batch_size: int) -> tuple[int, int]:
    """(batches per epoch, images left out per epoch) for ``images`` training images.

    The last, partial batch is kept unless it is smaller than a quarter of a batch (and
    than 2): a batch that small would give BatchNorm statistics so noisy that the running
    averages, read by the validation right after, would suffer.  Which images are left out
    changes every epoch with the shuffle, so none goes unused.
    """
    full, rest = divmod(images, batch_size)
    if rest and rest >= max(2, batch_size // 4):
        return full + 1, 0
    return full, rest


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The seed of one random stream in one epoch of a run.

    Every epoch re-seeds from ``(seed, epoch)`` alone, so a run resumed at any epoch draws
    exactly what it would have drawn; ``stream`` keeps independent draws (each process's
    augmentation, the batch order) from sharing a sequence.
    """
    return (seed * 1_000_003 + epoch * 1009 + stream) % 2**63


@dataclass(frozen=True)
class Loading:
    """How this process makes its batches: the settings every batch source of a run shares.

    Attributes:
        workers: decoding processes (0 decodes in this process).
        cache_dir: where the decode cache lives; ``None`` decodes every image on the fly.
        device: where the batches are used (a GPU keeps the decode cache when it fits).
        dist: this process's share of a ``torchrun`` job.
        seed: the run's seed: the shuffle of each epoch derives from it.
        cache_max_gb: datasets whose decoded form is larger stream instead.
    """

    workers: int = 0
    cache_dir: str | os.PathLike | None = CACHE_DIR
    device: torch.device = torch.device("cpu")
    dist: Dist = Dist()
    seed: int = 0
    cache_max_gb: float = 16.0


class TensorBatches:
    """Shuffled (or ordered) batches from tensors already in memory, sharded per rank.

    The order depends only on ``seed`` and the epoch (:meth:`set_epoch`), so a resumed run
    sees exactly the batches it would have seen.  Training shards are padded to equal length
    (every rank must take the same number of steps under DDP) and end with a partial batch
    (:func:`training_batches`); evaluation shards are not padded, so every image is counted
    exactly once.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, lines: torch.Tensor,
                 batch_size: int, *, train: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.images, self.labels, self.lines = images, labels, lines
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, SHUFFLE_STREAM))
        order = torch.randperm(n, generator=g)
        per_rank = -(-n // self.world_size)
        order = torch.cat([order, order[: per_rank * self.world_size - n]])
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        n = len(self.labels)
        if self.train:  # from the padded shard
            return training_batches(-(-n // self.world_size), self.batch_size)[0]
        return -(-len(range(self.rank, n, self.world_size)) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        on_device = indices.to(self.images.device)
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, len(indices)), self.batch_size):
            end = start + self.batch_size
            yield (self.images[on_device[start:end]], self.labels[on_device[start:end]],
                   self.lines[indices[start:end]])


class StreamBatches:
    """Per-sample decoding through a ``DataLoader``: the path for datasets beyond the cache."""

    def __init__(self, samples, geometry: Geometry, batch_size: int, *, train: bool,
                 workers: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pin_memory=False):
        self.train = train
        dataset = ImageDataset(samples, geometry, train)
        # Evaluation counts every image exactly once; DistributedSampler would pad the shards.
        self.sampler = (DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                           shuffle=True, seed=seed) if train
                        else range(rank, len(dataset), world_size))
        drop_last = train and training_batches(len(self.sampler), batch_size)[1] > 0
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler,
                                 num_workers=workers, collate_fn=collate_valid,
                                 drop_last=drop_last, pin_memory=pin_memory,
                                 persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None)

    def set_epoch(self, epoch: int) -> None:
        if self.train:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def check_batch_size(batch_size: int, samples: Sequence, source, flag: str = "--batch-size",
                     world_size: int = 1) -> None:
    """A training batch must fit in the training set (every process's share of it)."""
    if len(samples) < batch_size * world_size:
        raise UserError(f"{flag} {batch_size} is larger than the {len(samples)} images in "
                        f"{source}: lower it")


def make_batches(samples: Sequence[tuple[int, str]], geometry: Geometry, batch_size: int, *,
                 train: bool, source, loading: Loading = Loading()):
    """Batches of ``(uint8 images, labels, lines)`` of ``samples`` (the lines of annotation
    file ``source``, which names their decode cache), made as ``loading`` says.

    Uses the decode cache when it fits ``loading.cache_max_gb`` (kept on the device when
    that is a GPU with room for it), else per-sample decoding.  ``len()`` is the number of
    batches; training batches are shuffled per epoch (``set_epoch``) and sharded over the
    job's processes.
    """
    device, dist, seed = loading.device, loading.dist, loading.seed
    cacheable = decoded_nbytes(len(samples), geometry, train) <= loading.cache_max_gb * 2**30
    if loading.cache_dir is not None and cacheable:
        decoded = DecodedCache.build(samples, geometry, train, source=source,
                                     cache_dir=loading.cache_dir, workers=loading.workers,
                                     dist=dist)
        images, labels = decoded.images, decoded.labels
        # On the GPU when it leaves most memory for training; else batches are copied over.
        if device.type == "cuda" and images.numel() < torch.cuda.mem_get_info(device)[0] / 4:
            images, labels = images.to(device), labels.to(device)
        return TensorBatches(images, labels, decoded.lines, batch_size, train=train,
                             seed=seed, rank=dist.rank, world_size=dist.world_size)
    return StreamBatches(samples, geometry, batch_size, train=train, workers=loading.workers,
                         seed=seed, rank=dist.rank, world_size=dist.world_size,
                         pin_memory=device.type == "cuda")


def one_by_one_batches(samples: Sequence[tuple[int, str]],
                       geometry: Geometry) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The naive evaluation loop's input: each image decoded when needed, batches of one.

    Feeding this to :func:`utils.evaluation.scoring.evaluate` reproduces the usual "for each image:
    open, preprocess, forward" loop with the same metrics, the baseline that batched
    evaluation is measured against (``eval.py --one-by-one``, ``benchmark.py``).
    """
    for line, (label, path) in enumerate(samples):
        image = load_or_warn(path)
        if image is not None:
            yield (preprocess.to_uint8(image, geometry)[None], torch.tensor([label]),
                   torch.tensor([line]))
