"""Building blocks shared by the network families, and the interface every model has."""
from __future__ import annotations

import torch
from torch import nn


#: The widest multiplier accepted: 8x the paper's channels is already hundreds of millions
#: of parameters; beyond it a typo becomes an allocation no machine survives.
MAX_WIDTH_MULT = 8.0


def check_width_mult(width_mult: float) -> float:
    """The width multiplier α as a float; ``ValueError`` unless 0 < α <= 8."""
    if not (isinstance(width_mult, (int, float)) and 0 < width_mult <= MAX_WIDTH_MULT):
        raise ValueError(f"width_mult must be > 0 and at most {MAX_WIDTH_MULT:g}, got "
                         f"{width_mult!r}")
    return float(width_mult)


class ImageClassifier(nn.Module):
    """Base class: a ``features`` backbone followed by a ``classifier`` head.

    Subclasses define ``features`` and ``classifier`` (modules or properties) and override
    :meth:`forward_features` / :meth:`forward_head` where theirs differ from the defaults.
    This class adds freezing the backbone for a linear-probe / warm-up phase.
    """

    def __init__(self) -> None:
        super().__init__()
        self._backbone_frozen = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> feature map."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits: global average pooling (any input size), then the head."""
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def freeze_backbone(self) -> None:
        """Stop training the backbone: no gradients, and BatchNorm statistics frozen too.

        Only the head learns.  The backbone's BatchNorm layers stay in eval mode even after
        ``model.train()``; otherwise their running statistics would drift towards the new
        data while the weights that depend on them cannot adapt.
        """
        self.features.requires_grad_(False)
        self._backbone_frozen = True
        self.train(self.training)

    def unfreeze_backbone(self) -> None:
        """Train the whole network again (undoes :meth:`freeze_backbone`)."""
        self.features.requires_grad_(True)
        self._backbone_frozen = False
        self.train(self.training)

    def train(self, mode: bool = True) -> "ImageClassifier":
        super().train(mode)
        if self._backbone_frozen:
            self.features.eval()
        return self


def init_weights(model: nn.Module) -> None:
    """The usual from-scratch initialisation of every family (torchvision's).

    He-normal convolutions (fan-out), BatchNorm as identity, small-normal linear layers,
    zero biases.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)


class ConvBNAct(nn.Sequential):
    """Conv (no bias, "same" padding) -> BatchNorm -> activation.

    Children are named ``0``, ``1``, ``2`` like torchvision's ``Conv2dNormActivation``, so
    parameter names match torchvision's MobileNetV2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            activation(inplace=True),
        )


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (never down by over 10%).

    Multiples of 8 keep tensor cores and vector units busy; this is the rounding
    torchvision and the MobileNet reference code use, so MobileNetV2 shapes match theirs.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
