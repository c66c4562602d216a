"""The command-line flags that choose a trained model, shared by ``predict.py`` and ``eval.py``."""
from __future__ import annotations

import os
from pathlib import Path

from utils.layout import DEFAULT_CLASSES, LOGS
from utils.inference.classifier import RUNTIMES, TTA_MODES, Classifier
from utils.cli import UserError


def add_model_arguments(parser) -> None:
    """``--model`` (default: the latest run's best.pth), ``--device``, ``--runtime``, and the
    description plain weights need (``--backbone``, ``--input-shape``, ``--width-mult``,
    ``--classes``)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="checkpoint written by train.py, plain weights, or an "
                       "exported .onnx model (default: best.pth of the most recent run in logs/)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--runtime", default="auto", choices=RUNTIMES,
                       help="what computes a checkpoint's outputs: torch, or onnxruntime "
                       "(CPU, through an export cached in .cache/onnx/); auto: onnxruntime "
                       "on a CPU when the export is cached or pays for itself, else torch. "
                       ".onnx models always run on onnxruntime")
    group.add_argument("--tta", default="none", choices=TTA_MODES,
                       help="test-time augmentation: flip averages the logits of each image "
                       "and its mirror image (twice the compute; default %(default)s)")
    group.add_argument("--backbone", help="plain weights only: the network they belong to")
    group.add_argument("--input-shape", type=int, nargs=2, metavar=("H", "W"),
                       help="plain weights, or an .onnx model exported elsewhere: the input "
                       "size it takes")
    group.add_argument("--width-mult", type=float,
                       help="plain weights only: the MobileNet width multiplier (default 1.0)")
    group.add_argument("--classes",
                       help="class list file: the names of plain weights (default: the "
                       f"project's {DEFAULT_CLASSES}) or of an .onnx model exported "
                       "elsewhere; for a checkpoint or our .onnx, the names its classes are "
                       "matched to")


def load_from_args(args, amp: str = "auto", channels_last: bool = True,
                   images: int | None = None, runtime: str | None = None) -> Classifier:
    """The :class:`Classifier` the :func:`add_model_arguments` flags describe; ``images``:
    how many the caller will classify, if known (``--runtime auto`` weighs the export);
    ``runtime`` overrides ``--runtime``."""
    path = args.model or latest_checkpoint()
    classifier = Classifier.load(path, args.device, runtime=runtime or args.runtime, amp=amp,
                                 channels_last=channels_last, backbone=args.backbone,
                                 input_shape=args.input_shape, width_mult=args.width_mult,
                                 classes_file=args.classes, images=images)
    classifier.tta = args.tta
    return classifier


def latest_checkpoint(logs: str | os.PathLike = LOGS) -> Path:
    """``best.pth`` of the most recently modified run folder under ``logs``."""
    candidates = [p for p in Path(logs).glob("*/best.pth") if p.is_file()]
    if not candidates:
        raise UserError(f"no trained model in {logs}/: train one with train.py or pass --model")
    return max(candidates, key=lambda p: p.parent.stat().st_mtime)
