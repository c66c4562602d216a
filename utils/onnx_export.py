"""Export a :class:`~utils.classifier.Classifier` to ONNX and check it against PyTorch.

The exported graph is the network only:

* input ``input``: float32 ``(batch, 3, H, W)``, RGB, normalised as ``(pixel / 255 - mean) / std``
  after the evaluation resize and centre crop (:func:`utils.preprocess.to_uint8`);
* output ``logits``: float32 ``(batch, num_classes)``; apply a softmax for probabilities.

The batch dimension is dynamic.  Class names, input shape, mean and std are stored in the
model's metadata (``metadata_props``), so the ``.onnx`` file is as self-describing as the
checkpoint it came from.

The exporter is ``torch.export``-based (``dynamo=True``), torch's default and maintained
path.  Should it fail on some model, the TorchScript exporter is tried instead with a
warning; the result is checked against PyTorch with onnxruntime whichever exporter wrote it.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from utils.cli import UserError, warn

INPUT_NAME, OUTPUT_NAME = "input", "logits"
OPSET = 18
#: Largest |onnxruntime - PyTorch| logit difference accepted by :func:`check_onnx`.
TOLERANCE = 1e-4


def export_onnx(classifier, path: str | os.PathLike) -> dict[str, str]:
    """Write ``classifier``'s network to ``path``; returns the metadata stored in it."""
    path = Path(path)
    if path.parent != Path() and not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    spec = classifier.spec
    h, w = spec.input_shape
    # The network alone, on the CPU in float32: what an ONNX runtime will execute.
    model = _cpu_copy(classifier.model)
    example = torch.randn(2, 3, h, w)
    try:
        _export_dynamo(model, example, path)
    except Exception as exc:  # noqa: BLE001 - any exporter failure: try the other one
        warn(f"torch.export-based ONNX export failed ({type(exc).__name__}: "
             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
             "using the TorchScript exporter")
        _export_torchscript(model, example, path)
    metadata = {
        "classes": json.dumps(list(spec.classes)),
        "input_shape": json.dumps(list(spec.input_shape)),
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "backbone": spec.backbone,
        "preprocessing": "RGB, resize to cover and centre-crop to input_shape, "
                         "(pixel / 255 - mean) / std, NCHW float32",
        "output": "logits (apply softmax for probabilities)",
    }
    _add_metadata(path, metadata)
    return metadata


def check_onnx(classifier, path: str | os.PathLike, batch_size: int = 3,
               tolerance: float = TOLERANCE, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| over the logits of a random batch; error above tolerance.

    The batch size differs from the export example's on purpose: it proves the batch
    dimension really is dynamic.
    """
    import onnxruntime as ort  # optional dependency (requirements-dev.txt): import on use

    h, w = classifier.input_shape
    x = torch.randn(batch_size, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = _cpu_copy(classifier.model)(x).float().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    if actual.shape != expected.shape:
        raise UserError(f"{path}: ONNX output shape {actual.shape} != PyTorch {expected.shape}")
    diff = float(np.abs(actual - expected).max())
    if not diff <= tolerance:
        raise UserError(f"{path}: ONNX outputs differ from PyTorch by {diff:.3g} "
                        f"(more than {tolerance:g})")
    return diff


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode on the CPU, float32 (a copy only when it lives elsewhere)."""
    param = next(model.parameters(), None)
    if param is not None and (param.device.type != "cpu" or param.dtype != torch.float32):
        model = copy.deepcopy(model).to("cpu", torch.float32)
    return model.eval()


def _export_dynamo(model, example, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, fallbacks)
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                    opset_version=OPSET, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},))
    program.save(str(path))


def _export_torchscript(model, example, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter says so
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = ("Image classifier. Input 'input': float32 (batch, 3, H, W), "
                        "normalised RGB; output 'logits'. See metadata_props.")
    onnx.save(model, str(path))
