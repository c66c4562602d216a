"""Running an ONNX model with ONNX Runtime, torch-free: ``.onnx`` files and cached exports.

A model exported by ``predict.py --export-onnx`` carries its whole
:class:`~utils.model.spec.ModelSpec` in its metadata (:data:`SPEC_KEY`, written by
:mod:`utils.inference.onnx_export`), so it is fed exactly like its checkpoint: the same
:func:`utils.data.preprocess.eval_array` pixels, normalised by
:func:`utils.data.preprocess.normalize_array` (bit-for-bit the torch normalisation), with
the same class names.

Nothing here imports torch: a one-image prediction from an ``.onnx`` file starts in a
fraction of a second instead of the two seconds ``import torch`` takes.  The description is
the checkpoint's own :class:`~utils.model.spec.ModelSpec`, read and checked by the same code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from utils.cli import UserError
from utils.data.preprocess import normalize_array
from utils.model.spec import ModelSpec

if TYPE_CHECKING:
    import onnxruntime
    import torch

#: ``metadata_props`` keys: the ModelSpec as JSON, and the run the model came from.
SPEC_KEY, SOURCE_KEY = "model_spec", "source"
#: ``metadata_props`` key of an int8 model: how it was quantized and what it scored.
QUANTIZATION_KEY = "quantization"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
#: The second output of a model exported with typicality statistics (the "unknown" score).
TYPICALITY_NAME = "typicality"


class OnnxRuntime:
    """An ONNX model run by ONNX Runtime on the CPU: uint8 image batches in, logits out.

    The same interface as :class:`utils.inference.torch_runtime.TorchRuntime`: :meth:`array_logits`
    for numpy batches (prediction), :meth:`logits` for tensors (``utils.evaluation.scoring``).
    """

    name = "onnxruntime"
    device = "cpu"

    def __init__(self, session: "onnxruntime.InferenceSession", mean: Sequence[float],
                 std: Sequence[float]):
        self.session = session
        self.mean, self.std = tuple(mean), tuple(std)
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        #: Whether the graph computes typicality (its second output).
        self.typical = any(o.name == TYPICALITY_NAME for o in session.get_outputs()[1:])

    def array_logits(self, batch: np.ndarray) -> np.ndarray:
        """Float32 logits (N, classes) of a uint8 (N, 3, H, W) batch."""
        inputs = {self.input_name: normalize_array(batch, self.mean, self.std)}
        (logits,) = self.session.run([self.output_name], inputs)
        return logits.astype(np.float32, copy=False)

    def array_scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 logits (N, classes) and typicality (N,) of a uint8 batch, in one run
        (only for a graph with the ``typicality`` output: :attr:`typical`)."""
        inputs = {self.input_name: normalize_array(batch, self.mean, self.std)}
        logits, typicality = self.session.run([self.output_name, TYPICALITY_NAME], inputs)
        return logits.astype(np.float32, copy=False), typicality.astype(np.float32, copy=False)

    def logits(self, batch: "torch.Tensor") -> "torch.Tensor":
        """:meth:`array_logits` of a uint8 tensor batch, as a CPU tensor."""
        import torch  # callers with tensors have imported it already

        return torch.from_numpy(self.array_logits(batch.cpu().numpy()))


def is_onnx_path(path: str | os.PathLike) -> bool:
    """True for a file name ending in ``.onnx`` (any case): run with ONNX Runtime."""
    return str(path).lower().endswith(".onnx")


def open_session(path: str | os.PathLike) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime CPU session of ``path``; a missing, truncated or non-ONNX file is a
    one-line :class:`UserError`."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: keep predict.py's stderr for our messages
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except (ort_errors.Fail, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph,
            ort_errors.InvalidArgument, ort_errors.NoSuchFile, ort_errors.NotImplemented,
            ort_errors.RuntimeException) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a usable ONNX model ({_clip(reason, 160)})") from None


