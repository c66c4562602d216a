"""Measure a trained model on labelled images: ``python eval.py [DIR] [--model CKPT]``.

Batched evaluation through the very code that scores every training epoch (same decode
cache, preprocessing, normalisation and metrics), so the top-1 printed here is the top-1
the run logged, whichever runtime computes the logits (``--runtime``: PyTorch, or ONNX
Runtime for a checkpoint's cached export or an exported ``.onnx``).  The images are an
annotation file (``--annotation``, default ``cls_test.txt``) or a folder of class folders
(``DIR``, e.g. ``datasets/test``: no annotation needed).  Prints top-1, top-5 (top-k for
fewer than 5 classes), mean recall, mean precision and the speed, and writes to ``--out``
(default ``metrics_out/``):

    metrics.json           every number, per class too
    confusion_matrix.csv   counts, rows = true class, columns = predicted class
    confusion_matrix.png   the same as a heat map
    recall.png, precision.png   one bar per class
    errors.csv             every misclassified image, worst (highest loss) first
    top_losses.png         the worst of them, with a Grad-CAM map of the predicted class
    report.html            all of it on one page that opens from disk

``--tta flip`` averages each image's logits with its mirror image's.

``--one-by-one`` scores the same images one at a time (open, preprocess, forward), the
loop batched evaluation replaces; it is there to measure the difference.
"""
from __future__ import annotations

from utils.cli import run
from utils.inference.config import EvalConfig
from utils.inference.evaluating import evaluate_model
from utils.settings import parse


def main(argv=None) -> int:
    cfg, _ = parse(EvalConfig, argv, description=__doc__.split("\n\n")[0])
    evaluate_model(cfg)
    return 0


if __name__ == "__main__":
    run(main)
