"""The model description: everything that decides what a trained model predicts.

A :class:`ModelSpec` is written into every checkpoint and into every exported ONNX model's
metadata, and read back by ``train.py --resume``, ``predict.py``, ``eval.py``, the exports
and ``benchmark.py``, so a model is always rebuilt and fed exactly as it was trained.  One
reader (:meth:`ModelSpec.from_dict`) checks it wherever it comes from.

This module does not import torch: an ``.onnx`` model is described and fed by it in a
process that never loads torch (``nets`` is imported lazily for the networks themselves).

A new architecture argument (a dropout rate, a depth multiplier) is its support in ``nets/``
plus one field here marked :func:`arch`: it is then passed to ``nets.get_model``, saved,
validated and read back everywhere without another change.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from nets.geometry import MAX_INPUT, check_input_shape, is_small_input
from nets.registry import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg
from utils.cli import UserError, user_errors
from utils.data.preprocess import Geometry
from utils.names import class_name_problem

if TYPE_CHECKING:
    from torch import nn

#: The evaluation crop keeps at least this fraction of the resized image's side: below it the
#: resize before the crop would grow without bound (1e-9 asks for a 3e10-pixel image).
MIN_CROP_FRACTION = 0.25
#: Temperatures a description may carry; a fitted one is clamped into this range (fitted
#: values lie between 0.2 and 5: these bounds only keep a damaged file from dividing by 0).
TEMPERATURE_RANGE = (0.05, 20.0)
#: Confidence scores a rejection threshold may apply to (all "higher = more like the
#: training images"): see :mod:`utils.evaluation.ood`.
REJECTION_SCORES = ("typicality", "msp", "max_logit", "energy")


@dataclass(frozen=True)
class Rejection:
    """When the model answers "unknown": its ``score`` strictly below ``value``.

    The threshold was chosen on the validation set to keep ``keep`` of the right answers
    (``kept_on_validation`` is what it kept, of ``chosen_on_images`` right answers).
    """

    score: str
    value: float
    keep: float
    kept_on_validation: float
    chosen_on_images: int

    def describe(self) -> str:
        """``typicality below -3.21 (chosen on validation to keep 95% of the right answers:
        kept 95.8% of 118)``."""
        return (f"{self.score} below {self.value:.4g} (chosen on validation to keep "
                f"{100 * self.keep:.0f}% of the right answers: kept "
                f"{100 * self.kept_on_validation:.1f}% of {self.chosen_on_images})")


def arch(default, help: str, kind: type | None = None):
    """A field that is an argument of the network's builder (``nets.get_model(**kwargs)``).

    ``kind`` (int or float; by default the default's type) is what a saved value must be;
    its range is the network's to check.  A ``None`` default means "the network's own".
    """
    return field(default=default,
                 metadata={"arch": True, "help": help, "kind": kind or type(default)})


@dataclass(frozen=True)
class ModelSpec:
    """A network and how its inputs are prepared: enough to rebuild and use it.

    Attributes:
        backbone: a name of :func:`nets.available` (for a foreign ``.onnx`` model, its
            graph's name).
        classes: the class names; output *i* is ``classes[i]``.
        input_shape: the network's (H, W).
        mean, std: the normalisation of RGB values in [0, 1] the weights expect.
        crop_fraction: evaluation keeps the centre ``input_shape`` of an image resized to
            ``input_shape / crop_fraction`` (:class:`utils.data.preprocess.Geometry`).
        width_mult, in_channels, small_input_drops: architecture arguments (see :func:`arch`).
        temperature: the logits are divided by it before the softmax (fitted on the
            validation set at the end of training); ``None``: not fitted (a model trained
            before calibration), probabilities are the plain softmax.
        rejection: when the model answers "unknown" (``predict.py --reject auto``), or
            ``None``.
    """

    backbone: str
    classes: tuple[str, ...]
    input_shape: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_fraction: float = 1.0
    width_mult: float = arch(1.0, "channel width multiplier α (MobileNets)")
    in_channels: int = arch(3, "image channels the first convolution takes")
    small_input_drops: int | None = arch(
        None, "early stride-2 steps the small-input stem drops: 2 (32 px reaches the head as "
        "4x4) or 1 (2x2, several times faster on a CPU); unset: the networks' 2, as in every "
        "model saved before the choice existed", kind=int)
    temperature: float | None = None
    rejection: Rejection | None = None

    def __post_init__(self):
        # The one place class names are checked, whatever built the description (a
        # checkpoint, an .onnx model's metadata, a class list file): every writer downstream
        # (--sort-into folders, CSV rows, reports) may then use them as they are.
        _class_names(self.classes, "model description")

    @classmethod
    def create(cls, backbone: str, classes: Sequence[str], input_shape: Sequence[int],
               crop_fraction: float | None = None, **arch_args) -> "ModelSpec":
        """A new model's description: normalisation and crop from its pretrained config
        (``crop_fraction`` replaces the config's crop)."""
        import nets

        with user_errors(KeyError):
            cfg = nets.get_entry(backbone).pretrained_cfg
        return cls.with_defaults(backbone, classes, input_shape, cfg, crop_fraction,
                                 **arch_args)

    @classmethod
    def with_defaults(cls, backbone: str, classes: Sequence[str], input_shape: Sequence[int],
                      cfg: PretrainedCfg = PretrainedCfg(None),
                      crop_fraction: float | None = None, **arch_args) -> "ModelSpec":
        """The description a model gets from ``cfg`` (ImageNet's by default): its
        normalisation, and its evaluation crop (``crop_fraction``, else the config's),
        except that small inputs (CIFAR-style) are resized straight to the input shape."""
        shape = tuple(int(v) for v in input_shape)
        crop = 1.0 if is_small_input(shape) else crop_fraction or cfg.crop_fraction
        return cls(backbone, tuple(classes), shape, tuple(cfg.mean), tuple(cfg.std), crop,
                   **arch_args)

    # ------------------------------------------------------------------ what it implies
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def small_input(self) -> bool:
        """CIFAR-style input: the networks' small-input stem, no evaluation crop, and
        pad-and-crop augmentation (:func:`nets.is_small_input`)."""
        return is_small_input(self.input_shape)

    @property
    def geometry(self) -> Geometry:
        """Where the model's input pixels come from (input size and evaluation crop)."""
        return Geometry(self.input_shape, self.crop_fraction)

    def arch_args(self) -> dict[str, Any]:
        """The architecture arguments that differ from their defaults, for ``get_model``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("arch") and getattr(self, f.name) != f.default}

    def build(self, pretrained: bool = False) -> "nn.Module":
        """The described network with fresh (or ImageNet, with ``pretrained``) weights."""
        import nets

        with user_errors(ValueError, KeyError, OSError):
            return nets.get_model(self.backbone, self.num_classes, pretrained=pretrained,
                                  input_shape=self.input_shape, **self.arch_args())

    # ------------------------------------------------------------------ reading and writing
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists), plus ``num_classes`` for readers of the file."""
        values = {k: list(v) if isinstance(v, tuple) else v
                  for k, v in dataclasses.asdict(self).items()}
        return {**values, "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "model description") -> "ModelSpec":
        """Read and check a description written by :meth:`to_dict` (or an older version).

        Every field is checked for type and range: a damaged, hand-edited or hostile file
        (a checkpoint, an ``.onnx`` model's metadata) is a one-line :class:`UserError`
        naming the field, never a crash later on.  Class names follow the rules of class
        folder names, so no writer downstream (``--sort-into``) has to guard against them.
        Fields an older file lacks get the value that version used.
        """
        def bad(name: str, expected: str):
            return UserError(f"{source}: {name} must be {expected}, not "
                             f"{_preview(values.get(name))}")

        if not isinstance(values, dict):
            raise UserError(f"{source}: not a model description (a JSON object)")
        missing = [n for n in ("backbone", "classes", "input_shape") if n not in values]
        if missing:
            raise UserError(f"{source}: the model description lacks {', '.join(missing)}")
        backbone = values["backbone"]
        if not isinstance(backbone, str) or not backbone:
            raise bad("backbone", "a network name")
        classes = _class_names(values["classes"], source)
        if "num_classes" in values and values["num_classes"] != len(classes):
            raise UserError(f"{source}: lists {len(classes)} class names for "
                            f"{_preview(values['num_classes'])} outputs")
        shape = _numbers(values["input_shape"], 2, int)
        if shape is None or min(shape) < 1 or max(shape) > MAX_INPUT:
            raise bad("input_shape", f"two whole numbers [H, W] from 1 to {MAX_INPUT}")
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
        elif _numbers([crop], 1, float) is None or not MIN_CROP_FRACTION <= crop <= 1:
            raise bad("crop_fraction", f"a number from {MIN_CROP_FRACTION:g} to 1")
        for f in dataclasses.fields(cls):
            if f.metadata.get("arch") and values.get(f.name) is not None:
                kind = f.metadata["kind"]
                number = _numbers([values[f.name]], 1, kind)
                if number is None:
                    raise bad(f.name, "a whole number" if kind is int else "a number")
                kwargs[f.name] = number[0]
        if kwargs.get("in_channels", 3) != 3:
            raise bad("in_channels", "3 (images are read as RGB)")
        temperature = values.get("temperature")
        if temperature is not None:
            low, high = TEMPERATURE_RANGE
            if _numbers([temperature], 1, float) is None or not low <= temperature <= high:
                raise bad("temperature", f"a number from {low:g} to {high:g}")
            kwargs["temperature"] = float(temperature)
        if values.get("rejection") is not None:
            kwargs["rejection"] = _rejection(values["rejection"], bad)
        return cls(backbone, classes, shape, crop_fraction=float(crop), **kwargs)

    def check_buildable(self, source: str) -> None:
        """A :class:`UserError` unless this project has the network (checkpoints: the
        weights are only useful with it)."""
        import nets

        try:
            nets.get_entry(self.backbone)
            check_input_shape(self.backbone, self.input_shape)
        except (KeyError, ValueError) as exc:
            raise UserError(f"{source}: {exc.args[0]}") from None


def _rejection(value, bad) -> Rejection:
    """A :class:`Rejection` from its saved form, every entry checked."""
    expected = (f"an object with score (one of {', '.join(REJECTION_SCORES)}), value, keep, "
                "kept_on_validation and chosen_on_images")
    if not isinstance(value, dict) or value.get("score") not in REJECTION_SCORES:
        raise bad("rejection", expected)
    numbers = _numbers([value.get(k) for k in ("value", "keep", "kept_on_validation",
                                               "chosen_on_images")], 4, float)
    if numbers is None or not (0 < numbers[1] <= 1 and 0 <= numbers[2] <= 1
                               and numbers[3] >= 0 and numbers[3] == int(numbers[3])):
        raise bad("rejection", expected)
    return Rejection(value["score"], numbers[0], numbers[1], numbers[2], int(numbers[3]))


def _class_names(value, source: str) -> tuple[str, ...]:
    """Distinct class names, each one a class folder could have."""
    if not (isinstance(value, (list, tuple)) and value
            and all(isinstance(c, str) and c for c in value)):
        raise UserError(f"{source}: classes must be a list of class names, not "
                        f"{_preview(value)}")
    if len(set(value)) != len(value):
        raise UserError(f"{source}: classes must be a list of distinct names, not "
                        f"{_preview(value)}")
    for name in value:
        problem = class_name_problem(name)
        if problem:
            raise UserError(f"{source}: class name {_preview(name)} cannot be used: {problem}")
    return tuple(value)


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
