"""int8 ONNX models: static quantization with ONNX Runtime's tools, calibrated on training images.

``export.py --format int8`` (and ``predict.py --export-onnx out.onnx --int8``) exports the
float model (checked against PyTorch), then :func:`onnxruntime.quantization.quantize_static`
turns weights and activations into int8, with activation ranges measured on
:data:`CALIBRATION_IMAGES` training images through the evaluation preprocessing.
Quantization costs some accuracy, so both models are scored on the same validation images
and the two top-1s printed side by side; the int8 file keeps the float model's description
and records both scores.
"""
from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from utils.cli import UserError, default_workers
from utils.data.batches import Loading, make_batches
from utils.data.image import load_or_warn
from utils.data.lists import read_annotation, read_classes
from utils.data.preprocess import eval_array, normalize_array
from utils.evaluation.scoring import evaluate_logits
from utils.inference.onnx_export import set_metadata
from utils.inference.onnx_runtime import INPUT_NAME, QUANTIZATION_KEY, OnnxRuntime, open_session

#: Training images whose activations set the int8 ranges (a seeded sample of the file).
CALIBRATION_IMAGES = 300
#: Validation images both models are scored on at export time (a seeded sample).
SCORE_IMAGES = 2000
#: Operator-oriented int8 (QLinearConv ...) ran faster than QDQ here: see the README.
QUANT_FORMAT = "QOperator"


def export_int8(classifier, out: str | os.PathLike, export_float: Callable[[Path], Any],
                train_annotation: str | os.PathLike, val_annotation: str | os.PathLike,
                classes_file: str | os.PathLike) -> tuple[Any, str]:
    """Write the int8 model of ``classifier`` (a checkpoint on the torch runtime) to ``out``.

    ``export_float(path)`` writes (and checks) the float ONNX model to quantize; its result
    is returned.  Calibrates on ``train_annotation``'s images, scores float and int8 on
    ``val_annotation``'s (labels of ``classes_file``'s list, matched to the model's classes
    by name), both read before any export work.  Returns what ``export_float`` returned and
    a line comparing the two top-1s.
    """
    out, spec = Path(out), classifier.spec
    calibration = sample_images(_listed(train_annotation, None, "calibrates on"),
                                CALIBRATION_IMAGES)
    classes = read_classes(classes_file)
    to_model = classifier.label_map(classes, classes_file)
    scored = [(to_model[label], path) for label, path in sample_images(
        _listed(val_annotation, classes, "scores the int8 model on"), SCORE_IMAGES)]
    float_path = out.with_name(f".{out.name}.{os.getpid()}.float.onnx")
    try:
        checked = export_float(float_path)
        arrays = calibration_arrays(calibration, spec)
        quantize(float_path, out, arrays)
        top1 = {name: score(path, spec, scored)
                for name, path in (("float", float_path), ("int8", out))}
        record = {"method": f"onnxruntime quantize_static, {QUANT_FORMAT}, per-channel int8 "
                            "weights, uint8 activations (MinMax)",
                  "calibration": {"annotation": str(train_annotation), "images": len(arrays)},
                  "top1": {**top1, "annotation": str(val_annotation), "images": len(scored)}}
        set_metadata(out, {**open_session(float_path).get_modelmeta().custom_metadata_map,
                           QUANTIZATION_KEY: json.dumps(record)})
    finally:
        float_path.unlink(missing_ok=True)
    line = (f"int8 top-1 {top1['int8']:.2%} vs float {top1['float']:.2%} "
            f"({100 * (top1['int8'] - top1['float']):+.2f} points) on {len(scored):,} images of "
            f"{val_annotation}; calibrated on {len(arrays)} images of {train_annotation}")
    return checked, line


def calibration_arrays(samples: Sequence[tuple[int, str]], spec) -> list[np.ndarray]:
    """The model inputs of the readable ``samples``, one (1, 3, H, W) float32 array each:
    the evaluation preprocessing and normalisation, as inference will see them."""
    arrays = []
    for _, path in samples:
        image = load_or_warn(path)
        if image is not None:
            arrays.append(normalize_array(eval_array(image, spec.geometry)[None], spec.mean,
                                          spec.std))
    if not arrays:
        raise UserError(f"--int8: none of the {len(samples)} calibration images could be read")
    return arrays


def quantize(float_path: str | os.PathLike, int8_path: str | os.PathLike,
             calibration: Sequence[np.ndarray], quant_format: str = QUANT_FORMAT) -> None:
    """Static int8 quantization of ``float_path`` into ``int8_path`` (per-channel int8
    weights, uint8 activations with MinMax ranges over ``calibration``)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches: Iterator[np.ndarray] = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    # The quantizer logs a warning (with a protobuf dump) for every integer shape tensor it
    # rightly leaves alone, and suggests a pre-processing step that made no difference here:
    # some 80 lines on the root logger that say nothing to the user.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(str(float_path), str(int8_path), Reader(),
                        quant_format=QuantFormat.from_string(quant_format), per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    finally:
        root.setLevel(level)


def score(path: str | os.PathLike, spec, samples: Sequence[tuple[int, str]]) -> float:
    """Top-1 of the ONNX model at ``path`` (described by ``spec``) over ``samples``
    (labels: its output ids), images decoded as ``eval.py --no-cache`` does."""
    runtime = OnnxRuntime(open_session(path), spec.mean, spec.std)
    batches = make_batches(samples, spec.geometry, 64, train=False, source=path,
                           loading=Loading(workers=default_workers(4), cache_dir=None))
    return evaluate_logits(runtime.logits, batches, spec.num_classes, "cpu").top1


def _listed(annotation, classes, purpose: str) -> list[tuple[int, str]]:
    if not Path(annotation).is_file():
        raise UserError(f"--int8 {purpose} the images of {annotation}, which does not exist: "
                        "run `python txt_annotation.py` first")
    samples = read_annotation(annotation, classes, allow_empty=True)
    if not samples:
        raise UserError(f"--int8 {purpose} the images of {annotation}, which lists none")
    return samples


def sample_images(samples: list, count: int, seed: int = 0) -> list:
    """``count`` of an annotation's ``samples`` drawn at random (seeded; all when fewer), in
    file order: not the first lines, since annotation files list one class after another."""
    if len(samples) <= count:
        return samples
    keep = sorted(random.Random(seed).sample(range(len(samples)), count))
    return [samples[i] for i in keep]
