"""``--format coreml``: a Core ML ML Program (an ``.mlpackage`` folder) through ``coremltools``.

The network is captured with ``torch.export`` and converted for iOS 16 / macOS 13 in
float32: input ``input``, float32 ``(1, 3, H, W)`` normalised as for ONNX (an
``ImageType`` input cannot express a per-channel std, and Vision's resize would not be
Pillow's anyway); output ``logits``.  The model description (``model_spec``) and its
origin (``source``) are in ``user_defined_metadata``.

Conversion and the spec check (names, shapes and metadata read back from the saved
package) run anywhere; running the model needs the Core ML framework, so the prediction
parity check runs on macOS only and is reported as skipped elsewhere.
``coremltools`` is an optional extra (``requirements-export.txt``).
"""
from __future__ import annotations

import platform
import warnings
from pathlib import Path

import numpy as np

from utils.cli import UserError
from utils.data.preprocess import normalize_array
from utils.inference.export_common import ExportJob, Runner, converter_output_hidden
from utils.inference.export_config import EXPORT_REQUIREMENTS
from utils.inference.onnx_runtime import INPUT_NAME, OUTPUT_NAME


def require() -> None:
    """A one-line error naming the install command unless coremltools is installed."""
    try:
        _coremltools()
    except ImportError:
        raise UserError(f"--format coreml needs coremltools: pip install -r "
                        f"{EXPORT_REQUIREMENTS}") from None


def _coremltools():
    # On Linux it prints lines about its missing native runtime at import, and warns that
    # this torch is newer than the ones it was tested with: nothing a user can act on.
    with converter_output_hidden(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools
    return coremltools


def write(job: ExportJob, path: Path) -> list[str]:
    """Convert ``job``'s network into the package ``path``, check its spec, and check its
    predictions where Core ML runs."""
    import torch

    ct = _coremltools()
    h, w = job.spec.input_shape
    with converter_output_hidden(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(job.network(), (torch.zeros(1, 3, h, w),))
        mlmodel = ct.convert(program.run_decompositions({}), convert_to="mlprogram",
                             minimum_deployment_target=ct.target.iOS16,
                             compute_precision=ct.precision.FLOAT32)
    spec = mlmodel.get_spec()  # torch.export names the tensors itself: use the project's
    ct.utils.rename_feature(spec, spec.description.input[0].name, INPUT_NAME)
    ct.utils.rename_feature(spec, spec.description.output[0].name, OUTPUT_NAME)
    mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    for key, value in job.metadata().items():
        mlmodel.user_defined_metadata[key] = value
    mlmodel.short_description = f"{job.spec.backbone} image classifier"
    mlmodel.input_description[INPUT_NAME] = "float32 (1, 3, H, W): (RGB / 255 - mean) / std"
    mlmodel.output_description[OUTPUT_NAME] = "logits; softmax gives the probabilities"
    mlmodel.save(str(path))
    check_spec(ct.models.MLModel(str(path), skip_model_load=True).get_spec(), job)
    if platform.system() == "Darwin":
        parity = f"parity, Core ML vs PyTorch: {job.parity(_runner(ct, path, job.spec)).line()}"
    else:
        parity = ("parity check skipped: Core ML runs models on macOS only; converted and "
                  "spec-checked here (names, shapes, description)")
    return [parity, f"input '{INPUT_NAME}' float32 [1, 3, {h}, {w}] = (RGB / 255 - mean) / "
            f"std; output '{OUTPUT_NAME}' [1, {job.spec.num_classes}]; the model description "
            "in user_defined_metadata (model_spec)"]


def check_spec(spec, job: ExportJob) -> None:
    """What a Mac will load, as read back from disk: the input and output names and
    shapes, and the description; a :class:`UserError` when anything differs."""
    h, w = job.spec.input_shape
    (given,), (produced,) = spec.description.input, spec.description.output
    stored = dict(spec.description.metadata.userDefined)
    shape = list(given.type.multiArrayType.shape)
    problems = []
    if (given.name, shape) != (INPUT_NAME, [1, 3, h, w]):
        problems.append(f"input {given.name!r} of shape {shape}")
    if produced.name != OUTPUT_NAME:
        problems.append(f"output {produced.name!r}")
    if any(stored.get(key) != value for key, value in job.metadata().items()):
        problems.append("the model description")
    if problems:
        raise UserError("the saved Core ML model does not read back as written: "
                        + ", ".join(problems))


def _runner(ct, path: Path, spec) -> Runner:
    model = ct.models.MLModel(str(path))

    def run(batch: np.ndarray) -> np.ndarray:
        inputs = normalize_array(batch, spec.mean, spec.std)
        return np.stack([model.predict({INPUT_NAME: x[None]})[OUTPUT_NAME][0] for x in inputs])
    return run

