"""Batch augmentation: each op does to every sample what its per-image counterpart would.

Training quality rests on these: a crop that is off by a pixel, a flip shared by the whole
batch or a seed that does not replay would all train without an error and just score worse.
"""
from __future__ import annotations

import pytest
import torch

from utils.data import augment
from utils.data.augment import BatchAugment, cutout, pad_crop, random_flip, random_resized_boxes


def distinct_images(n: int, size: int = 8) -> torch.Tensor:
    """uint8 batch where every pixel value says where it came from (sample, row, column)."""
    values = torch.arange(n * size * size).view(n, 1, size, size) % 251
    return values.expand(n, 3, size, size).to(torch.uint8).contiguous()


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_pad_crop_takes_a_window_of_the_zero_padded_image_per_sample():
    images = distinct_images(64) + 1  # no zeros inside: padding is recognisable
    out = pad_crop(images, (8, 8), pad=2, generator=generator())
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert len(matches) == 1, f"sample {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10, "samples should get their own offsets, not one per batch"


def test_random_flip_mirrors_about_half_of_the_samples_each_on_its_own():
    images = distinct_images(200)
    out = random_flip(images, generator=generator())
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, images)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images)])
    assert bool((flipped ^ kept).all())
    assert 70 < int(flipped.sum()) < 130


def test_random_resized_boxes_follow_torchvision_ranges():
    boxes = random_resized_boxes(4000, 60, 80, generator=generator())
    x1, y1, x2, y2 = boxes.unbind(1)
    assert bool((x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 80).all() and (y2 <= 60).all())
    w, h = x2 - x1, y2 - y1
    assert bool((w >= 1).all() and (h >= 1).all())
    assert torch.equal(boxes, boxes.round()), "boxes lie on whole pixels"
    area = w * h / (60 * 80)
    aspect = w / h
    # Rounding to whole pixels moves the bounds a little.
    assert float(area.min()) > 0.07 and float(area.max()) <= 1.0
    assert float(aspect.min()) > 0.7 and float(aspect.max()) < 1.4
    # Uniform over [0.08, 1] is truncated by boxes that do not fit, as in torchvision.
    assert 0.4 < float(area.mean()) < 0.6


def test_a_crop_scale_keeps_at_least_that_share_of_the_image():
    """--crop-scale 0.35 (the CPU photo recipe) never crops less than 35% of the picture;
    1.0 keeps the whole picture, resized."""
    boxes = random_resized_boxes(2000, 60, 80, scale=(0.35, 1.0), generator=generator())
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (60 * 80)
    assert float(area.min()) > 0.33 and float(area.mean()) > 0.55
    images = distinct_images(3, size=8)
    whole = BatchAugment((8, 8), small=False, crop_scale=1.0)
    whole.seed(0, torch.device("cpu"))
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(2)) for o, i in zip(whole(images),
                                                                               images))


def test_random_resized_boxes_fall_back_to_a_centre_crop_for_extreme_shapes():
    # A 1 x 50 strip admits no box of ratio 3/4..4/3 with 8-100 % of its area.
    boxes = random_resized_boxes(5, 1, 50, generator=generator())
    assert boxes.tolist() == [[24.0, 0.0, 25.0, 1.0]] * 5


def test_random_resized_crop_resamples_exactly_the_drawn_box(monkeypatch):
    images = distinct_images(2, size=8)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 0.0, 8.0, 4.0]])
    monkeypatch.setattr(augment, "random_resized_boxes", lambda *a, **k: boxes)
    whole = augment.random_resized_crop(images, (8, 8))
    assert torch.equal(whole[0], images[0]), "the whole image at its own size is unchanged"
    quarter = augment.random_resized_crop(images, (4, 4))
    assert torch.equal(quarter[1], images[1, :, 0:4, 4:8]), "top-right quarter, pixel for pixel"


def test_cutout_fills_one_clipped_square_per_sample_and_nothing_else():
    images = torch.full((300, 3, 16, 16), 200, dtype=torch.uint8)
    out = cutout(images, 6, generator=generator())
    hole = out[:, 0] == 127
    assert torch.equal(out == 127, hole.unsqueeze(1).expand_as(out)), "all channels alike"
    assert bool((out[~hole.unsqueeze(1).expand_as(out)] == 200).all())
    rows, cols = hole.any(2), hole.any(1)
    heights, widths = rows.sum(1), cols.sum(1)
    # One axis-aligned rectangle: its area is the product of the rows and columns it spans.
    assert torch.equal(hole.sum((1, 2)), heights * widths)
    assert int(heights.max()) == 6 and int(widths.max()) == 6
    assert int(heights.min()) < 6, "squares near a border are clipped"


@pytest.mark.parametrize("policy", augment.POLICIES)
@pytest.mark.parametrize("small, shape", [(True, (16, 16)), (False, (24, 20))])
def test_batch_augment_replays_with_its_seed(policy, small, shape):
    """A resumed run must see exactly the augmented batches it would have seen.

    Seeded as the trainer seeds each epoch: the policies draw from torch's global generator.
    """
    images = torch.randint(0, 256, (40, 3, 28, 28), dtype=torch.uint8)
    if small:
        images = images[:, :, :16, :16]
    aug = BatchAugment(shape, small, policy, cutout=0.25)

    def augmented(seed):
        torch.manual_seed(seed)
        aug.seed(seed, torch.device("cpu"))
        return aug(images)

    first = augmented(7)
    assert first.dtype == torch.uint8 and first.shape == (40, 3, *shape)
    assert torch.equal(augmented(7), first)
    assert not torch.equal(augmented(8), first)


def test_cutout_size_is_a_fraction_of_the_input_side():
    assert BatchAugment((32, 32), True, cutout=0.5).cutout == 16
    assert BatchAugment((224, 160), False, cutout=0.25).cutout == 40
    assert BatchAugment((32, 32), True).cutout == 0
    assert BatchAugment((32, 32), True).pad == 4, "CIFAR-style: pad by 1/8 of the side"
