"""The settings of the commands that run a trained model: ``predict.py`` and ``eval.py``.

Both start with the same block, :class:`ModelChoice`: which model, on which runtime and
device, and what plain weights need to be described.  Each command's own settings extend
it, so the two share one set of flags, one help text and one way to load the model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from utils.cli import UserError, default_workers
from utils.inference.classifier import RUNTIMES, TTA_MODES, Classifier, ModelSource, RunOptions
from utils.layout import ANNOTATION_FILES, DEFAULT_CLASSES, LOGS, METRICS_OUT
from utils.model.precision import AMP_MODES
from utils.settings import MAX_BATCH, MAX_WORKERS, at_least, between, setting

MODEL = "model"  #: the ``--help`` section of the shared flags
#: ``predict.py --reject``: ``auto`` uses the model's own threshold (there is no other).
REJECT_MODES = ("off", "auto")


@dataclass
class ModelFile:
    """Which trained model a command reads, and what plain weights need to be described."""

    model: str | None = setting(None, "checkpoint written by train.py, plain weights, or an "
                                "exported .onnx model", group=MODEL,
                                auto=f"best.pth of the most recent run in {LOGS}/")
    backbone: str | None = setting(None, "plain weights only: the network they belong to",
                                   group=MODEL)
    input_shape: tuple[int, int] | None = setting(
        None, "plain weights, or an .onnx model exported elsewhere: the input size it takes",
        group=MODEL)
    width_mult: float | None = setting(None, "plain weights only: the MobileNet width "
                                       "multiplier (1.0 when not given)", group=MODEL)
    classes: str | None = setting(None, "class list file: the names of plain weights "
                                  f"(default: the project's {DEFAULT_CLASSES}) or of an .onnx "
                                  "model exported elsewhere; for a checkpoint or our .onnx, "
                                  "the names its classes are matched to", group=MODEL)

    def source(self) -> ModelSource:
        """The model file these settings name (the latest run's ``best.pth`` by default)."""
        return ModelSource(os.fspath(self.model or latest_checkpoint()), self.backbone,
                           self.input_shape, self.width_mult, self.classes)


@dataclass
class ModelChoice(ModelFile):
    """Which trained model a command runs, and how."""

    device: str = setting("auto", "auto, cpu, cuda or cuda:N", group=MODEL)
    runtime: str = setting("auto", "what computes a checkpoint's outputs: torch, or "
                           "onnxruntime (CPU, through an export cached in .cache/onnx/); "
                           "auto: onnxruntime on a CPU when the export is cached or pays for "
                           "itself, else torch. .onnx models always run on onnxruntime",
                           RUNTIMES, group=MODEL)
    tta: str = setting("none", "test-time augmentation: flip averages the logits of each "
                       "image and its mirror image (twice the compute)", TTA_MODES,
                       group=MODEL)

    def load(self, *, amp: str = "auto", channels_last: bool = True,
             images: int | None = None, runtime: str | None = None) -> Classifier:
        """The :class:`Classifier` these settings describe; ``images``: how many the caller
        will classify, if known; ``runtime`` overrides ``--runtime``."""
        return Classifier.load(self.source(), RunOptions(
            self.device, runtime or self.runtime, amp, channels_last, self.tta, images))


@dataclass
class PredictConfig(ModelChoice):
    """``predict.py``: classify images, print or write the answers, or export the model."""

    paths: tuple[str, ...] = setting((), "images or folders (none: read paths at a prompt)",
                                     positional=True, metavar="IMAGE|DIR")
    topk: int = setting(5, "classes shown per image", valid=between(1, 1000))
    json: bool = setting(False, "print a JSON list of {path, predictions: [{class, "
                         "probability}]}", switch=True)
    csv: str | None = setting(None, "also write the predictions as CSV (path, class_1, "
                              "probability_1, ...), a row per image as it is classified",
                              metavar="FILE")
    sort_into: str | None = setting(None, "copy (never move) each image into "
                                    "DIR/<predicted class>/", metavar="DIR")
    min_confidence: float = setting(0.0, "--sort-into: images whose top probability is under "
                                    "P go to DIR/_uncertain/", valid=between(0, 1),
                                    metavar="P")
    reject: str = setting("off", "auto: answer 'unknown' for images unlike the training "
                          "images (below the threshold chosen on validation and stored with "
                          "the model); --sort-into puts them in DIR/_unknown/", REJECT_MODES)
    cam: str | None = setting(None, "write each image's class-activation map (Grad-CAM of the "
                              "predicted class) into DIR/ (checkpoints only)", metavar="DIR")
    batch_size: int = setting(64, "images per forward pass", valid=at_least(1, high=MAX_BATCH))
    export_onnx: str | None = setting(None, "write the checkpoint as a self-describing ONNX "
                                      "model (dynamic batch) and check it against PyTorch; "
                                      "classifies too when paths are given",
                                      metavar="OUT.onnx")
    int8: bool = setting(False, "--export-onnx: quantize to int8 (static, calibrated on "
                         f"{ANNOTATION_FILES['train']}) and print its top-1 beside the float "
                         f"model's on {ANNOTATION_FILES['val']}", switch=True)
    force: bool = setting(False, "--export-onnx: replace an existing file", switch=True)

    def check(self) -> None:
        """Flags that only mean something together."""
        if (self.int8 or self.force) and not self.export_onnx:
            raise UserError("--int8 and --force go with --export-onnx OUT.onnx")
        if self.min_confidence and not self.sort_into:
            raise UserError("--min-confidence goes with --sort-into DIR")


@dataclass
class EvalConfig(ModelChoice):
    """``eval.py``: score a model on an annotation file or a folder and write its reports."""

    folder: str | None = setting(None, "a folder of class folders to score instead of "
                                 "--annotation (e.g. datasets/test); its class names are "
                                 "matched to the model's", positional=True, metavar="DIR")
    annotation: str = setting(ANNOTATION_FILES["test"], "<class_id>;<path> list to evaluate")
    batch_size: int = setting(256, "images per forward pass", valid=at_least(1, high=MAX_BATCH))
    out: str = setting(METRICS_OUT, "folder for the reports")
    workers: int = setting(default_workers(4), "image-decoding processes",
                           valid=between(0, MAX_WORKERS))
    no_cache: bool = setting(False, "decode images on the fly instead of through the .cache/ "
                             "tensor", switch=True)
    amp: str = setting("auto", "mixed precision, as in training: auto = bf16/fp16 on GPU, off "
                       "on CPU", AMP_MODES)
    channels_last: bool = setting(True, "channels-last memory format, as in training")
    one_by_one: bool = setting(False, "evaluate one image at a time (the slow baseline, for "
                               "comparison)", switch=True)
    ood: str | None = setting(None, "a folder of images of none of the model's classes (any "
                              "layout): also report how well the model tells them from the "
                              "evaluated images (AUROC) and how many its threshold answers "
                              "'unknown'", metavar="DIR")


def latest_checkpoint(logs: str | os.PathLike = LOGS) -> Path:
    """``best.pth`` of the most recently modified run folder under ``logs``."""
    candidates = [p for p in Path(logs).glob("*/best.pth") if p.is_file()]
    if not candidates:
        raise UserError(f"no trained model in {logs}/: train one with train.py or pass --model")
    return max(candidates, key=lambda p: p.parent.stat().st_mtime)
