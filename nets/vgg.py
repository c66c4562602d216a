"""VGG (Simonyan & Zisserman, 2014, "Very Deep Convolutional Networks", configuration D).

Stacks of 3x3 convolutions separated by 2x2 max-pools, then three fully connected layers.
Module names follow torchvision's ``VGG`` so the official ImageNet weights load key-for-key.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nets.common import ImageClassifier, init_weights
from nets.geometry import SMALL_INPUT_DROPS, stem_strides
from nets.registry import PretrainedCfg, register_model

#: Configuration D of the paper's Table 1: output channels of each 3x3 conv, "M" a max-pool.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")


class VGG(ImageClassifier):
    """VGG with an optional BatchNorm after every conv (torchvision's ``vgg16_bn``).

    Args:
        layers: conv widths and ``"M"`` pools, e.g. :data:`VGG16_LAYERS`.
        num_classes: size of the last linear layer.
        batch_norm: insert BatchNorm between each conv and its ReLU.
        in_channels: channels of the input image.
        small_input: skip the first two max-pools (for inputs below 96 px: 32x32 then
            reaches the head as 4x4, not 1x1).  They are
            replaced by ``nn.Identity`` so module indices, and thus weight names, are unchanged.
        dropout: dropout probability after each of the two hidden fully connected layers.
        small_input_drops: how many of those stride-2 steps a small input drops (1: one,
            16x downsampling, about 2.5x faster to train on a CPU).
    """

    def __init__(self, layers: Sequence[int | str] = VGG16_LAYERS, num_classes: int = 1000,
                 batch_norm: bool = False, in_channels: int = 3, small_input: bool = False,
                 dropout: float = 0.5, small_input_drops: int = SMALL_INPUT_DROPS) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        pool_strides = iter(stem_strides([2] * layers.count("M"), small_input,
                                                small_input_drops))
        channels = in_channels
        for spec in layers:
            if spec == "M":
                blocks.append(nn.MaxPool2d(2, 2) if next(pool_strides) == 2 else nn.Identity())
                continue
            blocks.append(nn.Conv2d(channels, spec, kernel_size=3, padding=1))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(spec))
            blocks.append(nn.ReLU(inplace=True))
            channels = spec
        self.features = nn.Sequential(*blocks)
        # The head was trained on 7x7 maps; adaptive pooling keeps its weights usable at any
        # input size (smaller maps are upsampled by repetition).
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        init_weights(self)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))


@register_model(PretrainedCfg("https://download.pytorch.org/models/vgg16-397923af.pth"))
def vgg16(**kwargs) -> VGG:
    """VGG16 (138M parameters, 15.5G MACs at 224x224)."""
    return VGG(VGG16_LAYERS, **kwargs)


@register_model(PretrainedCfg("https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"))
def vgg16_bn(**kwargs) -> VGG:
    """VGG16 with BatchNorm: trains faster and is less sensitive to the learning rate."""
    return VGG(VGG16_LAYERS, batch_norm=True, **kwargs)
