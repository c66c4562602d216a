"""Training augmentation applied to whole uint8 batches, on whatever device they live on.

Working on batches instead of per-sample PIL images is what lets a GPU train at tens of
thousands of images per second: one indexing op crops a whole batch, one ``grid_sample``
resizes a whole batch of random crops.  Every sample still gets its own random crop, flip
and policy op.

* small inputs (CIFAR-style, see ``ModelSpec.small_input``): zero-pad by 1/8 of the
  side and crop back at a random offset, then flip;
* larger inputs: random-resized crop (area share ``crop_scale``-1, 0.08 as torchvision by
  default; ratio 3/4-4/3) from the decoded base image, then flip.

An optional policy (``autoaugment``, ``randaugment``, ``trivialaugment``: torchvision
transforms v2) follows; it draws one op per chunk of the batch, so samples in different
chunks get different ops.  Cutout (one grey square per image) comes last.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

POLICIES = ("none", "autoaugment", "randaugment", "trivialaugment")
#: The smallest share of the image a random-resized crop keeps, as torchvision's.
CROP_SCALE = 0.08
_POLICY_CHUNK = 16  # samples sharing one random policy op


def make_policy(name: str):
    """The torchvision v2 transform for a policy name (``None`` for ``"none"``)."""
    if name == "none":
        return None
    # Imported only when asked for: torchvision.transforms adds seconds to every start-up.
    from torchvision.transforms import v2

    return {
        "autoaugment": v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
        "randaugment": v2.RandAugment(),
        "trivialaugment": v2.TrivialAugmentWide(),
    }[name]


def pad_crop(images: torch.Tensor, out_shape, pad: int, generator=None) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop ``out_shape`` at a random offset per sample."""
    n, c, _, _ = images.shape
    h, w = out_shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dev = images.device
    dy = torch.randint(0, padded.shape[2] - h + 1, (n, 1, 1), generator=generator, device=dev)
    dx = torch.randint(0, padded.shape[3] - w + 1, (n, 1, 1), generator=generator, device=dev)
    rows = dy + torch.arange(h, device=dev).view(1, h, 1)
    cols = dx + torch.arange(w, device=dev).view(1, 1, w)
    batch = torch.arange(n, device=dev).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_resized_boxes(n: int, height: int, width: int, scale=(CROP_SCALE, 1.0),
                         ratio=(3 / 4, 4 / 3), tries: int = 10, generator=None,
                         device=None) -> torch.Tensor:
    """(n, 4) crop boxes ``x1, y1, x2, y2`` drawn as ``RandomResizedCrop`` draws them.

    Ten tries per sample, vectorised; samples with no valid try fall back to the
    largest centre crop within the ratio range, as torchvision does.
    """
    area = height * width
    target = area * torch.empty(n, tries, device=device).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                          generator=generator)
    aspect = torch.exp(log_r)
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    valid = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(valid.any(1), valid.float().argmax(1), -1)
    in_ratio = min(max(width / height, ratio[0]), ratio[1])
    fw, fh = (width, round(width / in_ratio)) if width / height < ratio[0] else \
        (round(height * in_ratio), height) if width / height > ratio[1] else (width, height)
    pick = first.clamp(min=0)[:, None]
    cw = torch.where(first >= 0, w.gather(1, pick)[:, 0], float(fw))
    ch = torch.where(first >= 0, h.gather(1, pick)[:, 0], float(fh))
    x1 = torch.floor(torch.rand(n, generator=generator, device=device) * (width - cw + 1))
    y1 = torch.floor(torch.rand(n, generator=generator, device=device) * (height - ch + 1))
    x1 = torch.where(first >= 0, x1, ((width - cw) / 2).floor())
    y1 = torch.where(first >= 0, y1, ((height - ch) / 2).floor())
    return torch.stack([x1, y1, x1 + cw, y1 + ch], dim=1)


def random_resized_crop(images: torch.Tensor, out_shape, scale=(CROP_SCALE, 1.0),
                        generator=None) -> torch.Tensor:
    """Per-sample random-resized crop of a uint8 batch, bilinear, in one ``grid_sample``.

    Each box becomes an affine map from the output grid onto the box (normalised
    coordinates, pixel edges at -1 and 1), so the whole batch is resampled at once.
    """
    n, c, height, width = images.shape
    x1, y1, x2, y2 = random_resized_boxes(n, height, width, scale, generator=generator,
                                          device=images.device).unbind(1)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = (x2 - x1) / width
    theta[:, 0, 2] = (x1 + x2) / width - 1
    theta[:, 1, 1] = (y2 - y1) / height
    theta[:, 1, 2] = (y1 + y2) / height - 1
    grid = F.affine_grid(theta, [n, c, *out_shape], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def cutout(images: torch.Tensor, side: int, fill: int = 127, generator=None) -> torch.Tensor:
    """Fill one ``side`` x ``side`` square per sample with grey (DeVries & Taylor, 2017).

    The centre is uniform over the image, so squares near a border are clipped and the
    network also sees partly hidden objects.  Mid-grey sits near the dataset mean, so after
    normalisation the hole is close to zero, as in the paper.
    """
    n, _, h, w = images.shape
    dev = images.device
    cy = torch.randint(0, h, (n, 1, 1), generator=generator, device=dev)
    cx = torch.randint(0, w, (n, 1, 1), generator=generator, device=dev)
    top, left = cy - side // 2, cx - side // 2
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    hole = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return images.masked_fill(hole.unsqueeze(1), fill)


def random_flip(images: torch.Tensor, generator=None) -> torch.Tensor:
    """Mirror each sample left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


class BatchAugment:
    """Callable turning a batch of base-form uint8 images into augmented input-shape ones."""

    def __init__(self, input_shape, small: bool, policy: str = "none", cutout: float = 0.0,
                 crop_scale: float = CROP_SCALE):
        self.input_shape = tuple(input_shape)
        self.small = small
        self.scale = (crop_scale, 1.0)
        self.pad = max(1, round(min(input_shape) / 8))
        self.policy = make_policy(policy)
        self.cutout = round(cutout * min(input_shape))
        self.generator: torch.Generator | None = None

    def seed(self, seed: int, device: torch.device) -> None:
        """Draw from a generator on ``device`` (no host-device copies per batch), reseeded.

        The policies draw from torch's global generator instead (torchvision's v2 takes no
        generator): seed that too, as the trainer does every epoch, for a replayable run.
        """
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.small:
            images = pad_crop(images, self.input_shape, self.pad, self.generator)
        else:
            images = random_resized_crop(images, self.input_shape, self.scale, self.generator)
        images = random_flip(images, self.generator)
        if self.policy is not None:
            images = torch.cat([self.policy(chunk) for chunk in images.split(_POLICY_CHUNK)])
        if self.cutout:
            images = cutout(images, self.cutout, generator=self.generator)
        return images
