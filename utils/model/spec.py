"""The model description: everything that decides what a trained model predicts.

A :class:`ModelSpec` is written into every checkpoint (and every exported ONNX model) and read
back by ``train.py --resume``, ``predict.py``, ``eval.py``, the ONNX export and
``benchmark.py``, so a model is always rebuilt and fed exactly as it was trained.

A new architecture argument (a dropout rate, a depth multiplier) is its support in ``nets/``
plus one field here marked :func:`arch`: it is then passed to ``nets.get_model``, saved,
validated and read back everywhere without another change.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import nn

import nets
from utils.cli import UserError, user_errors
from utils.data.preprocess import InputDescription


def arch(default, help: str, kind: type | None = None):
    """A field that is an argument of the network's builder (``nets.get_model(**kwargs)``).

    ``kind`` (int or float; by default the default's type) is what a saved value must be;
    its range is the network's to check.  A ``None`` default means "the network's own".
    """
    return field(default=default,
                 metadata={"arch": True, "help": help, "kind": kind or type(default)})


@dataclass(frozen=True)
class ModelSpec(InputDescription):
    """A network and how its inputs are prepared: enough to rebuild and use it.

    Attributes:
        backbone: a name of :func:`nets.available`.
        classes: the class names; output *i* is ``classes[i]``.
        input_shape: the network's (H, W).
        mean, std: the normalisation of RGB values in [0, 1] the weights expect.
        crop_fraction: evaluation keeps the centre ``input_shape`` of an image resized to
            ``input_shape / crop_fraction`` (:class:`utils.data.preprocess.Geometry`).
        width_mult, in_channels: architecture arguments (see :func:`arch`).
    """

    backbone: str
    classes: tuple[str, ...]
    input_shape: tuple[int, int]
    mean: tuple[float, float, float] = nets.IMAGENET_MEAN
    std: tuple[float, float, float] = nets.IMAGENET_STD
    crop_fraction: float = 1.0
    width_mult: float = arch(1.0, "channel width multiplier α (MobileNets)")
    in_channels: int = arch(3, "image channels the first convolution takes")

    @classmethod
    def create(cls, backbone: str, classes: Sequence[str], input_shape: Sequence[int],
               **arch_args) -> "ModelSpec":
        """A new model's description: normalisation and crop from its pretrained config.

        Small inputs (CIFAR-style) are resized straight to the input shape; larger ones
        use the centre crop the backbone's ImageNet weights were evaluated with.
        """
        cfg = _entry(backbone).pretrained_cfg
        shape = tuple(int(v) for v in input_shape)
        crop = 1.0 if nets.is_small_input(shape) else cfg.crop_fraction
        return cls(backbone, tuple(classes), shape, tuple(cfg.mean), tuple(cfg.std), crop,
                   **arch_args)

    def arch_args(self) -> dict[str, Any]:
        """The architecture arguments that differ from their defaults, for ``get_model``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("arch") and getattr(self, f.name) != f.default}

    def build(self, pretrained: bool = False) -> nn.Module:
        """The described network with fresh (or ImageNet, with ``pretrained``) weights."""
        with user_errors(ValueError, KeyError, OSError):
            return nets.get_model(self.backbone, self.num_classes, pretrained=pretrained,
                                  input_shape=self.input_shape, **self.arch_args())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists), plus ``num_classes`` for readers of the file."""
        values = {k: list(v) if isinstance(v, tuple) else v
                  for k, v in dataclasses.asdict(self).items()}
        return {**values, "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "model description") -> "ModelSpec":
        """Read and check a description written by :meth:`to_dict` (or an older version).

        Every field is checked for type and range: a damaged or hand-edited file is a
        one-line :class:`UserError` naming the field, never a crash later on.  Fields an
        older file lacks get the value that version used.
        """
        def bad(name: str, expected: str):
            return UserError(f"{source}: {name} must be {expected}, not "
                             f"{_preview(values.get(name))}")

        missing = [n for n in ("backbone", "classes", "input_shape") if n not in values]
        if missing:
            raise UserError(f"{source}: the model description lacks {', '.join(missing)}")
        backbone = values["backbone"]
        if not isinstance(backbone, str):
            raise bad("backbone", "a network name")
        _entry(backbone, source)
        classes = values["classes"]
        if not (isinstance(classes, (list, tuple)) and classes
                and all(isinstance(c, str) and c for c in classes)):
            raise bad("classes", "a list of class names")
        if len(set(classes)) != len(classes):
            raise bad("classes", "a list of distinct names")
        if "num_classes" in values and values["num_classes"] != len(classes):
            raise UserError(f"{source}: lists {len(classes)} class names for "
                            f"{_preview(values['num_classes'])} outputs")
        shape = _numbers(values["input_shape"], 2, int)
        if shape is None or min(shape) < 1:
            raise bad("input_shape", "two positive whole numbers [H, W]")
        kwargs: dict[str, Any] = {}
        for name in ("mean", "std"):
            if name in values:
                triple = _numbers(values[name], 3, float)
                if triple is None or (name == "std" and min(triple) <= 0):
                    raise bad(name, "three numbers, one per RGB channel"
                              + (" (all positive)" if name == "std" else ""))
                kwargs[name] = triple
        crop = values.get("crop_fraction")
        if crop is None:  # version 1 files: the rule that version applied
            crop = cls.create(backbone, classes, shape).crop_fraction
        elif _numbers([crop], 1, float) is None or not 0 < crop <= 1:
            raise bad("crop_fraction", "a number in (0, 1]")
        for f in dataclasses.fields(cls):
            if f.metadata.get("arch") and values.get(f.name) is not None:
                kind = f.metadata["kind"]
                number = _numbers([values[f.name]], 1, kind)
                if number is None:
                    raise bad(f.name, "a whole number" if kind is int else "a number")
                kwargs[f.name] = number[0]
        if kwargs.get("in_channels", 3) != 3:
            raise bad("in_channels", "3 (images are read as RGB)")
        return cls(backbone, tuple(classes), shape, crop_fraction=float(crop), **kwargs)


def _entry(backbone: str, source: str | None = None):
    try:
        return nets.get_entry(backbone)
    except KeyError as exc:
        raise UserError(f"{source}: {exc.args[0]}" if source else exc.args[0]) from None


def _numbers(value, count: int, kind: type) -> tuple | None:
    """``value`` as a tuple of ``count`` finite numbers of ``kind`` (int: whole), or None.

    Booleans and strings are refused even where Python would convert them: a checkpoint
    saying ``"width_mult": "0.5"`` or ``true`` was not written by this code.
    """
    if not isinstance(value, (list, tuple)) or len(value) != count:
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        if kind is int and v != int(v):
            return None
        out.append(kind(v))
    return tuple(out)


def _preview(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
