"""``eval.py``: score a trained model on labelled images and write everything to read.

The images are an annotation file's lines, or a folder of class folders read directly
(``eval.py DIR``, as ``yolo val data=DIR`` does); either way they go through the batches,
preprocessing and scoring training uses, and the outputs are those every training run
writes for its test set (:func:`utils.evaluation.outputs.write_evaluation`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from utils.cli import UserError, warn
from utils.data.batches import Loading, make_batches, one_by_one_batches
from utils.data.checks import check_images
from utils.data.lists import read_annotation, read_classes
from utils.data.scan import scan_splits
from utils.evaluation.confidence_report import add_unknown, describe_calibration
from utils.evaluation.ood import OodReport
from utils.evaluation.outputs import summary, write_evaluation
from utils.evaluation.report import Report
from utils.evaluation.scoring import evaluate_logits
from utils.fileio import output_target, write_json, writing
from utils.inference.classifier import Classifier
from utils.inference.config import EvalConfig
from utils.inference.onnx_runtime import is_onnx_path
from utils.inference.unknown import measure_unknown, unknown_paths
from utils.layout import CACHE_DIR, DEFAULT_CLASSES, SPLIT_ALIASES, SPLITS
from utils.names import shown

#: Folder names that mark a dataset's split folders rather than class folders.
_SPLIT_NAMES = {*SPLITS, *SPLIT_ALIASES}


def evaluate_model(cfg: EvalConfig) -> dict:
    """Score the model ``cfg`` names on its images, write the reports into ``cfg.out`` and
    print the figures; returns ``metrics.json``'s content."""
    output_target(cfg.out, folder=True, protect=[cfg.model, cfg.annotation, cfg.folder, cfg.ood])
    if is_run_folder(cfg.out):
        raise UserError(f"--out {cfg.out} is a training run's folder: its report.html and "
                        "figures would be replaced; choose another --out")
    unknown = unknown_paths(cfg.ood) if cfg.ood else None  # a wrong flag is said first
    source = cfg.folder or cfg.annotation
    if cfg.folder:
        listed, names = folder_samples(cfg.folder)
    else:
        classes_file = cfg.classes or DEFAULT_CLASSES
        names = read_classes(classes_file)
        listed = read_annotation(cfg.annotation, names)
    classifier = cfg.load(amp=cfg.amp, images=len(listed),
                          channels_last=cfg.channels_last and not cfg.one_by_one)
    to_model = (_folder_labels(classifier, names, cfg.folder) if cfg.folder
                else classifier.label_map(names, cfg.classes or DEFAULT_CLASSES))
    samples = [(to_model[label], path) for label, path in listed]

    start = time.perf_counter()
    if cfg.one_by_one:
        batches, total = one_by_one_batches(samples, classifier.spec.geometry), len(samples)
    else:
        loading = Loading(cfg.workers, None if cfg.no_cache else CACHE_DIR,
                          torch.device(classifier.device))
        batches = make_batches(samples, classifier.spec.geometry, cfg.batch_size, train=False,
                               source=source, loading=loading)
        total = len(batches)
    prepared = time.perf_counter()
    result = evaluate_logits(classifier.logits, batches, classifier.spec.num_classes,
                             classifier.device, keep=True,
                             progress=lambda b: tqdm(b, total=total, desc="evaluating",
                                                     leave=False, disable=None))
    finished = time.perf_counter()
    if not result.count:
        raise UserError(f"none of the images in {source} could be read")

    seconds = finished - start
    ood = None if unknown is None else measure_unknown(classifier, samples, unknown,
                                                       cfg.batch_size)
    metrics = {**summary(result, classifier.classes, classifier.spec.temperature),
               "model": classifier.info.get("path"),
               "runtime": classifier.runtime.name, "annotation": source,
               "tta": classifier.tta, "seconds": seconds,
               "images_per_second": result.count / seconds, "one_by_one": cfg.one_by_one}
    if ood is not None:
        metrics["ood"] = {"folder": cfg.ood, **ood.as_dict()}
    out = Path(cfg.out)
    with writing(f"the reports in {out}/"):
        analysis = _write_reports(out, cfg, classifier, result, samples, metrics, ood)

    _print_summary(classifier, result, analysis, metrics, ood, out, prepared - start)
    return metrics


