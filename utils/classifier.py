"""A trained model ready to classify images: weights plus everything needed to feed them.

>>> clf = Classifier.load("logs/run/best.pth")
>>> probs = clf.predict([load_image("cat.jpg")])        # (1, num_classes), rows sum to 1
>>> clf.topk(probs, 3)[0]                               # [("cat", 0.93), ("dog", 0.05), ...]

Images go through exactly the evaluation preprocessing of training
(:func:`utils.preprocess.to_uint8` with the model's geometry, then the model's
:class:`~utils.execution.Execution`), so a prediction sees the pixels the validation score
was measured on, in the same precision.  Everything comes from the checkpoint's
:class:`~utils.model_spec.ModelSpec`; nothing has to be edited to match the training run.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from PIL import Image

from utils import checkpoint as ckpt_io
from utils.annotation import DEFAULT_CLASSES, read_classes
from utils.cli import UserError
from utils.execution import Execution
from utils.model_spec import ModelSpec
from utils.preprocess import to_uint8


class Classifier:
    """A model in eval mode with its description and how it runs.

    Attributes:
        spec: what the model is (backbone, classes, input shape, normalisation, ...).
        model: the network, on ``execution.device``, in eval mode.
        execution: device, normalisation, precision and memory format of its passes.
        info: where it came from (path, epoch, top-1 ...), for printing.
    """

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, execution: Execution,
                 info: dict[str, Any] | None = None):
        self.spec, self.execution = spec, execution
        self.model = execution.prepare(model).eval()
        self.info = dict(info or {})

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.spec.input_shape

    @property
    def device(self) -> torch.device:
        return self.execution.device

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu", *,
             amp: str = "auto", channels_last: bool = True, backbone: str | None = None,
             input_shape: tuple[int, int] | None = None, width_mult: float | None = None,
             classes_file: str | os.PathLike = DEFAULT_CLASSES) -> "Classifier":
        """Load either kind of file ``--model`` may name.

        A checkpoint of ours needs nothing else; ``backbone``, ``input_shape`` and
        ``width_mult``, if given, must agree with it (naming the wrong network is an error,
        not a silent switch).  Plain weights (a state_dict, or another script's checkpoint
        holding one under ``model`` / ``state_dict``) need ``backbone`` and ``input_shape``
        (``width_mult`` defaults to 1.0); their class names are read from ``classes_file``.
        """
        device = torch.device(device)
        obj = ckpt_io.load_file(path)
        given = {"backbone": backbone, "input_shape": input_shape, "width_mult": width_mult}
        if ckpt_io.is_checkpoint(obj):
            spec = ckpt_io.check_checkpoint(obj, path)
            for key, value in given.items():
                if value is not None and _as_listed(value) != _as_listed(getattr(spec, key)):
                    raise UserError(f"{path} is a checkpoint with {key} "
                                    f"{_as_listed(getattr(spec, key))}, not "
                                    f"{_as_listed(value)}: drop --{key.replace('_', '-')}, "
                                    "checkpoints describe their own network")
            weights, info = obj["model"], {"epoch": obj.get("epoch"), "top1": obj.get("top1")}
        else:
            if backbone is None or input_shape is None:
                raise UserError(f"{path}: not a checkpoint written by train.py; for plain "
                                "weights give --backbone, --input-shape H W and --classes FILE")
            spec = ModelSpec.create(backbone, read_classes(classes_file), input_shape,
                                    **({} if width_mult is None else {"width_mult": width_mult}))
            weights, info = ckpt_io.state_dict_from(obj, path, backbone), {}
        model = ckpt_io.build_model(spec, weights, path)
        return cls(spec, model, Execution.create(spec, device, amp, channels_last),
                   {"path": str(path), **info})

    def describe(self) -> str:
        """One line saying what model this is, e.g. for the top of a report."""
        h, w = self.input_shape
        text = (f"{self.info.get('path', 'model')} ({self.spec.backbone}, "
                f"{self.spec.num_classes} classes, {h}x{w}")
        if self.info.get("epoch") is not None:
            text += f", epoch {self.info['epoch']}"
        return text + ")"

    def label_map(self, classes: Sequence[str], source: str | os.PathLike) -> list[int]:
        """The model's class id for each class id of a dataset whose class list (read from
        ``source``) is ``classes``: the same names in another order are matched by name;
        other names are an error naming them, never labels silently off by one class.
        """
        classes = list(classes)
        if classes == self.classes:
            return list(range(len(classes)))
        unknown = [c for c in classes if c not in self.classes]
        unseen = [c for c in self.classes if c not in classes]
        if unknown or unseen:
            parts = [f"{source} lists {_names(unknown)} that the model does not know"] \
                if unknown else []
            parts += [f"the model has {_names(unseen)} that {source} does not list"] \
                if unseen else []
            raise UserError(f"class names differ: {'; '.join(parts)} (is this the model for "
                            "these annotations?)")
        return [self.classes.index(name) for name in classes]

    # ------------------------------------------------------------------ inference
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (N, 3, H, W) uint8 batch, the evaluation preprocessing."""
        return torch.stack([to_uint8(image, self.spec.geometry) for image in images])

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a uint8 batch, computed as the model was validated."""
        return self.execution.logits(self.model, batch)

    def predict(self, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """Class probabilities (N, num_classes) on the CPU, computed ``batch_size`` at a time."""
        out = [self.logits(self.preprocess(images[i:i + batch_size])).softmax(1).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    def topk(self, probabilities: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per row, the ``k`` most probable ``(class name, probability)`` pairs, best first."""
        values, indices = probabilities.topk(min(k, len(self.classes)), dim=1)
        return [[(self.classes[i], p) for i, p in zip(row_i, row_p)]
                for row_i, row_p in zip(indices.tolist(), values.tolist())]


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _as_listed(value):
    """Description values compared the way a checkpoint stores them (tuples as lists)."""
    return list(value) if isinstance(value, (tuple, list)) else value
