"""``export.py`` (and ``predict.py --export-onnx``): a checkpoint written for another
runtime, checked against it, written only if it passed.

:func:`run_export` is the command: it settles the output path and what the format needs
(a converter package, the ONNX Runtime Web files) before the model is even loaded, then
:func:`export_model` writes the format into a hidden sibling of the output
(:func:`~utils.inference.export_common.staged_output`), runs the parity check and
renames it into place.  The ``onnx`` and ``int8`` formats live here, on the project's ONNX
exporter and quantizer; ``web``, ``tflite`` and ``coreml`` have a module each, imported
only for their own format.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from utils.cli import UserError
from utils.data.lists import read_classes
from utils.inference.classifier import Classifier, RunOptions
from utils.inference.export_common import (ExportJob, Runner, check_destination, size_on_disk,
                                           staged_output)
from utils.inference.export_config import FORMATS, ExportConfig
from utils.inference.onnx_runtime import (INPUT_NAME, OUTPUT_NAME, TYPICALITY_NAME, OnnxRuntime,
                                          is_onnx_path)
from utils.layout import ANNOTATION_FILES, DEFAULT_CLASSES


def run_export(cfg: ExportConfig) -> Path:
    """``export.py``: check the output and the format's needs, load the model, export."""
    source = cfg.source()
    if is_onnx_path(source.path):
        raise UserError(f"{source.path} is an ONNX model already: export.py converts a "
                        "checkpoint (.pth)")
    if not Path(source.path).is_file():
        raise UserError(f"{source.path}: no such file")
    out = destination(cfg.format, source.path, cfg.out, cfg.force)
    web_files = prerequisites(cfg.format, cfg.ort_web)
    # As predict.py runs it on a CPU (PyTorch, float32): the reference of the parity check.
    classifier = Classifier.load(source, RunOptions(device="cpu", runtime="torch"))
    if cfg.classes:  # asked for: the model's names must be these (they name the output)
        classifier.label_map(read_classes(cfg.classes), cfg.classes)
    return export_model(classifier, cfg.format, out, web_files=web_files,
                        classes_file=cfg.classes or DEFAULT_CLASSES)


def destination(fmt: str, model: str | os.PathLike, out: str | os.PathLike | None,
                force: bool) -> Path:
    """Where ``fmt`` is written: ``out``, or beside ``model`` (its name with the format's
    suffix); refused as :func:`check_destination` says."""
    spec = FORMATS[fmt]
    if out is None:
        model = Path(model)
        out = model.with_name(model.stem + spec.suffix)
    return check_destination(out, model, force, spec.ending, folder=spec.folder)


def prerequisites(fmt: str, ort_web: str | None = None) -> Path | None:
    """Check that what ``fmt`` needs is installed (a one-line error naming the install
    command otherwise); for ``web``, the folder of ONNX Runtime Web files."""
    if fmt == "tflite":
        from utils.inference import export_tflite
        export_tflite.require()
    elif fmt == "coreml":
        from utils.inference import export_coreml
        export_coreml.require()
    elif fmt == "web":
        from utils.inference import ort_web as ort_web_files
        return ort_web_files.runtime_files(ort_web)
    return None


def export_model(classifier: Classifier, fmt: str, out: Path, *,
                 web_files: Path | None = None, classes_file: str = DEFAULT_CLASSES) -> Path:
    """Write ``classifier`` (a checkpoint on PyTorch) as ``fmt`` to ``out`` (checked by
    :func:`destination` already), ending with the parity check; print what was done."""
    t0 = time.perf_counter()
    job = ExportJob(classifier)
    writers: dict[str, Callable[[Path], list[str]]] = {
        "onnx": lambda tmp: write_onnx(job, tmp),
        "int8": lambda tmp: write_int8(job, tmp, classes_file),
        "web": lambda tmp: _module("export_web").write(job, tmp, web_files),
        "tflite": lambda tmp: _module("export_tflite").write(job, tmp),
        "coreml": lambda tmp: _module("export_coreml").write(job, tmp),
    }
    with staged_output(out) as tmp:
        lines = writers[fmt](tmp)
    for line in lines:
        print(line, file=sys.stderr)
    print(f"wrote {out} ({size_on_disk(out) / 1e6:.2f} MB) in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out


def _module(name: str):
    import importlib

    return importlib.import_module(f"utils.inference.{name}")


def write_onnx(job: ExportJob, path: Path, typicality: bool = True) -> list[str]:
    """``--format onnx``: the project's ONNX export (description in ``metadata_props``;
    with ``typicality``, the "unknown" score as a second output when the model has one),
    checked with ONNX Runtime."""
    from utils.inference.onnx_export import export_onnx, source_of

    export_onnx(job.spec, job.network(typicality), path,
                source_of(job.path, job.classifier.info))
    parity = job.parity(onnx_runner(path, job.spec))
    h, w = job.spec.input_shape
    typical = typicality and job.classifier.runtime.typical
    return [f"parity, ONNX Runtime vs PyTorch: {parity.line()}",
            f"input '{INPUT_NAME}' float32 [batch, 3, {h}, {w}] = (RGB / 255 - mean) / std, "
            f"mean {_triple(job.spec.mean)}, std {_triple(job.spec.std)}; output "
            f"'{OUTPUT_NAME}' [batch, {job.spec.num_classes}]"
            + (f" and '{TYPICALITY_NAME}' [batch]" if typical else "")
            + "; the model description in the metadata (model_spec)"]


def write_int8(job: ExportJob, path: Path, classes_file: str) -> list[str]:
    """``--format int8``: the float export (checked), quantized, scored beside it on the
    validation images, and checked against PyTorch with the int8 threshold."""
    from utils.inference.onnx_quantize import export_int8

    float_lines, scores = export_int8(job.classifier, path,
                                      lambda p: write_onnx(job, p, typicality=False),
                                      ANNOTATION_FILES["train"], ANNOTATION_FILES["val"],
                                      classes_file)
    parity = job.parity(onnx_runner(path, job.spec), kind="int8")
    return [float_lines[0].replace("parity,", "float model before quantization, parity,", 1),
            f"parity, int8 ONNX Runtime vs PyTorch: {parity.line()}", scores]


def onnx_runner(path: Path, spec) -> Runner:
    """The ONNX model at ``path`` run by ONNX Runtime, as ``predict.py`` runs an .onnx."""
    from utils.inference.onnx_runtime import open_session

    return OnnxRuntime(open_session(path), spec.mean, spec.std).array_logits


def _triple(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
