"""The networks, built from scratch, and a registry to create them by name.

>>> model = get_model("mobilenetv2", num_classes=10, input_shape=(32, 32))
>>> model.freeze_backbone()          # train the head only, then unfreeze_backbone()

Every model has a ``features`` backbone and a ``classifier`` head, ``forward_features`` /
``forward_head``, and ``freeze_backbone`` / ``unfreeze_backbone``.  VGG16, MobileNetV2 and the
ResNets use torchvision's parameter names, so its ImageNet weights load key-for-key.
"""
from __future__ import annotations

from torch import nn

# Importing the family modules registers their builders.
from nets import mobilenetv1, mobilenetv2, resnet, vgg  # noqa: F401
from nets.common import MIN_INPUT
from nets.pretrained import LoadReport, load_pretrained
from nets.registry import PretrainedCfg, available, get_entry, register_model
from utils.cli import UserError
from utils.preprocess import is_small

__all__ = ["get_model", "available", "register_model", "PretrainedCfg", "load_pretrained",
           "LoadReport", "MIN_INPUT"]


def get_model(name: str, num_classes: int, pretrained: bool = False,
              input_shape: tuple[int, int] = (224, 224), width_mult: float = 1.0,
              in_channels: int = 3, *, pretrained_url: str | None = None) -> nn.Module:
    """Build a registered network.

    Args:
        name: one of :func:`available`.
        num_classes: outputs of the head.
        pretrained: start from the official ImageNet weights (downloaded once into
            ``model_data/``); the 1000-class head is skipped when ``num_classes`` differs.
        input_shape: (H, W) of the images.  Below 96 px the network uses its small-input
            stem (fewer early strides); the parameters are the same either way.
        width_mult: channel multiplier α (MobileNets only).
        in_channels: image channels; only the first conv changes shape.
        pretrained_url: where to fetch the weights instead of the official URL (a mirror,
            or a ``file://`` URL).

    Raises:
        UserError: unknown name, an argument out of range, or unusable weights.
    """
    entry = get_entry(name)
    if entry is None:
        raise UserError(f"unknown backbone {name!r}; available: {', '.join(available())}")
    input_shape = _check_input_shape(name, input_shape)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise UserError(f"in_channels must be a positive integer, got {in_channels!r}")
    if not width_mult > 0:
        raise UserError(f"width_mult must be > 0, got {width_mult}")

    kwargs = dict(num_classes=num_classes, in_channels=in_channels,
                  small_input=is_small(input_shape))
    if entry.has_width_mult:
        kwargs["width_mult"] = float(width_mult)
    elif width_mult != 1.0:
        with_alpha = [n for n in available() if get_entry(n).has_width_mult]
        raise UserError(f"width_mult applies to {', '.join(with_alpha)} only; "
                        f"{name} needs width_mult 1.0")
    model = entry.builder(**kwargs)
    # Plain attributes that never change: safe under torch.compile and DDP.
    model.model_name = name
    model.pretrained_cfg = entry.pretrained_cfg

    if pretrained:
        url = pretrained_url or entry.pretrained_cfg.url
        if url is None:
            raise UserError(f"{name} has no official ImageNet weights: train it from scratch "
                            "or start from a checkpoint of yours (model_path)")
        if width_mult != 1.0 and pretrained_url is None:
            raise UserError(f"the official {name} weights are for width_mult 1.0, "
                            f"not {width_mult}")
        load_pretrained(model, url, name=name)
    return model


def _check_input_shape(name: str, input_shape) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise UserError(f"input shape must be two integers H W, got {input_shape!r}") from None
    if min(h, w) < MIN_INPUT:
        raise UserError(f"input shape {h}x{w} is too small for {name}: "
                        f"the minimum is {MIN_INPUT}x{MIN_INPUT}")
    return h, w
