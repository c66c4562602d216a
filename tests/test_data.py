"""The decode cache and the streaming path: same pixels, reused until a file changes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import COLOURS, make_dataset, make_image
from utils.data import batches as data
from utils.data import cache
from utils.data.batches import Loading, make_batches
from utils.data.lists import read_annotation, write_annotation
from utils.data.preprocess import Geometry

GEOMETRY = Geometry((16, 16))


@pytest.fixture
def annotated(tmp_path) -> Path:
    """An annotation file of 2 classes x 4 images of 20x20 (so decoding resizes them)."""
    make_dataset(tmp_path, classes=("cat", "dog"), train=4, test=1, size=(20, 20))
    samples = [(label, str(path)) for label, name in enumerate(("cat", "dog"))
               for path in sorted((tmp_path / "datasets" / "train" / name).iterdir())]
    annotation = tmp_path / "cls_train.txt"
    write_annotation(annotation, samples)
    return annotation


def batches(annotation, *, train: bool, cache: bool, cache_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and label of ``annotation`` through one of the two paths: in file order
    for evaluation; for training (shuffled), in an order fixed by the pixels alone."""
    source = make_batches(read_annotation(annotation, ["cat", "dog"]), GEOMETRY, 8, train=train,
                          source=annotation, loading=Loading(cache_dir=cache_dir if cache else None))
    if not train:
        images, labels, _ = zip(*source)
        return torch.cat(images), torch.cat(labels)
    source.set_epoch(0)
    images, labels, _ = next(iter(source))  # one batch: the whole shuffled set
    key = images.flatten(1).double() @ torch.rand(images[0].numel(), dtype=torch.float64,
                                                  generator=torch.Generator().manual_seed(0))
    order = key.argsort()
    return images[order], labels[order]


def cached_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in (cache_dir / "decoded").iterdir())


@pytest.mark.parametrize("train", [False, True])
def test_cache_and_stream_give_the_same_pixels(annotated, tmp_path, train):
    cached = batches(annotated, train=train, cache=True, cache_dir=tmp_path / "c")
    streamed = batches(annotated, train=train, cache=False, cache_dir=tmp_path / "c")
    assert torch.equal(cached[1], streamed[1])
    assert torch.equal(cached[0], streamed[0])


def test_cache_is_decoded_once_and_reused(annotated, tmp_path, monkeypatch):
    decoded = []
    load = cache.load_or_warn
    monkeypatch.setattr(cache, "load_or_warn", lambda path: decoded.append(path) or load(path))
    first = batches(annotated, train=False, cache=True, cache_dir=tmp_path / "c")
    assert len(decoded) == 8
    second = batches(annotated, train=False, cache=True, cache_dir=tmp_path / "c")
    assert len(decoded) == 8, "the second pass reads the cache, not the images"
    assert torch.equal(first[0], second[0])


def test_a_changed_image_rebuilds_the_cache_and_drops_the_outdated_one(annotated, tmp_path):
    cache_dir = tmp_path / "c"
    other = tmp_path / "other.txt"  # another annotation file: its cache must survive
    other.write_text(annotated.read_text().splitlines()[0] + "\n")
    batches(other, train=False, cache=True, cache_dir=cache_dir)
    before = batches(annotated, train=False, cache=True, cache_dir=cache_dir)
    kept = cached_files(cache_dir)
    assert len(kept) == 4  # images + labels, for each annotation file

    first = annotated.parent / annotated.read_text().splitlines()[0].partition(";")[2]
    make_image(first, COLOURS[2], size=(20, 20), seed=99)
    os.utime(first, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    after = batches(annotated, train=False, cache=True, cache_dir=cache_dir)

    assert not torch.equal(after[0][0], before[0][0]), "the edited image is decoded anew"
    assert torch.equal(after[0][1:], before[0][1:])
    now = cached_files(cache_dir)
    assert len(now) == 4, "the outdated version of the edited file's cache is deleted"
    assert len(set(now) & set(kept)) == 2, "the other annotation file's cache is untouched"


@pytest.mark.parametrize("images, batch, expected", [
    (36, 8, (5, 0)),      # 4 full batches and one of 4: kept
    (33, 8, (4, 1)),      # a batch of 1: too small for BatchNorm, left out (another each epoch)
    (244, 128, (2, 0)),   # the 244-photo set: the second batch holds the other 116
    (16, 8, (2, 0)),
])
def test_the_last_partial_batch_is_kept_unless_too_small(images, batch, expected):
    assert data.training_batches(images, batch) == expected


def test_every_training_image_is_used_each_epoch():
    images = torch.arange(36, dtype=torch.uint8).view(36, 1, 1, 1).expand(36, 3, 2, 2)
    batches = data.TensorBatches(images, torch.arange(36), torch.arange(36), 8, train=True,
                                 seed=3)
    for epoch in range(2):
        batches.set_epoch(epoch)
        seen = torch.cat([lines for _, _, lines in batches])
        assert len(batches) == 5 and sorted(seen.tolist()) == list(range(36))
