"""MobileNetV2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Each block expands a thin bottleneck with a 1x1 conv (factor t), filters it with a 3x3
depthwise conv, and projects it back with a *linear* 1x1 conv (no ReLU: a ReLU in the thin
bottleneck would destroy information).  The residual connects the thin ends.
Module names follow torchvision's ``MobileNetV2`` so the official ImageNet weights load.
"""
from __future__ import annotations

import torch
from torch import nn

from nets.common import ConvBNAct, ImageClassifier, check_width_mult, init_weights, make_divisible
from nets.geometry import SMALL_INPUT_DROPS, stem_strides
from nets.registry import PretrainedCfg, register_model

#: (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1) -> 3x3 depthwise -> linear 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(ImageClassifier):
    """MobileNetV2 with width multiplier α.

    Args:
        num_classes: size of the final linear layer.
        width_mult: α; channels are scaled and rounded to multiples of 8 (the last 1x1 conv
            only grows, never shrinks, as in the paper).
        in_channels: channels of the input image.
        small_input: for inputs below 96 px, the stem conv and the first stride-2 stage use
            stride 1 (8x downsampling instead of 32x), so 32x32 reaches the head as 4x4, as
            in the usual CIFAR variant.  No parameter changes shape.
        dropout: dropout probability before the final linear layer.
        small_input_drops: how many of those stride-2 steps a small input drops (1: one,
            16x downsampling, about 2.5x faster to train on a CPU).
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3,
                 small_input: bool = False, dropout: float = 0.2,
                 small_input_drops: int = SMALL_INPUT_DROPS) -> None:
        super().__init__()
        width_mult = check_width_mult(width_mult)
        stem, *strides = stem_strides([2, *(s for *_, s in INVERTED_RESIDUAL_SETTING)],
                                      small_input, small_input_drops)
        channels = make_divisible(STEM_CHANNELS * width_mult)
        last_channels = make_divisible(LAST_CHANNELS * max(1.0, width_mult))
        layers: list[nn.Module] = [
            ConvBNAct(in_channels, channels, 3, stem, activation=nn.ReLU6)]
        for (t, c, n, _), s in zip(INVERTED_RESIDUAL_SETTING, strides):
            out_channels = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
                channels = out_channels
        layers.append(ConvBNAct(channels, last_channels, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        init_weights(self)


@register_model(PretrainedCfg("https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"))
def mobilenetv2(**kwargs) -> MobileNetV2:
    """MobileNetV2 (3.5M parameters, 300M MACs at 224x224 and α = 1)."""
    return MobileNetV2(**kwargs)
