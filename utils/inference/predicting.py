"""Classifying images named on the command line or typed at a prompt, and where the answers go.

``predict.py`` is this module's command line: :func:`classify` turns the paths into
:class:`Answer` s (batched, folders walked), :class:`Outputs` prints them and writes the
``--csv`` file and the ``--sort-into`` / ``--cam`` folders, and :func:`export` writes
``--export-onnx`` (as ``export.py`` does).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from utils.cli import warn
from utils.data.image import is_image_file, load_or_warn
from utils.fileio import within
from utils.inference.bulk import (UNCERTAIN, UNKNOWN, CsvPredictions, bucket, sort_into,
                                  write_new)
from utils.inference.classifier import Classifier
from utils.inference.config import PredictConfig


def output_conflict(source: str, args: PredictConfig) -> str | None:
    """Why images under ``source`` must not be classified with these outputs, or None: an
    output folder inside it (its outputs would be read back as inputs) or it inside one
    (the outputs would be written into the folder being read)."""
    for flag, folder in (("--sort-into", args.sort_into), ("--cam", args.cam)):
        if folder and os.path.isdir(source) and (within(folder, source)
                                                 or within(source, folder)):
            return (f"{flag} {folder} and {source} overlap: the outputs would be read as "
                    "inputs; choose an output folder outside it")
    return None


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
    class-activation map when asked for); with ``--reject auto``, whether the answer is
    "unknown" and the score that decided it."""

    path: str
    top: list[tuple[str, float]]
    pixels: np.ndarray  #: (3, H, W) uint8, the evaluation preprocessing's output
    heatmap: np.ndarray | None = None  #: (H, W) in [0, 1]
    unknown: bool = False
    score: float | None = None  #: the rejection score (``--reject auto`` only)


def classify(classifier: Classifier, sources: Iterable[str], topk: int, batch_size: int,
             cam: bool = False, reject: bool = False) -> Iterator[Answer]:
    """The :class:`Answer` for every image the sources name, with its Grad-CAM map if
    ``cam``, and "unknown" below the model's threshold if ``reject``.

    Each source is finished before the next is read, so answers appear as paths are typed.
    """
    for source in sources:
        for paths in batched(image_paths(source), batch_size):
            loaded = [(path, load_or_warn(path)) for path in paths]
            readable = [path for path, image in loaded if image is not None]
            if not readable:
                continue
            pixels = classifier.preprocess([image for _, image in loaded if image is not None])
            if reject:
                probabilities, scores = classifier.scores(pixels)
                unknown = classifier.unknown(scores)
            else:
                probabilities = classifier.probabilities(pixels)
                scores, unknown = [None] * len(readable), [False] * len(readable)
            maps = classifier.grad_cam(pixels, probabilities.argmax(1)) if cam \
                else [None] * len(readable)
            for path, top, image, heatmap, no, score in zip(
                    readable, classifier.topk(probabilities, topk), pixels, maps, unknown,
                    scores):
                yield Answer(path, top, image, heatmap, bool(no),
                             None if score is None else float(score))


def save_cam(folder: str, answer: Answer) -> Path:
    """``folder/<image name>_cam.png``: the image as the model saw it, its map over it."""
    from utils.evaluation.cam import overlay_image

    picture = overlay_image(answer.pixels.transpose(1, 2, 0), answer.heatmap)
    name = f"{Path(answer.path).stem}_cam.png"
    return write_new(folder, name, lambda f: picture.save(f, format="PNG"),
                     what=f"write the map of {answer.path}")


def print_table(answer: Answer) -> None:
    """The image's path, "unknown" when the model says so, then its top classes."""
    width = max(len(name) for name, _ in answer.top)
    lines = [answer.path]
    if answer.unknown:
        lines.append(f"  unknown: unlike the training images (score {answer.score:.4g}, "
                     "below the model's threshold); the nearest classes:")
    lines += [f"  {rank}. {name:<{width}}  {p * 100:6.2f}%"
              for rank, (name, p) in enumerate(answer.top, 1)]
    print("\n".join(lines), flush=True)


def export(args: PredictConfig) -> None:
    """``--export-onnx OUT.onnx [--int8]``: ``export.py --format onnx|int8``, through the
    same code (checked, never over the model nor, without ``--force``, an existing file)."""
    import dataclasses

    from utils.inference.config import ModelFile
    from utils.inference.export_config import ExportConfig
    from utils.inference.exporting import run_export

    model = {f.name: getattr(args, f.name) for f in dataclasses.fields(ModelFile)}
    run_export(ExportConfig(**model, format="int8" if args.int8 else "onnx",
                            out=args.export_onnx, force=args.force))


class Outputs:
    """Where each :class:`Answer` goes: printed (a table, or JSON at the end), and the
    ``--csv`` file, ``--sort-into`` and ``--cam`` folders when asked for."""

    def __init__(self, args: PredictConfig, classes: Sequence[str]):
        self.args = args
        reject = args.reject == "auto"
        self.csv = CsvPredictions(args.csv, min(args.topk, len(classes)), reject) \
            if args.csv else None
        self.uncertain = bucket(UNCERTAIN, classes)
        self.unknown = bucket(UNKNOWN, classes)
        self.json: list[dict] = []
        self.sorted: dict[str, int] = {}
        self.done = 0

    def add(self, answer: Answer) -> None:
        args = self.args
        self.done += 1
        if args.json:
            entry = {"path": answer.path, "predictions": [
                {"class": name, "probability": p} for name, p in answer.top]}
            if answer.score is not None:
                entry.update(unknown=answer.unknown, score=answer.score)
            self.json.append(entry)
        else:
            print_table(answer)
        if self.csv:
            self.csv.add(answer.path, answer.top, answer.unknown if answer.score is not None
                         else None)
        if args.sort_into:
            folder = sort_into(args.sort_into, answer.path, answer.top,
                               args.min_confidence, self.uncertain,
                               self.unknown if answer.unknown else None).parent.name
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
