"""MobileNetV1 (Howard et al., 2017, "MobileNets: Efficient Convolutional Neural Networks
for Mobile Vision Applications").

A standard 3x3 convolution followed by 13 depthwise-separable convolutions: each one a
3x3 depthwise convolution (one filter per channel) then a 1x1 pointwise convolution that
mixes channels, both followed by BatchNorm and ReLU.  Against a standard Dk x Dk conv from
M to N channels this costs 1/N + 1/Dk^2 as many multiply-adds (8-9x fewer for 3x3).

The width multiplier α thins every layer uniformly: cost and parameters fall roughly as α².
"""
from __future__ import annotations

import torch
from torch import nn

from nets.common import ConvBNAct, ImageClassifier, check_width_mult, init_weights, make_divisible
from nets.geometry import SMALL_INPUT_DROPS, stem_strides
from nets.registry import PretrainedCfg, register_model

#: Output channels and stride of the 13 depthwise-separable layers (the paper's Table 1).
#: The table's last "dw s2" is a known typo: the 7x7 map is not reduced again.
SEPARABLE_LAYERS = (
    (64, 1),
    (128, 2), (128, 1),
    (256, 2), (256, 1),
    (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)
STEM_CHANNELS = 32


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1(ImageClassifier):
    """MobileNetV1 with width multiplier α.

    Args:
        num_classes: size of the final linear layer.
        width_mult: α; channels become ``α * channels`` rounded to a multiple of 8, which
            gives the paper's exact widths for α in {0.25, 0.5, 0.75, 1}.
        in_channels: channels of the input image.
        small_input: for inputs below 96 px, the stem conv and the first stride-2 separable
            layer use stride 1 (8x downsampling instead of 32x), so 32x32 reaches the head
            as 4x4.  No parameter changes shape.
        small_input_drops: how many of those stride-2 steps a small input drops (1: one,
            16x downsampling, about 2.5x faster to train on a CPU).
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3,
                 small_input: bool = False,
                 small_input_drops: int = SMALL_INPUT_DROPS) -> None:
        super().__init__()
        width_mult = check_width_mult(width_mult)
        stem, *strides = stem_strides([2, *(s for _, s in SEPARABLE_LAYERS)], small_input,
                                     small_input_drops)
        channels = make_divisible(STEM_CHANNELS * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, stem)]
        for (out_channels, _), stride in zip(SEPARABLE_LAYERS, strides):
            out_channels = make_divisible(out_channels * width_mult)
            layers.append(DepthwiseSeparable(channels, out_channels, stride))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)


@register_model(PretrainedCfg(url=None))
def mobilenetv1(**kwargs) -> MobileNetV1:
    """MobileNetV1 (4.2M parameters, 569M MACs at 224x224 and α = 1)."""
    return MobileNetV1(**kwargs)
