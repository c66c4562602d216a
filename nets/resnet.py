"""ResNet (He et al., 2015, "Deep Residual Learning for Image Recognition").

Each block learns a residual F(x) added to its input, so very deep stacks still train.
ResNet18/34 use two 3x3 convs per block (:class:`BasicBlock`); ResNet50/101/152 a 1x1-3x3-1x1
bottleneck (:class:`Bottleneck`), with the stride on the 3x3 conv ("ResNet v1.5", as in
torchvision).  Module names follow torchvision's ``ResNet``, so the official ImageNet
weights load key-for-key; ``features`` and ``classifier`` are views over those modules.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from nets.common import ImageClassifier, init_weights
from nets.geometry import SMALL_INPUT_DROPS, stem_strides
from nets.registry import PretrainedCfg, register_model

_FEATURE_MODULES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN projecting the shortcut when the block changes shape, else ``None``."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs; the first one carries the stride."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (with the stride) -> 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(ImageClassifier):
    """ResNet from a block type and the number of blocks in each of its four stages.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet50.
        num_classes: size of the final linear layer ``fc``.
        in_channels: channels of the input image.
        small_input: for inputs below 96 px, ``conv1`` uses stride 1 and the max-pool is
            dropped (8x downsampling instead of 32x; the usual CIFAR variant keeps 32x32 at
            4x4 before pooling).  ``conv1`` keeps its 7x7 shape so ImageNet weights still load.
        small_input_drops: how many of those stride-2 steps a small input drops (1: one,
            16x downsampling, about 2.5x faster to train on a CPU).
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                 small_input_drops: int = SMALL_INPUT_DROPS) -> None:
        super().__init__()
        conv_stride, pool_stride = stem_strides([2, 2], small_input, small_input_drops)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, conv_stride, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if pool_stride == 2 else nn.Identity()
        channels = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if index == 0 else 2
            stage = []
            for i in range(blocks):
                stage.append(block(channels, planes, stride if i == 0 else 1))
                channels = planes * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    @property
    def features(self) -> nn.Sequential:
        """The backbone, ``conv1`` to ``layer4``, as one module (a view: built on access,
        so it always holds the current submodules, e.g. after SyncBatchNorm conversion)."""
        return nn.Sequential(OrderedDict((name, getattr(self, name)) for name in _FEATURE_MODULES))

    @property
    def classifier(self) -> nn.Linear:
        """The head: the final linear layer ``fc``."""
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _cfg(url: str) -> PretrainedCfg:
    return PretrainedCfg(f"https://download.pytorch.org/models/{url}")


# torchvision's IMAGENET1K_V1 weights: trained with the classic recipe and evaluated with
# the 256 -> 224 centre crop our preprocessing uses (the V2 weights expect a 232 resize).
@register_model(_cfg("resnet18-f37072fd.pth"))
def resnet18(**kwargs) -> ResNet:
    """ResNet18 (11.7M parameters, 1.8G MACs at 224x224)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model(_cfg("resnet34-b627a593.pth"))
def resnet34(**kwargs) -> ResNet:
    """ResNet34 (21.8M parameters, 3.7G MACs at 224x224)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model(_cfg("resnet50-0676ba61.pth"))
def resnet50(**kwargs) -> ResNet:
    """ResNet50 (25.6M parameters, 4.1G MACs at 224x224)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model(_cfg("resnet101-63fe2227.pth"))
def resnet101(**kwargs) -> ResNet:
    """ResNet101 (44.5M parameters, 7.8G MACs at 224x224)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model(_cfg("resnet152-394f9c45.pth"))
def resnet152(**kwargs) -> ResNet:
    """ResNet152 (60.2M parameters, 11.5G MACs at 224x224)."""
    return ResNet(Bottleneck, (3, 8, 36, 3), **kwargs)