def load_onnx(path: str | os.PathLike, *, classes: Sequence[str] | None = None,
              input_shape: Sequence[int] | None = None
              ) -> tuple[ModelSpec, OnnxRuntime, dict[str, Any]]:
    """Open an ONNX image classifier: its description, its runtime and where it came from.

    A model exported by this project describes itself; ``input_shape`` then must agree
    with it, and ``classes`` are left for the caller to match by name (as for a
    checkpoint).  Any other model needs ``classes`` (and ``input_shape`` unless the graph
    fixes it), and is fed as a new model of ours would be: ImageNet normalisation and crop.
    """
    session = open_session(path)
    graph_shape, outputs = _check_layout(session, path)
    meta = session.get_modelmeta().custom_metadata_map
    if SPEC_KEY in meta:
        spec = ModelSpec.from_dict(_json_object(meta[SPEC_KEY]), f"{path} (metadata {SPEC_KEY})")
        if input_shape is not None and tuple(input_shape) != spec.input_shape:
            raise UserError(f"{path} is a model with input_shape {list(spec.input_shape)}, not "
                            f"{list(input_shape)}: drop --input-shape, it describes itself")
        source = _json_object(meta.get(SOURCE_KEY, "{}"))
        source = source if isinstance(source, dict) else {}
    else:
        spec = _foreign_spec(path, session, graph_shape, classes, input_shape)
        source = {}
    if graph_shape is not None and graph_shape != spec.input_shape:
        raise UserError(f"{path}: the graph takes {graph_shape[0]}x{graph_shape[1]} images but "
                        f"its description says {spec.input_shape[0]}x{spec.input_shape[1]}")
    if outputs is not None and outputs != spec.num_classes:
        raise UserError(f"{path}: the graph has {outputs} outputs for {spec.num_classes} "
                        "class names")
    info = {"path": str(path), "epoch": source.get("epoch"), "top1": source.get("val_top1"),
            "scored_on": "validation"}
    return spec, OnnxRuntime(session, spec.mean, spec.std), info


def _foreign_spec(path, session, graph_shape, classes, input_shape) -> ModelSpec:
    """The description of a model exported elsewhere, from the flags and the graph."""
    shape = tuple(input_shape) if input_shape is not None else graph_shape
    if classes is None or shape is None:
        missing = [flag for flag, value in (("--classes FILE", classes),
                                            ("--input-shape H W", shape)) if value is None]
        raise UserError(f"{path} has no model description in its metadata (it was not "
                        f"exported by predict.py --export-onnx): give {' and '.join(missing)}")
    name = session.get_modelmeta().graph_name or "onnx"
    return ModelSpec.with_defaults(name, classes, shape)


def _check_layout(session, path) -> tuple[tuple[int, int] | None, int | None]:
    """The (H, W) and class count the graph fixes (None where dynamic); an input other than
    one float (batch, 3, H, W) tensor, or an output other than (batch, classes), is an error."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = "one float32 input (batch, 3, H, W): RGB images, channels first"
    if len(inputs) != 1:
        raise UserError(f"{path}: the model takes {len(inputs)} inputs; an image classifier "
                        f"here takes {expected}")
    shape = inputs[0].shape
    if inputs[0].type != "tensor(float)" or len(shape) != 4 or shape[1] != 3:
        raise UserError(f"{path}: the model's input is {inputs[0].type} {_dims(shape)}; "
                        f"an image classifier here takes {expected}")
    out = outputs[0].shape
    if len(out) != 2:
        raise UserError(f"{path}: the model's output is {_dims(out)}; an image classifier "
                        "here outputs (batch, classes)")
    static = [isinstance(d, int) and d > 0 for d in (*shape[2:], out[1])]
    return (tuple(shape[2:]) if all(static[:2]) else None), (out[1] if static[2] else None)


def _json_object(text: str) -> Any:
    """The JSON value ``text`` holds; ``None`` for text that is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _dims(shape) -> str:
    return "(" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + ")"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
