"""The model registry: one builder function per network variant, timm-style.

Each family module decorates its builders with :func:`register_model`, giving the
variant's :class:`PretrainedCfg` (where its official ImageNet weights live and what input
they expect).  ``nets.get_model`` looks builders up here by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch-free at run time: see nets/__init__.py
    from torch import nn

#: ImageNet statistics: the normalisation every official weight file here was trained with,
#: and the default for networks trained from scratch.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedCfg:
    """What a variant's official ImageNet-1k weights are and what input they expect.

    Attributes:
        url: where the weights live; ``None`` for a network with none (MobileNetV1).
        mean, std: the per-channel normalisation they were trained with (RGB in [0, 1]).
        input_shape: the (H, W) they were trained and evaluated at.
        crop_fraction: evaluation resizes the image to ``input_shape / crop_fraction`` and
            keeps the centre ``input_shape`` (224 of 256 for torchvision's V1 weights).
    """

    url: str | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_shape: tuple[int, int] = (224, 224)
    crop_fraction: float = 0.875


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant: its builder and pretrained config."""

    name: str
    builder: Callable[..., nn.Module]
    pretrained_cfg: PretrainedCfg


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(pretrained_cfg: PretrainedCfg):
    """Decorator registering a builder under its function name.

    The builder takes ``num_classes``, ``small_input`` and the family's own architecture
    arguments (``in_channels``, ``width_mult``, ...) and returns the network with random
    weights.
    """
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, pretrained_cfg)
        return builder
    return decorate


def arguments(name: str) -> frozenset[str]:
    """The arguments of network ``name``'s class (those its builder fixes, like a ResNet's
    ``layers``, included): what ``get_model`` may pass through."""
    import inspect
    import typing

    network = typing.get_type_hints(get_entry(name).builder)["return"]
    return frozenset(inspect.signature(network).parameters) - {"num_classes", "small_input"}


def available() -> list[str]:
    """Names of every registered network, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; ``KeyError`` naming the choices when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(available())}") \
            from None
