"""A trained model ready to classify images: weights plus everything needed to feed them.

>>> clf = Classifier.from_checkpoint("logs/run/best.pth")
>>> probs = clf.predict([load_image("cat.jpg")])        # (1, num_classes), rows sum to 1
>>> clf.topk(probs, 3)[0]                               # [("cat", 0.93), ("dog", 0.05), ...]

Images go through exactly the evaluation preprocessing of training
(:func:`utils.preprocess.to_uint8` then :func:`utils.preprocess.normalize`), so a prediction
sees the pixels the validation score was measured on.  The input shape, class names and
normalisation come from the checkpoint; nothing has to be edited to match the training run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from PIL import Image

from nets.pretrained import state_dict_from
from utils import checkpoint as ckpt_io
from utils.annotation import DEFAULT_CLASSES, read_classes
from utils.cli import UserError, warn
from utils.distributed import resolve_device
from utils.evaluate import forward
from utils.image import ImageError, load_image
from utils.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize, to_uint8


class Classifier:
    """A model in eval mode on ``device`` with its classes, input shape and normalisation."""

    def __init__(self, model: torch.nn.Module, classes: Sequence[str],
                 input_shape: tuple[int, int], mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 device: torch.device | str = "cpu", info: dict[str, Any] | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.classes = list(classes)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.mean, self.std = tuple(mean), tuple(std)
        #: Where the model came from (path, backbone, epoch, top-1, ...), for printing.
        self.info = dict(info or {})

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike,
                        device: torch.device | str = "cpu") -> "Classifier":
        """Load a checkpoint written by ``train.py`` (it describes its own model)."""
        return cls._from_checkpoint_dict(ckpt_io.load_checkpoint(path), path, device)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *, backbone: str,
                        input_shape: tuple[int, int], classes: Sequence[str],
                        width_mult: float = 1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        device: torch.device | str = "cpu",
                        path: str | os.PathLike = "state_dict") -> "Classifier":
        """Wrap plain weights whose network is described by hand.

        ``state`` is a state_dict, or a dict holding one under ``model`` / ``state_dict``
        (other training scripts' checkpoints); ``path`` names it in error messages.
        """
        state = state_dict_from(state, path, backbone)
        description = {"backbone": backbone, "num_classes": len(classes),
                       "input_shape": tuple(input_shape), "width_mult": width_mult,
                       "in_channels": 3, "model": state}
        model = ckpt_io.build_model(description, path)
        return cls(model, classes, input_shape, mean, std, device,
                   info={"path": str(path), "backbone": backbone})

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu", *,
             backbone: str | None = None, input_shape: tuple[int, int] | None = None,
             width_mult: float | None = None,
             classes_file: str | os.PathLike = DEFAULT_CLASSES) -> "Classifier":
        """Load either kind of file ``--model`` may name.

        A checkpoint of ours needs nothing else; ``backbone``, ``input_shape`` and
        ``width_mult``, if given, must agree with it (naming the wrong network is an error,
        not a silent switch).  Plain weights need ``backbone`` and ``input_shape``
        (``width_mult`` defaults to 1.0); their class names are read from ``classes_file``.
        """
        obj = ckpt_io.load_file(path)
        if not ckpt_io.is_checkpoint(obj):
            if backbone is None or input_shape is None:
                raise UserError(f"{path}: not a checkpoint written by train.py; for plain "
                                "weights give --backbone, --input-shape H W and --classes FILE")
            return cls.from_state_dict(obj, backbone=backbone, input_shape=input_shape,
                                       classes=read_classes(classes_file),
                                       width_mult=1.0 if width_mult is None else width_mult,
                                       device=device, path=path)
        ckpt_io.check_complete(obj, path)
        given = {"backbone": backbone, "input_shape": input_shape, "width_mult": width_mult}
        for key, value in given.items():
            if value is not None and _as_listed(value) != _as_listed(obj[key]):
                raise UserError(f"{path} is a checkpoint with {key} {_as_listed(obj[key])}, "
                                f"not {_as_listed(value)}: drop --{key.replace('_', '-')}, "
                                "checkpoints describe their own network")
        return cls._from_checkpoint_dict(obj, path, device)

    @classmethod
    def _from_checkpoint_dict(cls, ckpt: dict[str, Any], path, device) -> "Classifier":
        if len(ckpt["classes"]) != ckpt["num_classes"]:
            raise UserError(f"{path}: lists {len(ckpt['classes'])} class names for "
                            f"{ckpt['num_classes']} outputs")
        model = ckpt_io.build_model(ckpt, path)
        info = {"path": str(path), "backbone": ckpt["backbone"], "epoch": ckpt.get("epoch"),
                "top1": ckpt.get("top1")}
        return cls(model, ckpt["classes"], tuple(ckpt["input_shape"]), ckpt["mean"],
                   ckpt["std"], device, info)

    def describe(self) -> str:
        """One line saying what model this is, e.g. for the top of a report."""
        h, w = self.input_shape
        text = (f"{self.info.get('path', 'model')} ({self.info.get('backbone', '?')}, "
                f"{len(self.classes)} classes, {h}x{w}")
        if self.info.get("epoch") is not None:
            text += f", epoch {self.info['epoch']}"
        return text + ")"

    def check_classes(self, classes_file: str | os.PathLike = DEFAULT_CLASSES) -> None:
        """Warn when ``classes_file`` exists and names other classes than the model.

        The model's own class names are used either way; the warning is there because
        annotation files written against ``classes_file`` would then be mislabelled.
        """
        if not Path(classes_file).is_file():
            return
        listed = read_classes(classes_file)
        if listed == self.classes:
            return
        if len(listed) != len(self.classes):
            detail = f"{len(self.classes)} classes, {classes_file} lists {len(listed)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(self.classes, listed)) if a != b)
            detail = f"class {i} is {self.classes[i]!r}, {classes_file} says {listed[i]!r}"
        warn(f"the model's classes differ from {classes_file} ({detail}); using the "
             "model's classes")

    # ------------------------------------------------------------------ inference
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (N, 3, H, W) uint8 batch, the evaluation preprocessing."""
        return torch.stack([to_uint8(image, self.input_shape) for image in images])

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a uint8 batch (normalised on the model's device)."""
        x = normalize(batch.to(self.device, non_blocking=True), self.mean, self.std)
        return forward(self.model, x, self.device)

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


def _as_listed(value):
    """Description values compared the way a checkpoint stores them (tuples as lists)."""
    return list(value) if isinstance(value, (tuple, list)) else value


def default_checkpoint(logs: str | os.PathLike = "logs") -> Path:
    """``best.pth`` of the most recently modified run folder under ``logs``."""
    candidates = [p for p in Path(logs).glob("*/best.pth") if p.is_file()]
    if not candidates:
        raise UserError(f"no trained model in {logs}/: train one with train.py or pass --model")
    return max(candidates, key=lambda p: p.parent.stat().st_mtime)


def add_model_arguments(parser) -> None:
    """The flags choosing the model, shared by ``predict.py`` and ``eval.py``."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="checkpoint written by train.py, or plain weights "
                       "(default: best.pth of the most recent run in logs/)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--backbone", help="plain weights only: the network they belong to")
    group.add_argument("--input-shape", type=int, nargs=2, metavar=("H", "W"),
                       help="plain weights only: the input size they were trained at")
    group.add_argument("--width-mult", type=float,
                       help="plain weights only: the MobileNet width multiplier (default 1.0)")
    group.add_argument("--classes", default=DEFAULT_CLASSES,
                       help="class names file: the names of plain weights, and for a "
                       "checkpoint the list it is checked against (default %(default)s)")


def load_from_args(args) -> Classifier:
    """The :class:`Classifier` the :func:`add_model_arguments` flags describe."""
    device = resolve_device(args.device)
    path = args.model or default_checkpoint()
    classifier = Classifier.load(path, device, backbone=args.backbone,
                                 input_shape=args.input_shape, width_mult=args.width_mult,
                                 classes_file=args.classes)
    classifier.check_classes(args.classes)
    return classifier


def one_by_one_batches(samples: Sequence[tuple[int, str]],
                       input_shape: tuple[int, int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The naive evaluation loop's input: each image decoded when needed, batches of one.

    Feeding this to :func:`utils.evaluate.evaluate` reproduces the usual "for each image:
    open, preprocess, forward" loop with the same metrics, the baseline that batched
    evaluation is measured against (``eval.py --one-by-one``, ``benchmark.py``).
    """
    for label, path in samples:
        try:
            image = load_image(path)
        except ImageError as exc:
            warn(f"skipped {path}: {exc.reason}")
            continue
        yield to_uint8(image, input_shape)[None], torch.tensor([label])
