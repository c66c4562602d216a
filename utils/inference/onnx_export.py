"""Export a network to ONNX and check it against PyTorch.

The exported graph is the network only:

* input ``input``: float32 ``(batch, 3, H, W)``, RGB, normalised as ``(pixel / 255 - mean) / std``
  after the evaluation resize and centre crop (:func:`utils.data.preprocess.eval_array`);
* output ``logits``: float32 ``(batch, num_classes)``; the probabilities are
  ``softmax(logits / temperature)``, the temperature being the description's (1 when it has
  none);
* a second output ``typicality``: float32 ``(batch,)``, when the checkpoint has typicality
  statistics (:mod:`utils.evaluation.typicality`, computed in the graph from the blocks'
  activations): below the description's ``rejection.value`` the answer is "unknown".

The batch dimension is dynamic.  The model's whole :class:`~utils.model.spec.ModelSpec`
(``spec.to_dict()`` as JSON) and the run it came from (checkpoint, epoch, validation top-1)
are stored in its metadata (``metadata_props``), so the ``.onnx`` file is as
self-describing as the checkpoint: ``predict.py`` and ``eval.py`` run it through ONNX
Runtime (:mod:`utils.inference.onnx_runtime`) with nothing else to say.

The exporter is ``torch.export``-based (``dynamo=True``), torch's default and maintained
path.  Should it fail on some model, the TorchScript exporter is tried instead with a
warning; the result is checked against PyTorch with onnxruntime whichever exporter wrote it
(:func:`check_onnx` for the runtime cache and benchmarks; ``export.py``'s formats end with
the parity check of :mod:`utils.inference.export_common`).
Both exporters need the ``onnx`` and ``onnxscript`` packages (``torch.onnx`` imports them),
which is why they are runtime requirements: ``--runtime auto`` exports a checkpoint for
ONNX Runtime on a CPU.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.cli import UserError, warn
from utils.evaluation.typicality import TypicalNetwork
from utils.inference.onnx_runtime import (INPUT_NAME, OUTPUT_NAME, SOURCE_KEY, SPEC_KEY,
                                          TYPICALITY_NAME, open_session)
from utils.model.spec import ModelSpec

OPSET = 18
#: Largest |onnxruntime - PyTorch| logit difference accepted by :func:`check_onnx`.
TOLERANCE = 1e-4
#: Largest typicality difference accepted, relative to the value (at least 1).
TYPICALITY_TOLERANCE = 1e-3


def export_onnx(spec: ModelSpec, model: torch.nn.Module, path: str | os.PathLike,
                source: dict[str, Any] | None = None) -> dict[str, str]:
    """Write ``model`` (described by ``spec``) to ``path``; returns the metadata stored in it.

    ``source`` says where the weights came from (``checkpoint``, ``epoch``, ``val_top1``).
    A :class:`~utils.evaluation.typicality.TypicalNetwork` gets its second output.
    """
    path = Path(path)
    h, w = spec.input_shape
    # The network alone, on the CPU in float32: what an ONNX runtime will execute.
    model = _cpu_copy(model)
    example = torch.randn(2, 3, h, w)
    outputs = _output_names(model)
    try:
        _export_dynamo(model, example, path, outputs)
    except Exception as exc:  # noqa: BLE001 - any exporter failure: try the other one
        warn(f"torch.export-based ONNX export failed ({type(exc).__name__}: "
             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
             "using the TorchScript exporter")
        _export_torchscript(model, example, path, outputs)
    metadata = {
        SPEC_KEY: json.dumps(spec.to_dict()),
        SOURCE_KEY: json.dumps(source or {}),
        "preprocessing": "RGB, resize to cover input_shape / crop_fraction, centre-crop to "
                         "input_shape, (pixel / 255 - mean) / std, NCHW float32",
        "output": "logits: softmax(logits / temperature) are the probabilities (temperature "
                  "in model_spec, 1 when null)" + ("; typicality: below model_spec's "
                                                  "rejection.value the answer is unknown"
                                                  if len(outputs) > 1 else ""),
    }
    set_metadata(path, metadata)
    return metadata


def source_of(checkpoint: str | os.PathLike, info: dict[str, Any]) -> dict[str, Any]:
    """The :data:`SOURCE_KEY` metadata of a model exported from ``checkpoint`` (``info``:
    its ``epoch`` and ``top1``, as :class:`~utils.inference.classifier.Classifier` keeps them); a
    first-version checkpoint's top-1 was measured on the test set and is left out."""
    validated = info.get("scored_on", "validation") == "validation"
    return {"checkpoint": str(checkpoint), "epoch": info.get("epoch"),
            "val_top1": info.get("top1") if validated else None}


def check_onnx(model: torch.nn.Module, path: str | os.PathLike, input_shape: tuple[int, int],
               batch_size: int = 3, tolerance: float = TOLERANCE, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| over the logits of a random batch; error above tolerance.
    A second output (typicality) must agree too, relative to its size (it sums squares
    of hundreds of activations: float32 rounding grows with it).

    The batch size differs from the export example's on purpose: it proves the batch
    dimension really is dynamic.
    """
    h, w = input_shape
    x = torch.randn(batch_size, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = _cpu_copy(model)(x)
    expected = [t.float().numpy() for t in (expected if isinstance(expected, tuple)
                                            else (expected,))]
    names = _output_names(model)
    actual = open_session(path).run(names, {INPUT_NAME: x.numpy()})
    if actual[0].shape != expected[0].shape:
        raise UserError(f"{path}: ONNX output shape {actual[0].shape} != PyTorch "
                        f"{expected[0].shape}")
    diff = float(np.abs(actual[0] - expected[0]).max())
    scaled = [float((np.abs(a - e) / np.maximum(1.0, np.abs(e))).max())
              for a, e in zip(actual[1:], expected[1:])]
    if not diff <= tolerance or not all(d <= TYPICALITY_TOLERANCE for d in scaled):
        raise UserError(f"{path}: ONNX outputs differ from PyTorch by {max([diff, *scaled]):.3g} "
                        f"(more than {tolerance:g})")
    return diff


def export_checked(spec: ModelSpec, model: torch.nn.Module, path: str | os.PathLike,
                   source: dict[str, Any] | None = None) -> float:
    """:func:`export_onnx` then :func:`check_onnx`, into a temporary file renamed to ``path``
    once it passed: ``path`` is the checked model or untouched, never half of one.
    Returns the largest logit difference."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.onnx")
    try:
        export_onnx(spec, model, tmp, source)
        diff = check_onnx(model, tmp, spec.input_shape)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def set_metadata(path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Store ``metadata`` in the ONNX model at ``path`` (replacing keys it already has)."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = ("Image classifier. Input 'input': float32 (batch, 3, H, W), "
                        "normalised RGB; output 'logits'. See metadata_props.")
    onnx.save(model, str(path))


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode on the CPU, float32 (a copy only when it lives elsewhere)."""
    param = next(model.parameters(), None)
    if param is not None and (param.device.type != "cpu" or param.dtype != torch.float32):
        model = copy.deepcopy(model).to("cpu", torch.float32)
    return model.eval()


def _output_names(model: torch.nn.Module) -> list[str]:
    return [OUTPUT_NAME, TYPICALITY_NAME] if isinstance(model, TypicalNetwork) \
        else [OUTPUT_NAME]


def _export_dynamo(model, example, path: Path, outputs: list[str]) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, fallbacks)
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                    opset_version=OPSET, input_names=[INPUT_NAME],
                                    output_names=outputs, dynamic_shapes=({0: batch},))
    program.save(str(path))


def _export_torchscript(model, example, path: Path, outputs: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter says so
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]})