def _write_reports(out: Path, cfg: EvalConfig, classifier: Classifier, result, samples,
                   metrics: dict, ood: OodReport | None):
    """``metrics.json``, the evaluation's files and ``report.html`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    source = metrics["annotation"]
    page = Report(out / "report.html", f"Evaluation of {classifier.info.get('path', 'model')}",
                  f"{source}, {result.count} images")
    page.add_settings({"model": metrics["model"], "runtime": metrics["runtime"],
                       "annotation": source, "tta": metrics["tta"],
                       "seconds": round(metrics["seconds"], 2),
                       "images per second": round(metrics["images_per_second"])},
                      heading="Model and settings", plan=classifier.describe())
    analysis = write_evaluation(page, result, samples, classifier.classes,
                                classifier.spec.geometry, out, heading="Results",
                                temperature=classifier.spec.temperature,
                                **_explainer(cfg, classifier))
    if ood is not None or classifier.spec.rejection is not None:
        add_unknown(page, classifier.spec.rejection, ood=ood)
    page.write()
    return analysis


def _print_summary(classifier: Classifier, result, analysis, metrics: dict,
                   ood: OodReport | None, out: Path, preparing: float) -> None:
    """The figures with their intervals, the speed, the calibration, how unknown images
    fare (``--ood``) and where the reports are, one line each."""
    source, seconds = metrics["annotation"], metrics["seconds"]
    one_by_one = metrics["one_by_one"]
    print(f"model           {classifier.describe()}")
    if classifier.info.get("top1") is not None:
        print(f"                ({classifier.info['scored_on']} top-1 recorded at that epoch: "
              f"{classifier.info['top1']:.2%})")
    print(f"images          {result.count} from {source}")
    for metric in result.shown:
        print(f"{metric.title(result.k):<16}{result.describe(metric)}")
    print(f"speed           {result.count / seconds:.0f} img/s on {classifier.device} "
          f"with {classifier.runtime.name} ({seconds:.1f}s: {preparing:.1f}s preparing "
          f"images, {seconds - preparing:.1f}s evaluating"
          f"{', one image at a time' if one_by_one else ''})")
    confused = analysis.confused
    print(f"errors          {len(analysis.errors)} in {out / 'errors.csv'} (worst first)"
          + (f"; most confused: {classifier.classes[confused[0].true]} -> "
             f"{classifier.classes[confused[0].predicted]} ({confused[0].count})"
             if confused else ""))
    if "calibration" in metrics:
        print(f"{'calibration':<16}{describe_calibration(metrics['calibration'])}")
    for line in ood.lines() if ood is not None else ():
        print(line)
    print(f"reports in      {out}/ (open {out / 'report.html'})")


def is_run_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a training run (its settings beside checkpoints or results)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and (
        any(folder.glob("*.pth")) or (folder / "results.json").is_file())


def folder_samples(folder: str) -> tuple[list[tuple[int, str]], list[str]]:
    """``(class index, path)`` of every readable image under ``folder/<class>/``, and the
    class names in index order (the sorted folder names).  Unreadable files are skipped with
    a warning, as the annotation does."""
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"{folder}: no such folder (eval.py DIR takes a folder of class "
                        "folders, e.g. datasets/test)")
    scan = scan_splits({"eval": path})["eval"]
    names = sorted(scan.images)
    if names and set(names) <= _SPLIT_NAMES:
        raise UserError(f"{folder}/ holds split folders ({', '.join(names)}), not class "
                        f"folders: give one of them, e.g. {folder}/{names[-1]}")
    paths = [p for name in names for p in scan.images[name] if p not in scan.unusable]
    problems = {**scan.unusable, **check_images(paths)}
    for image, reason in problems.items():
        warn(f"skipped {shown(image)}: {reason}")
    samples = [(i, p) for i, name in enumerate(names) for p in scan.images[name]
               if p not in problems]
    if not samples:
        raise UserError(f"{folder}/ holds no readable images in class folders "
                        f"({folder}/<class>/...)")
    return samples, names


def _folder_labels(classifier: Classifier, names: list[str], folder: str) -> list[int]:
    """The model's class id of each class folder; a folder the model does not know is an
    error (a model without a class folder simply has no images of it)."""
    unknown = [name for name in names if name not in classifier.classes]
    if unknown:
        known = classifier.classes
        raise UserError(f"{folder}/ has class folders the model does not know: "
                        f"{', '.join(map(repr, unknown[:4]))}"
                        f"{' and more' if len(unknown) > 4 else ''} (its classes: "
                        f"{', '.join(known[:6])}{', ...' if len(known) > 6 else ''})")
    return [classifier.classes.index(name) for name in names]


def _explainer(cfg: EvalConfig, classifier: Classifier) -> dict:
    """The PyTorch network behind the Grad-CAM maps, also when ONNX Runtime computed the
    figures (an ``.onnx`` file has none to give)."""
    runtime = classifier.runtime
    if runtime.name != "torch" and not is_onnx_path(classifier.info.get("path", "")):
        runtime = cfg.load(runtime="torch", channels_last=cfg.channels_last, amp=cfg.amp).runtime
    return {"model": runtime.model, "execution": runtime.execution} \
        if runtime.name == "torch" else {}
