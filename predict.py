"""Classify images with a trained model: ``python predict.py IMAGE... | DIR [--model CKPT]``.

Prints the top-k classes with their probabilities for each image; a folder is searched
(recursively) for images, which are classified in batches.  With no paths, asks for them
at an ``Image path:`` prompt until end of input, so paths can also be piped in::

    python predict.py cat.jpg dog.png                # the best model of the latest run
    python predict.py datasets/test/cat --json       # a folder, machine-readable
    find photos -name '*.jpg' | python predict.py    # paths from another program
    python predict.py --export-onnx model.onnx       # ONNX export, checked against PyTorch
    python predict.py --export-onnx int8.onnx --int8 # int8, calibrated on cls_train.txt
    python predict.py cat.jpg --model model.onnx     # ONNX Runtime, torch never imported
    python predict.py photos/ --csv predictions.csv  # a row per image, written as it goes
    python predict.py photos/ --sort-into sorted --min-confidence 0.8
    python predict.py cat.jpg --cam maps             # where the evidence lies (Grad-CAM)

``--sort-into DIR`` copies (never moves) each image into ``DIR/<predicted class>/``, or
``DIR/_uncertain/`` under ``--min-confidence``; ``--cam DIR`` writes each image as the
model saw it with a heat map of the predicted class's evidence over it.  No output ever
replaces a file: a name taken gets ``-2``, ``-3``, ...

A path that is missing or not an image is reported and skipped; the exit code is 2 only
when no image at all could be classified.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from utils.data.lists import read_classes
from utils.layout import ANNOTATION_FILES, DEFAULT_CLASSES
from utils.inference.bulk import UNCERTAIN, CsvPredictions, sort_into, write_new
from utils.inference.classifier import Classifier
from utils.cli import ArgumentParser, UserError, run, warn
from utils.fileio import output_target, within
from utils.data.image import is_image_file, load_or_warn
from utils.inference.options import add_model_arguments, load_from_args
from utils.inference.onnx_runtime import is_onnx_path


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", metavar="IMAGE|DIR",
                        help="images or folders (none: read paths at a prompt)")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per image")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {path, predictions: [{class, probability}]}")
    parser.add_argument("--csv", metavar="FILE",
                        help="also write the predictions as CSV (path, class_1, "
                        "probability_1, ...), a row per image as it is classified")
    parser.add_argument("--sort-into", metavar="DIR",
                        help="copy (never move) each image into DIR/<predicted class>/")
    parser.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                        help=f"--sort-into: images whose top probability is under P (0-1) go "
                        f"to DIR/{UNCERTAIN}/ (default %(default)s)")
    parser.add_argument("--cam", metavar="DIR",
                        help="write each image's class-activation map (Grad-CAM of the "
                        "predicted class) into DIR/ (checkpoints only)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--export-onnx", metavar="OUT.onnx",
                        help="write the checkpoint as a self-describing ONNX model (dynamic "
                        "batch) and check it against PyTorch; classifies too when paths are "
                        "given")
    parser.add_argument("--int8", action="store_true",
                        help="--export-onnx: quantize to int8 (static, calibrated on "
                        f"{ANNOTATION_FILES['train']}) and print its top-1 beside the float "
                        f"model's on {ANNOTATION_FILES['val']}")
    parser.add_argument("--force", action="store_true",
                        help="--export-onnx: replace an existing file")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    if (args.int8 or args.force) and not args.export_onnx:
        raise UserError("--int8 and --force go with --export-onnx OUT.onnx")
    if args.topk < 1:
        raise UserError("--topk must be at least 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise UserError(f"--min-confidence is a probability between 0 and 1, not "
                        f"{args.min_confidence:g}")
    if args.min_confidence and not args.sort_into:
        raise UserError("--min-confidence goes with --sort-into DIR")
    if args.export_onnx and args.model and is_onnx_path(args.model):
        raise UserError(f"--export-onnx exports a checkpoint (.pth); {args.model} is an ONNX "
                        "model already")
    if args.cam and args.model and is_onnx_path(args.model):
        raise UserError(f"--cam needs the PyTorch network: {args.model} is an ONNX model; "
                        "give its checkpoint (.pth)")
    protect = [args.model, *args.paths]
    if args.csv:
        output_target(args.csv, folder=False, protect=protect)
        if os.path.lexists(args.csv):
            raise UserError(f"{args.csv} exists: choose another --csv file")
    for flag, folder in (("--sort-into", args.sort_into), ("--cam", args.cam)):
        if folder:
            output_target(folder, folder=True, protect=protect)
            for source in args.paths:
                if os.path.isdir(source) and within(folder, source):
                    raise UserError(f"{flag} {folder} is inside {source}, which is being "
                                    "classified: its outputs would be read as inputs; choose "
                                    "a folder outside it")
    return args


def image_paths(source: str) -> Iterator[str]:
    """The image files ``source`` names: itself, or those under it when it is a folder.

    Folders are walked in sorted order, skipping hidden entries and non-image files.  A file
    named explicitly is always tried, whatever its extension: the decoder decides.
    """
    if os.path.isdir(source):
        found = False
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if is_image_file(name):
                    found = True
                    yield os.path.join(root, name)
        if not found:
            warn(f"{source}: no image files in this folder")
    elif os.path.exists(source):
        yield source
    else:
        warn(f"{source}: no such file or folder")


def prompted_paths(stream=None) -> Iterator[str]:
    """Paths typed at the prompt (one per line) until end of input.

    The prompt goes to stderr and only when a person is typing, so piped input and
    ``--json`` output stay clean.  Quotes added by dragging a file into a terminal are removed.
    """
    stream = stream or sys.stdin
    interactive = stream.isatty()
    while True:
        if interactive:
            print("Image path: ", end="", file=sys.stderr, flush=True)
        line = stream.readline()
        if not line:
            return
        path = line.strip().strip("'\"")
        if path:
            yield path


def batched(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for path in paths:
        batch.append(path)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Answer:
    """One image's prediction: the top classes, and the pixels the model saw (with their
    class-activation map when asked for)."""

    path: str
    top: list[tuple[str, float]]
    pixels: np.ndarray  #: (3, H, W) uint8, the evaluation preprocessing's output
    heatmap: np.ndarray | None = None  #: (H, W) in [0, 1]


def classify(classifier: Classifier, sources: Iterable[str], topk: int, batch_size: int,
             cam: bool = False) -> Iterator[Answer]:
    """The :class:`Answer` for every image the sources name, with its Grad-CAM map if
    ``cam``.

    Each source is finished before the next is read, so answers appear as paths are typed.
    """
    for source in sources:
        for paths in batched(image_paths(source), batch_size):
            loaded = [(path, load_or_warn(path)) for path in paths]
            readable = [path for path, image in loaded if image is not None]
            if not readable:
                continue
            pixels = classifier.preprocess([image for _, image in loaded if image is not None])
            probabilities = classifier.probabilities(pixels)
            maps = classifier.grad_cam(pixels, probabilities.argmax(1)) if cam \
                else [None] * len(readable)
            for path, top, image, heatmap in zip(readable, classifier.topk(probabilities, topk),
                                                 pixels, maps):
                yield Answer(path, top, image, heatmap)


def save_cam(folder: str, answer: Answer) -> Path:
    """``folder/<image name>_cam.png``: the image as the model saw it, its map over it."""
    from utils.evaluation.cam import overlay_image

    picture = overlay_image(answer.pixels.transpose(1, 2, 0), answer.heatmap)
    name = f"{Path(answer.path).stem}_cam.png"
    return write_new(folder, name, lambda f: picture.save(f, format="PNG"),
                     what=f"write the map of {answer.path}")


def print_table(path: str, top: list[tuple[str, float]]) -> None:
    width = max(len(name) for name, _ in top)
    lines = [path] + [f"  {rank}. {name:<{width}}  {p * 100:6.2f}%"
                      for rank, (name, p) in enumerate(top, 1)]
    print("\n".join(lines), flush=True)


def export(classifier: Classifier, path: str, int8: bool, force: bool,
           classes_file: str) -> None:
    """Write ``classifier``'s network to ``path`` (checked; int8 when asked) and say what
    was written."""
    from utils.inference import onnx_export

    t0 = time.perf_counter()
    out = onnx_export.check_destination(path, classifier.info["path"], force)
    source = onnx_export.source_of(classifier.info["path"], classifier.info)
    if int8:
        from utils.inference.onnx_quantize import export_int8

        diff, scores = export_int8(classifier, out, source, ANNOTATION_FILES["train"],
                                   ANNOTATION_FILES["val"], classes_file)
    else:
        diff = onnx_export.export_checked(classifier.spec, classifier.runtime.model, out,
                                          source)
    h, w = classifier.input_shape
    mean = ", ".join(f"{v:.4g}" for v in classifier.spec.mean)
    std = ", ".join(f"{v:.4g}" for v in classifier.spec.std)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f}s: input "
          f"'{onnx_export.INPUT_NAME}' float32 [batch, 3, {h}, {w}] = (RGB / 255 - mean) / std, "
          f"mean ({mean}), std ({std}); output '{onnx_export.OUTPUT_NAME}' "
          f"[batch, {len(classifier.classes)}]; the model description in the metadata; "
          f"onnxruntime vs PyTorch max abs diff {diff:.2g}"
          + (" (float model, before quantization)" if int8 else ""), file=sys.stderr)
    if int8:
        print(scores, file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    # The export and Grad-CAM read the network itself: PyTorch, whatever --runtime says.
    classifier = load_from_args(args, runtime="torch" if args.export_onnx or args.cam
                                else None)
    if args.classes:  # asked for: the model's names must be these (they name the output)
        classifier.label_map(read_classes(args.classes), args.classes)
    if args.export_onnx:
        export(classifier, args.export_onnx, args.int8, args.force,
               args.classes or DEFAULT_CLASSES)
        if not args.paths:
            return 0
    given: list[str] = []

    def sources():
        for source in args.paths or prompted_paths():
            given.append(source)
            yield source

    outputs = Outputs(args, len(classifier.classes))
    try:
        for answer in classify(classifier, sources(), args.topk, args.batch_size,
                               cam=bool(args.cam)):
            outputs.add(answer)
    finally:
        outputs.close()
    if not given:
        raise UserError("no image paths given: pass IMAGE... or DIR, or type paths at the prompt")
    if not outputs.done:
        raise UserError("no image could be classified (see the warnings above)")
    outputs.finish()
    return 0


class Outputs:
    """Where each :class:`Answer` goes: printed (a table, or JSON at the end), and the
    ``--csv`` file, ``--sort-into`` and ``--cam`` folders when asked for."""

    def __init__(self, args, num_classes: int):
        self.args = args
        self.csv = CsvPredictions(args.csv, min(args.topk, num_classes)) if args.csv else None
        self.json: list[dict] = []
        self.sorted: dict[str, int] = {}
        self.done = 0

    def add(self, answer: Answer) -> None:
        args = self.args
        self.done += 1
        if args.json:
            self.json.append({"path": answer.path, "predictions": [
                {"class": name, "probability": p} for name, p in answer.top]})
        else:
            print_table(answer.path, answer.top)
        if self.csv:
            self.csv.add(answer.path, answer.top)
        if args.sort_into:
            folder = sort_into(args.sort_into, answer.path, answer.top,
                               args.min_confidence).parent.name
            self.sorted[folder] = self.sorted.get(folder, 0) + 1
        if args.cam:
            save_cam(args.cam, answer)

    def close(self) -> None:
        if self.csv:
            self.csv.close()

    def finish(self) -> None:
        """Print the JSON, and say on stderr what was written besides the predictions."""
        args = self.args
        if args.json:
            print(json.dumps(self.json, indent=2))
        if args.csv:
            print(f"wrote {self.done} predictions to {args.csv}", file=sys.stderr)
        if args.sort_into:
            counts = ", ".join(f"{name} {n}" for name, n in sorted(self.sorted.items()))
            print(f"copied {self.done} images into {args.sort_into}/ ({counts})",
                  file=sys.stderr)
        if args.cam:
            print(f"wrote {self.done} class-activation maps into {args.cam}/", file=sys.stderr)

if __name__ == "__main__":
    run(main)
