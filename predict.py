"""Classify images with a trained model: ``python predict.py IMAGE... | DIR [--model CKPT]``.

Prints the top-k classes with their probabilities for each image; a folder is searched
(recursively) for images, which are classified in batches.  With no paths, asks for them
at an ``Image path:`` prompt until end of input, so paths can also be piped in::

    python predict.py cat.jpg dog.png                # the best model of the latest run
    python predict.py datasets/test/cat --json       # a folder, machine-readable
    find photos -name '*.jpg' | python predict.py    # paths from another program
    python predict.py --export-onnx model.onnx       # = export.py --format onnx --out model.onnx
    python predict.py --export-onnx int8.onnx --int8 # = export.py --format int8 --out int8.onnx
    python predict.py cat.jpg --model model.onnx     # ONNX Runtime, torch never imported
    python predict.py photos/ --csv predictions.csv  # a row per image, written as it goes
    python predict.py photos/ --sort-into sorted --min-confidence 0.8
    python predict.py cat.jpg --cam maps             # where the evidence lies (Grad-CAM)
    python predict.py photos/ --reject auto          # "unknown" for images of no class

Probabilities are calibrated: the logits are divided by the temperature fitted on the
validation set at the end of training.  ``--reject auto`` answers ``unknown`` for an image
unlike the training images (below the threshold chosen on validation to keep 95% of the
right answers, stored with the model).

``--sort-into DIR`` copies (never moves) each image into ``DIR/<predicted class>/``,
``DIR/_unknown/`` when the answer is "unknown", or ``DIR/_uncertain/`` under
``--min-confidence``; ``--cam DIR`` writes each image as the
model saw it with a heat map of the predicted class's evidence over it.  No output ever
replaces a file: a name taken gets ``-2``, ``-3``, ...

A path that is missing or not an image is reported and skipped; the exit code is 2 only
when no image at all could be classified.
"""
from __future__ import annotations

import os

from utils.cli import UserError, run, warn
from utils.data.lists import read_classes
from utils.fileio import output_target
from utils.inference.config import PredictConfig
from utils.inference.onnx_runtime import is_onnx_path
from utils.inference.predicting import (Outputs, classify, export, output_conflict,
                                        prompted_paths)
from utils.settings import parse


def parse_args(argv=None) -> PredictConfig:
    """The settings, and every output checked before a model is loaded."""
    args, _ = parse(PredictConfig, argv, description=__doc__.split("\n\n")[0])
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
    for folder in (args.sort_into, args.cam):
        if folder:
            output_target(folder, folder=True, protect=protect)
    for source in args.paths:
        conflict = output_conflict(source, args)
        if conflict:
            raise UserError(conflict)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export_onnx:
        export(args)
        if not args.paths:
            return 0
    # Grad-CAM reads the network itself: PyTorch, whatever --runtime says.
    classifier = args.load(runtime="torch" if args.cam else None)
    if args.reject == "auto":
        classifier.check_rejection()  # before anything is written
    if args.classes:  # asked for: the model's names must be these (they name the output)
        classifier.label_map(read_classes(args.classes), args.classes)
    given: list[str] = []

    def sources():
        for source in args.paths or prompted_paths():
            given.append(source)
            conflict = output_conflict(source, args)  # paths typed at the prompt, too
            if conflict:
                warn(f"skipped {source}: {conflict}")
                continue
            yield source

    outputs = Outputs(args, classifier.classes)
    try:
        for answer in classify(classifier, sources(), args.topk, args.batch_size,
                               cam=bool(args.cam), reject=args.reject == "auto"):
            outputs.add(answer)
    finally:
        outputs.close()
    if not given:
        raise UserError("no image paths given: pass IMAGE... or DIR, or type paths at the prompt")
    if not outputs.done:
        raise UserError("no image could be classified (see the warnings above)")
    outputs.finish()
    return 0


if __name__ == "__main__":
    run(main)
