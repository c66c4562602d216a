"""``--format tflite``: a LiteRT (TensorFlow Lite) flatbuffer through ``litert-torch``, checked
with the LiteRT interpreter (``ai-edge-litert``, which comes with it).

The converted graph keeps PyTorch's layout and a batch of one: input float32
``(1, 3, H, W)``, normalised as for ONNX (``(RGB / 255 - mean) / std``); output the logits
``(1, classes)``.  The model description (``model_spec``) and its origin (``source``), JSON,
are entries of the flatbuffer's own ``metadata`` table, which the interpreter ignores and
any flatbuffer reader (:func:`read_metadata`) finds.

``litert-torch`` is an optional extra (``requirements-export.txt``): it needs torch < 2.15
and brings jax and transformers, about 1.2 GB.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from utils.cli import UserError
from utils.data.preprocess import normalize_array
from utils.inference.export_common import ExportJob, Runner, converter_output_hidden
from utils.inference.export_config import EXPORT_REQUIREMENTS


def require() -> None:
    """A one-line error naming the install command unless the converter is installed."""
    try:
        with converter_output_hidden():  # log lines of its libraries at import
            import ai_edge_litert.interpreter  # noqa: F401
            import litert_torch  # noqa: F401
    except ImportError as exc:
        raise UserError(f"--format tflite needs litert-torch ({exc.name} is not installed): "
                        f"pip install -r {EXPORT_REQUIREMENTS}") from None


def write(job: ExportJob, path: Path) -> list[str]:
    """Convert ``job``'s network to ``path``, store its description, check it."""
    import litert_torch
    import torch

    h, w = job.spec.input_shape
    with converter_output_hidden(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations inside the converter's packages
        litert_torch.convert(job.network(), (torch.zeros(1, 3, h, w),)).export(str(path))
    add_metadata(path, {key: value.encode() for key, value in job.metadata().items()})
    stored = read_metadata(path)
    if any(stored.get(key) != value for key, value in job.metadata().items()):
        raise UserError(f"{path}: the model description does not read back as written")
    parity = job.parity(interpreter_runner(path, job.spec))
    return [f"parity, LiteRT interpreter vs PyTorch: {parity.line()}",
            f"input float32 [1, 3, {h}, {w}] = (RGB / 255 - mean) / std, NCHW; output "
            f"logits [1, {job.spec.num_classes}]; the model description in the flatbuffer's "
            "metadata (model_spec)"]


def add_metadata(path: Path, entries: dict[str, bytes]) -> None:
    """Add (or replace) ``metadata`` entries, name -> bytes, of the .tflite at ``path``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    kept = [m for m in (model.metadata or []) if m.name.decode() not in entries]
    for name, value in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value, np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        kept.append(entry)
    model.metadata = kept
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata`` entries of the .tflite at ``path`` that are text (the converter's
    binary ones left out)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    entries = {}
    for i in range(model.MetadataLength()):
        meta = model.Metadata(i)
        data = model.Buffers(meta.Buffer()).DataAsNumpy()
        try:
            entries[meta.Name().decode()] = np.asarray(data, np.uint8).tobytes().decode()
        except (UnicodeDecodeError, AttributeError, TypeError):
            continue
    return entries


def interpreter_runner(path: Path, spec) -> Runner:
    """The .tflite at ``path`` run by the LiteRT interpreter, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    with converter_output_hidden():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def run(batch: np.ndarray) -> np.ndarray:
        rows = []
        for x in normalize_array(batch, spec.mean, spec.std):
            interpreter.set_tensor(source, x[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(target)[0].copy())
        return np.stack(rows)
    return run
