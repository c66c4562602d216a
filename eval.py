"""Measure a trained model on an annotation file: ``python eval.py [--model CKPT]``.

Batched evaluation through the very code that scores every training epoch (same decode
cache, preprocessing, normalisation and metrics), so the top-1 printed here is the top-1
the run logged, whichever runtime computes the logits (``--runtime``: PyTorch, or ONNX
Runtime for a checkpoint's cached export or an exported ``.onnx``).  Prints top-1, top-5
(top-k for fewer than 5 classes), mean recall, mean precision and the speed, and writes to
``--out`` (default ``metrics_out/``):

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

import argparse
import csv
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from utils.data.lists import read_annotation, read_classes
from utils.layout import ANNOTATION_FILES, DEFAULT_CLASSES
from utils.inference.classifier import Classifier
from utils.cli import ArgumentParser, UserError, default_workers, run
from utils.evaluation.analysis import add_evaluation, analyse
from utils.data.batches import Loading, make_batches, one_by_one_batches
from utils.evaluation.scoring import EvalResult, evaluate_logits
from utils.model.execution import AMP_MODES
from utils.fileio import output_target
from utils.evaluation.metrics import ClassReport, class_report
from utils.inference.options import add_model_arguments, load_from_args
from utils.inference.onnx_runtime import is_onnx_path
from utils.evaluation.plots import plot_per_class
from utils.evaluation.report import Report


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotation", default=ANNOTATION_FILES["test"],
                        help="<class_id>;<path> list to evaluate (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--out", default="metrics_out", help="folder for the reports")
    parser.add_argument("--workers", type=int, default=default_workers(4),
                        help="image-decoding processes")
    parser.add_argument("--no-cache", action="store_true",
                        help="decode images on the fly instead of through the .cache/ tensor")
    parser.add_argument("--amp", default="auto", choices=AMP_MODES,
                        help="mixed precision, as in training: auto = bf16/fp16 on GPU, "
                        "off on CPU")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels-last memory format, as in training")
    parser.add_argument("--one-by-one", action="store_true",
                        help="evaluate one image at a time (the slow baseline, for comparison)")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    output_target(args.out, folder=True, protect=[args.model, args.annotation])
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.workers < 0:
        raise UserError("--workers must be 0 or more")
    return args


def summarize(classifier: Classifier, result: EvalResult, report: ClassReport) -> dict:
    """Everything ``metrics.json`` holds, fractions in [0, 1]; top-k is ``top{k}`` with
    k = min(5, classes), as everywhere."""
    return {
        **result.summary(),
        "per_class": [{"class": name, "recall": r, "precision": p, "support": s}
                      for name, r, p, s in zip(classifier.classes, report.recall,
                                               report.precision, report.support)],
    }


def write_reports(out: Path, classes: list[str], result: EvalResult, report: ClassReport,
                  metrics: dict) -> None:
    """``metrics.json``, the confusion matrix as CSV and the per-class bar plots."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    with open(out / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, result.matrix.tolist()):
            writer.writerow([name, *row])
    plot_per_class(report.recall, classes, out / "recall.png", "recall")
    plot_per_class(report.precision, classes, out / "precision.png", "precision")


def write_analysis(args, classifier: Classifier, result: EvalResult, samples, metrics: dict,
                   out: Path):
    """``errors.csv``, ``top_losses.png`` and ``report.html``; the Grad-CAM maps come from
    the PyTorch network, also when ONNX Runtime computed the figures (an ``.onnx`` file has
    none to give)."""
    explainer = classifier.runtime
    if explainer.name != "torch" and not is_onnx_path(classifier.info.get("path", "")):
        explainer = load_from_args(args, runtime="torch", channels_last=args.channels_last,
                                   amp=args.amp).runtime
    cam = {"model": explainer.model, "execution": explainer.execution} \
        if explainer.name == "torch" else {}
    analysis = analyse(result, samples, classifier.classes, classifier.spec.geometry, out,
                       **cam)
    page = Report(out / "report.html", f"Evaluation of {classifier.info.get('path', 'model')}",
                  f"{args.annotation}, {result.count} images")
    page.add_settings({"model": metrics["model"], "runtime": metrics["runtime"],
                       "annotation": metrics["annotation"], "tta": metrics["tta"],
                       "seconds": round(metrics["seconds"], 2),
                       "images per second": round(metrics["images_per_second"])},
                      heading="Model and settings", plan=classifier.describe())
    add_evaluation(page, result, classifier.classes, analysis, out, heading="Results")
    page.write()
    return analysis


def main(argv=None) -> int:
    args = parse_args(argv)
    classes_file = args.classes or DEFAULT_CLASSES
    dataset_classes = read_classes(classes_file)
    listed = read_annotation(args.annotation, dataset_classes)
    classifier = load_from_args(args, amp=args.amp, images=len(listed),
                                channels_last=args.channels_last and not args.one_by_one)
    num_classes = len(classifier.classes)
    to_model = classifier.label_map(dataset_classes, classes_file)

    start = time.perf_counter()
    samples = [(to_model[label], path) for label, path in listed]
    if args.one_by_one:
        batches = one_by_one_batches(samples, classifier.spec.geometry)
        total = len(samples)
    else:
        batches = make_batches(samples, classifier.spec.geometry, args.batch_size, train=False,
                               device=torch.device(classifier.device), source=args.annotation,
                               loading=Loading(args.workers, None if args.no_cache else ".cache"))
        total = len(batches)
    prepared = time.perf_counter()
    result = evaluate_logits(classifier.logits, batches, num_classes, classifier.device,
                             progress=lambda b: tqdm(b, total=total, desc="evaluating",
                                                     leave=False, disable=None), keep=True)
    finished = time.perf_counter()
    if not result.count:
        raise UserError(f"none of the images in {args.annotation} could be read")

    report = class_report(result.matrix)
    metrics = summarize(classifier, result, report)
    seconds = finished - start
    metrics.update(model=classifier.info.get("path"), runtime=classifier.runtime.name,
                   annotation=args.annotation, tta=classifier.tta, seconds=seconds,
                   images_per_second=result.count / seconds, one_by_one=args.one_by_one)
    out = Path(args.out)
    write_reports(out, classifier.classes, result, report, metrics)
    analysis = write_analysis(args, classifier, result, samples, metrics, out)

    k = result.k
    print(f"model           {classifier.describe()}")
    if classifier.info.get("top1") is not None:
        print(f"                ({classifier.info['scored_on']} top-1 recorded at that epoch: "
              f"{classifier.info['top1']:.2%})")
    print(f"images          {result.count} from {args.annotation}")
    print(f"top-1           {result.top1:.2%}")
    print(f"top-{k}           {result.top5:.2%}")
    print(f"mean recall     {report.mean_recall:.2%}")
    print(f"mean precision  {report.mean_precision:.2%}")
    print(f"loss            {result.loss:.4f}")
    print(f"speed           {result.count / seconds:.0f} img/s on {classifier.device} "
          f"with {classifier.runtime.name} "
          f"({seconds:.1f}s: "
          f"{prepared - start:.1f}s preparing images, {finished - prepared:.1f}s evaluating"
          f"{', one image at a time' if args.one_by_one else ''})")
    print(f"errors          {len(analysis.errors)} in {out / 'errors.csv'} (worst first)"
          + (f"; most confused: {classifier.classes[analysis.confused[0].true]} -> "
             f"{classifier.classes[analysis.confused[0].predicted]} "
             f"({analysis.confused[0].count})" if analysis.confused else ""))
    print(f"reports in      {out}/ (open {out / 'report.html'})")
    return 0


if __name__ == "__main__":
    run(main)
