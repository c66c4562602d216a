"""Images of no trained class: ``eval.py --ood DIR`` measures how well a model tells them
from the images it knows, with the score its "unknown" answer uses.

The score is the model's rejection score (``typicality`` for models trained here, see
:mod:`utils.evaluation.typicality`); a model without one (trained before the "unknown"
answer, an int8 export, another project's ``.onnx``) is measured with its maximum
calibrated probability instead, and has no threshold to apply.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from utils.cli import UserError
from utils.data.image import load_or_warn
from utils.evaluation.calibration import softmax
from utils.evaluation.ood import OodReport, ood_report
from utils.inference.classifier import Classifier
from utils.inference.predicting import batched, image_paths


def unknown_paths(folder: str) -> list[str]:
    """The image files under ``folder`` (any layout); a missing or image-less folder is a
    one-line :class:`UserError`, raised before anything is written."""
    if not os.path.isdir(folder):
        raise UserError(f"--ood {folder}: no such folder (give a folder of images of no "
                        "trained class)")
    paths = list(image_paths(folder))
    if not paths:
        raise UserError(f"--ood {folder}: no image files in this folder")
    return paths


def rejection_score(classifier: Classifier) -> str:
    """The score ``--ood`` measures: the model's rejection score when it can compute it,
    else ``msp`` (the maximum calibrated probability)."""
    try:
        classifier.check_rejection()
    except UserError:
        return "msp"
    return classifier.spec.rejection.score


def score_paths(classifier: Classifier, paths: Sequence[str], kind: str,
                batch_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predicted class ids, ``kind`` scores and the paths read (unreadable files are
    warned about and left out)."""
    predicted, scores, read = [], [], []
    for chunk in batched(paths, batch_size):
        loaded = [(path, load_or_warn(path)) for path in chunk]
        loaded = [(path, image) for path, image in loaded if image is not None]
        if not loaded:
            continue
        batch = classifier.preprocess([image for _, image in loaded])
        if kind == "msp":
            probabilities = softmax(classifier.array_logits(batch), classifier.temperature)
            batch_scores = probabilities.max(1)
        else:
            probabilities, batch_scores = classifier.scores(batch)
        predicted.append(probabilities.argmax(1))
        scores.append(np.asarray(batch_scores, dtype=np.float64))
        read += [path for path, _ in loaded]
    if not read:
        return np.empty(0, np.int64), np.empty(0), []
    return np.concatenate(predicted), np.concatenate(scores), read


def measure_unknown(classifier: Classifier, known: Sequence[tuple[int, str]],
                    unknown: Sequence[str], batch_size: int) -> OodReport:
    """AUROC of the ``known`` labelled images against the ``unknown`` ones, and what the
    model's threshold does to both."""
    kind = rejection_score(classifier)
    labels = dict((path, label) for label, path in known)
    predicted, known_scores, read = score_paths(classifier, [p for _, p in known], kind,
                                                batch_size)
    right = predicted == np.array([labels[path] for path in read], dtype=np.int64)
    _, unknown_scores, read_unknown = score_paths(classifier, unknown, kind, batch_size)
    if not read_unknown:
        raise UserError("--ood: none of its images could be read")
    rejection = classifier.spec.rejection
    if rejection is not None and rejection.score != kind:  # its score cannot be computed
        rejection = None
    return ood_report(known_scores, unknown_scores, right, rejection, kind)
