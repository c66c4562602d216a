"""The model registry: one builder function per network variant, timm-style.

Each family module decorates its builders with :func:`register_model`, giving the
variant's :class:`PretrainedCfg` (where its official ImageNet weights live and what input
they expect).  ``nets.get_model`` looks builders up here by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from utils.preprocess import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class PretrainedCfg:
    """What a variant's official ImageNet-1k weights are and how they were trained.

    ``url`` is ``None`` for a network with no official weights (MobileNetV1).
    """

    url: str | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] = (224, 224)
    num_classes: int = 1000


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant: its builder, pretrained config and whether α applies."""

    name: str
    builder: Callable[..., nn.Module]
    pretrained_cfg: PretrainedCfg
    has_width_mult: bool


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(pretrained_cfg: PretrainedCfg, *, width_mult: bool = False):
    """Decorator registering a builder under its function name.

    The builder takes ``num_classes``, ``in_channels``, ``small_input`` (and ``width_mult``
    when ``width_mult=True``) and returns the network with random weights.
    """
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, pretrained_cfg, width_mult)
        return builder
    return decorate


def available() -> list[str]:
    """Names of every registered network, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry | None:
    """The registry entry for ``name``, or ``None`` when there is none."""
    return _REGISTRY.get(name)
