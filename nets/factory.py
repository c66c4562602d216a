"""Building a registered network by name: ``nets.get_model``.

Importing this module imports every family, which registers its builders.
"""
from __future__ import annotations

import re
import sys

from torch import nn

from nets import mobilenetv1, mobilenetv2, resnet, vgg  # noqa: F401 - registers the families
from nets.geometry import check_input_shape, is_small_input
from nets.pretrained import load_pretrained
from nets.registry import arguments, available, get_entry  # noqa: F401 - with the families

__all__ = ["get_model", "available", "arguments", "get_entry"]


def get_model(name: str, num_classes: int, pretrained: bool = False,
              input_shape: tuple[int, int] = (224, 224), *, pretrained_url: str | None = None,
              **kwargs) -> nn.Module:
    """Build a registered network, timm-style: architecture arguments pass through.

    Args:
        name: one of :func:`available`.
        num_classes: outputs of the head.
        pretrained: start from the official ImageNet weights (downloaded once into
            ``model_data/``); the 1000-class head is skipped when ``num_classes`` differs,
            and what was loaded is printed.
        input_shape: (H, W) of the images.  Below 96 px the network uses its small-input
            stem (fewer early strides); the parameters are the same either way.
        pretrained_url: where to fetch the weights instead of the official URL (a mirror,
            or a ``file://`` URL).
        **kwargs: the family's architecture arguments: ``in_channels`` (every family; only
            the first conv changes shape), ``width_mult`` (the MobileNets' α), ``dropout``.

    Raises:
        KeyError: unknown name.
        ValueError: an argument the network does not take or out of range, or unusable
            pretrained weights.
        OSError: the pretrained weights cannot be downloaded.
    """
    entry = get_entry(name)
    input_shape = check_input_shape(name, input_shape)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    in_channels = kwargs.get("in_channels", 3)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    try:
        model = entry.builder(num_classes=num_classes, small_input=is_small_input(input_shape),
                              **kwargs)
    except TypeError as exc:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unknown is None:
            raise
        raise ValueError(f"{name} has no argument {unknown.group(1)}") from None
    # Plain attributes that never change: safe under torch.compile and DDP.
    model.model_name = name
    model.pretrained_cfg = entry.pretrained_cfg
    if pretrained:
        report = load_pretrained(model, pretrained_url)
        print(report, flush=True)
        if report.warning:
            print(f"warning: {report.warning}", file=sys.stderr, flush=True)
    return model
