"""Input sizes: which stem a network uses, and the sizes it accepts.

torch-free, like :mod:`nets.registry`: the model description (``utils/model/spec.py``) asks
these questions in processes that never import torch (an ``.onnx`` model's prediction).
"""
from __future__ import annotations

from typing import Sequence

#: Inputs with a side below this use the small-input stem (CIFAR-style: 32x32 images are
#: downsampled 8x instead of 32x, so they reach the head as 4x4 rather than 1x1).
SMALL_INPUT = 96

#: Every family downsamples 8x with its small-input stem, so this is the smallest side
#: that still leaves a 1x1 feature map for the head.
MIN_INPUT = 8

#: How many of a network's first stride-2 steps the small-input stem drops by default
#: (32x -> 8x downsampling).  Dropping only one (32x -> 16x, ``small_input_drops=1``) leaves
#: a quarter of the early activations: measured 2.5x the training images per second on a
#: 2-core CPU at 32 px, and more accuracy per second there (README, "Results on a CPU").
SMALL_INPUT_DROPS = 2


def is_small_input(input_shape: Sequence[int]) -> bool:
    """True when ``(H, W)`` is small enough for the small-input stem."""
    return min(input_shape) < SMALL_INPUT


def stem_strides(strides: Sequence[int], small_input: bool,
                 drops: int = SMALL_INPUT_DROPS) -> list[int]:
    """The network's downsampling ``strides`` in order, adapted to the input size.

    For small inputs the first ``drops`` stride-2 steps (by default two: the stem's and the
    first stage's, or the stem and its max-pool) become stride 1.  Only strides change,
    never a parameter's shape, so ImageNet weights load either way.  Shared by every family.

    Raises:
        ValueError: ``drops`` is not 1 or 2.
    """
    if isinstance(drops, bool) or drops not in (1, 2):
        raise ValueError(f"small_input_drops must be 1 or 2, got {drops!r}")
    out, left = [], drops if small_input else 0
    for stride in strides:
        if stride == 2 and left:
            stride, left = 1, left - 1
        out.append(stride)
    return out


#: The largest side accepted: beyond it a single image's activations outgrow any machine
#: this trains on (a hostile checkpoint or a typo must be an error, not an allocation).
MAX_INPUT = 4096


def check_input_shape(name: str, input_shape) -> tuple[int, int]:
    """``input_shape`` as ``(H, W)`` ints; ``ValueError`` unless both sides are within
    :data:`MIN_INPUT` .. :data:`MAX_INPUT`."""
    try:
        h, w = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input shape must be two integers H W, got {input_shape!r}") from None
    if min(h, w) < MIN_INPUT:
        raise ValueError(f"input shape {h}x{w} is too small for {name}: "
                         f"the minimum is {MIN_INPUT}x{MIN_INPUT}")
    if max(h, w) > MAX_INPUT:
        raise ValueError(f"input shape {h}x{w} is too large for {name}: "
                         f"the maximum is {MAX_INPUT}x{MAX_INPUT}")
    return h, w
