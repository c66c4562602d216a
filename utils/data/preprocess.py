"""The one evaluation preprocessing path: PIL image -> uint8 tensor of the input shape.

Training evaluation, ``eval.py``, ``predict.py`` and the decode cache all call
:func:`to_uint8` so a model is always scored on exactly the pixels it was validated on.
Normalisation happens later, on the batch and on the device (:func:`normalize`), which keeps
cached images in uint8 (4x smaller than float) and the host-to-device copies cheap.

Where the pixels come from is a :class:`Geometry`: the input size and the fraction of a
slightly larger resize that evaluation keeps (``ModelSpec.geometry`` gives a model's).

The pixels themselves are computed with Pillow and numpy (:func:`eval_array`); torch only
wraps the result (:func:`to_uint8`).  ONNX Runtime inference uses the arrays directly, so
a prediction from an ``.onnx`` file never imports torch (about two seconds of start-up).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Geometry:
    """An input size and its evaluation crop.

    Attributes:
        input_shape: the network's (H, W).
        crop_fraction: images are resized to cover ``input_shape / crop_fraction`` (the *base*
            shape) and evaluated on its centre ``input_shape``; 1.0 resizes straight to it
            (small, CIFAR-style inputs).  Training crops at random from the same base
            image, so both see the same field of view.
    """

    input_shape: tuple[int, int]
    crop_fraction: float = 1.0

    @property
    def base(self) -> tuple[int, int]:
        """The (H, W) images are decoded to before cropping."""
        h, w = self.input_shape
        return round(h / self.crop_fraction), round(w / self.crop_fraction)


#: :func:`resize_cover` resizes a whole image only while the result is at most this many
#: times the output (a 4:1 panorama); beyond, only the kept box is resampled.
_WHOLE_RESIZE_MAX = 4


def resize_cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize keeping the aspect ratio so the image covers ``size``, then centre-crop to it.

    Memory stays proportional to ``size`` whatever the image's shape: an image whose
    covering resize would exceed :data:`_WHOLE_RESIZE_MAX` times the output (a 1 x 150,000
    strip, a 20:1 panorama) has only the kept box resampled (``Image.resize(box=...)``,
    which also box-reduces large sources first).  Other images are resized whole and then
    cropped, exactly as before, so their pixels never change; the box path can differ
    from that by Pillow's rounding (a few levels on pixel noise), never by geometry.
    """
    h, w = size
    scale = max(h / image.height, w / image.width)
    new_w, new_h = max(w, round(image.width * scale)), max(h, round(image.height * scale))
    left, top = (new_w - w) // 2, (new_h - h) // 2
    if new_w * new_h > _WHOLE_RESIZE_MAX * w * h:
        sx, sy = image.width / new_w, image.height / new_h
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        return image.resize((w, h), Image.BILINEAR, box=box, reducing_gap=3.0)
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.BILINEAR, reducing_gap=3.0)
    return image.crop((left, top, left + w, top + h))


def base_array(image: Image.Image, geometry: Geometry) -> np.ndarray:
    """Decode-cache form of a training image: (3, *geometry.base) uint8 array."""
    pixels = np.asarray(resize_cover(image, geometry.base), dtype=np.uint8)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def eval_array(image: Image.Image, geometry: Geometry) -> np.ndarray:
    """Evaluation form of an image: (3, H, W) uint8 array, the centre of the base image."""
    base = base_array(image, geometry)
    (h, w), (bh, bw) = geometry.input_shape, base.shape[1:]
    top, left = (bh - h) // 2, (bw - w) // 2
    return base[:, top:top + h, left:left + w]


def to_base(image: Image.Image, geometry: Geometry) -> torch.Tensor:
    """:func:`base_array` as a tensor."""
    import torch  # on use: this module serves torch-free inference too

    return torch.from_numpy(base_array(image, geometry))


def to_uint8(image: Image.Image, geometry: Geometry) -> torch.Tensor:
    """:func:`eval_array` as a tensor."""
    import torch

    return torch.from_numpy(eval_array(image, geometry))


def normalize(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, 3, H, W) batch -> float32 normalised batch, on the batch's device."""
    import torch

    mean = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1) * 255
    std = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1) * 255
    return (batch.float() - mean) / std


def normalize_array(batch: np.ndarray, mean, std) -> np.ndarray:
    """:func:`normalize` in numpy, for ONNX Runtime: the same float32 operations, so the
    same values to the last bit."""
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(255)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(255)
    return (batch.astype(np.float32) - mean) / std
