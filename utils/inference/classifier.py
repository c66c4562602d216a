"""A trained model ready to classify images: its description plus a runtime computing logits.

>>> clf = Classifier.load("logs/run/best.pth")            # or an exported model.onnx
>>> probs = clf.predict([load_image("cat.jpg")])         # (1, num_classes), rows sum to 1
>>> clf.topk(probs, 3)[0]                                # [("cat", 0.93), ("dog", 0.05), ...]

Every probability shown anywhere is ``softmax(logits / T)`` with the model's fitted
temperature T (:attr:`Classifier.temperature`: 1 for a model trained before calibration,
said once); the arg-max, hence every top-1, is the same at any T.  A model whose
description has a rejection threshold also answers "unknown" (:meth:`Classifier.scores`,
:meth:`Classifier.unknown`): see :mod:`utils.evaluation.typicality`.

Images go through exactly the evaluation preprocessing of training
(:func:`utils.data.preprocess.eval_array` with the model's geometry, then the model's
normalisation), so a prediction sees the pixels the validation score was measured on.
Everything comes from the model's description (a checkpoint's
:class:`~utils.model.spec.ModelSpec`, or the copy an exported ``.onnx`` carries); nothing
has to be edited to match the training run.

Two runtimes compute the logits behind one interface (``logits`` for tensor batches,
``array_logits`` for numpy ones): PyTorch (:class:`utils.inference.torch_runtime.TorchRuntime`, the
checkpoint's network run as validation ran it) and ONNX Runtime
(:class:`utils.inference.onnx_runtime.OnnxRuntime`: an ``.onnx`` file, or a checkpoint's cached
export).  An ``.onnx`` file is loaded without importing torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
from PIL import Image

from utils.cli import UserError, warn
from utils.data.lists import read_classes
from utils.data.preprocess import eval_array
from utils.evaluation.calibration import softmax
from utils.evaluation.ood import rejects, score
from utils.inference.onnx_runtime import is_onnx_path, load_onnx
from utils.layout import CACHE_DIR

if TYPE_CHECKING:
    import torch

RUNTIMES = ("auto", "torch", "onnxruntime")
#: Test-time augmentation: ``flip`` averages the logits of each image and its mirror image.
TTA_MODES = ("none", "flip")
#: ``--runtime auto`` weighs a checkpoint's export for ONNX Runtime against what it saves,
#: as measured on the 2-core development CPU (MobileNetV2, BatchNorm folded in both): the
#: export takes about 10 s; ONNX Runtime then saves about 1.5 ms an image at 224x224 and
#: nothing measurable at 32x32, which a saving in proportion to the pixels follows.
EXPORT_SECONDS = 10.0
EXPORT_SAVES_MS_AT_224 = 1.5
#: Models already said to have no fitted temperature (said once per model and process).
_UNCALIBRATED_SAID: set[str] = set()


@dataclass(frozen=True)
class ModelSource:
    """The file ``--model`` names, and what plain weights (or an ``.onnx`` model exported
    elsewhere) need besides: a checkpoint of ours describes itself.

    Attributes:
        path: a checkpoint, plain weights, or an ``.onnx`` model.
        backbone, input_shape, width_mult: the network plain weights belong to (for a
            checkpoint, given values must agree with it).
        classes_file: the class names of plain weights or a foreign ``.onnx`` (default: the
            project's); for our models, the names their classes are matched to.
    """

    path: str
    backbone: str | None = None
    input_shape: tuple[int, int] | None = None
    width_mult: float | None = None
    classes_file: str | None = None


@dataclass(frozen=True)
class RunOptions:
    """How a loaded model runs.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (ONNX Runtime: the CPU).
        runtime: one of :data:`RUNTIMES` (see :func:`choose_runtime`).
        amp, channels_last: precision and memory format of PyTorch passes, as in training.
        tta: test-time augmentation, one of :data:`TTA_MODES`.
        images: how many images the caller will classify, if known (``auto`` weighs an
            export for ONNX Runtime against what it saves).
        cache_dir: where a checkpoint's export for ONNX Runtime is kept.
    """

    device: str = "cpu"
    runtime: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    tta: str = "none"
    images: int | None = None
    cache_dir: str = CACHE_DIR


class Runtime(Protocol):
    """What computes a model's logits (:mod:`utils.inference.torch_runtime`,
    :mod:`utils.inference.onnx_runtime`)."""

    name: str
    device: str

    def logits(self, batch: "torch.Tensor") -> "torch.Tensor":
        """Float32 logits of a uint8 (N, 3, H, W) tensor batch, on the runtime's device."""

    def array_logits(self, batch: np.ndarray) -> np.ndarray:
        """Float32 logits of a uint8 (N, 3, H, W) numpy batch."""


class Classifier:
    """A model's description and the runtime that computes its logits.

    Attributes:
        spec: what the model is (classes, input shape, normalisation, backbone, ...).
        runtime: computes logits (``runtime.name``: ``torch`` or ``onnxruntime``).
        info: where it came from (path, epoch, top-1 ...), for printing.
        tta: test-time augmentation applied by :meth:`logits` and :meth:`probabilities`
            (one of :data:`TTA_MODES`; ``--tta`` sets it).
    """

    def __init__(self, spec, runtime: Runtime, info: dict[str, Any] | None = None):
        self.spec, self.runtime = spec, runtime
        self.info = dict(info or {})
        self.tta = "none"

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.spec.input_shape

    @property
    def device(self) -> str:
        return self.runtime.device

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, source: "ModelSource | str | os.PathLike",
             options: "RunOptions | None" = None) -> "Classifier":
        """Load any kind of file ``--model`` may name (``source``), run as ``options`` say.

        * ``.onnx``: run by ONNX Runtime on the CPU, torch never imported.  Our exports
          describe themselves; another model needs ``source.classes_file`` (and
          ``source.input_shape`` unless its graph fixes it).
        * a checkpoint of ours: ``source.backbone``, ``input_shape`` and ``width_mult``, if
          given, must agree with it.  Plain weights need ``backbone`` and ``input_shape``
          (``width_mult`` defaults to 1.0) and take their class names from
          ``classes_file`` (default: the project's).  Run by PyTorch on ``options.device``,
          or by ONNX Runtime through a cached export (:func:`choose_runtime`).
        """
        if not isinstance(source, ModelSource):
            source = ModelSource(os.fspath(source))
        options = options or RunOptions()
        if options.runtime not in RUNTIMES:
            raise UserError(f"unknown runtime {options.runtime!r} (choose from "
                            f"{', '.join(RUNTIMES)})")
        load = cls._load_onnx if is_onnx_path(source.path) else cls._load_checkpoint
        classifier = load(source, options)
        classifier.tta = options.tta
        if classifier.spec.temperature is None and source.path not in _UNCALIBRATED_SAID:
            _UNCALIBRATED_SAID.add(source.path)
            warn(f"{source.path} has no fitted temperature (only a run's best.pth is "
                 "calibrated, at the end of training): its probabilities are the plain softmax "
                 "(temperature 1)")
        return classifier

    @classmethod
    def _load_onnx(cls, source: ModelSource, options: RunOptions) -> "Classifier":
        path = source.path
        if options.runtime == "torch":
            raise UserError(f"{path} is an ONNX model: it runs with --runtime onnxruntime "
                            "(or auto), not torch")
        if options.device not in ("auto", "cpu"):
            raise UserError(f"{path} is an ONNX model: ONNX Runtime runs it on the CPU, "
                            f"not --device {options.device}")
        if source.backbone is not None or source.width_mult is not None:
            raise UserError(f"{path} is an ONNX model: --backbone and --width-mult describe "
                            "plain weights only")
        classes = read_classes(source.classes_file) if source.classes_file else None
        return cls(*load_onnx(path, classes=classes, input_shape=source.input_shape))

    @classmethod
    def _load_checkpoint(cls, source: ModelSource, options: RunOptions) -> "Classifier":
        from utils.distributed import resolve_device
        from utils.inference import torch_runtime  # torch: checkpoints only
        from utils.inference.onnx_cache import cache_file, cached_export
        from utils.model.checkpoint import build_model
        from utils.model.execution import Execution
        from utils.model.precision import amp_dtype

        path = source.path
        spec, weights, info = torch_runtime.read_model(source)
        typicality = info.pop("typicality", None)
        info = {"path": str(path), **info}
        # Asking for ONNX Runtime is asking for the CPU it runs on, even beside a GPU.
        device = resolve_device("cpu" if options.runtime == "onnxruntime"
                                and options.device == "auto" else options.device)
        full_precision = amp_dtype(options.amp, device) is None
        chosen = choose_runtime(options.runtime, device.type, full_precision, options.images,
                                spec.input_shape,
                                lambda: cache_file(path, spec, options.cache_dir).is_file())
        if chosen == "onnxruntime":
            if device.type != "cpu" or not full_precision:
                raise UserError(f"--runtime onnxruntime runs on the CPU in full precision; "
                                f"for --device {device} or --amp {options.amp} use "
                                "--runtime torch")
            try:
                _, onnx_runtime, _ = load_onnx(cached_export(path, spec, weights, info,
                                                             options.cache_dir, typicality))
                return cls(spec, onnx_runtime, info)
            except Exception as exc:  # noqa: BLE001 - whatever stops the export
                reason = (f"{type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                if options.runtime != "auto":
                    raise UserError(f"cannot run {path} with ONNX Runtime ({reason}); "
                                    "--runtime torch runs it") from exc
                warn(f"running {path} with torch: no ONNX export ({reason})")
        model = build_model(spec, weights, path)
        execution = Execution.create(spec, device, options.amp, options.channels_last)
        return cls(spec, torch_runtime.TorchRuntime(model, execution, typicality), info)

    def describe(self) -> str:
        """One line saying what model this is, e.g. for the top of a report."""
        h, w = self.input_shape
        text = (f"{self.info.get('path', 'model')} ({self.spec.backbone}, "
                f"{self.spec.num_classes} classes, {h}x{w}")
        if self.info.get("epoch") is not None:
            text += f", epoch {self.info['epoch']}"
        return text + ")"

    def label_map(self, classes: Sequence[str], source: str | os.PathLike) -> list[int]:
        """The model's class id for each class id of a dataset whose class list (read from
        ``source``) is ``classes``: the same names in another order are matched by name;
        other names are an error naming them, never labels silently off by one class.
        """
        classes = list(classes)
        if classes == self.classes:
            return list(range(len(classes)))
        unknown = [c for c in classes if c not in self.classes]
        unseen = [c for c in self.classes if c not in classes]
        if unknown or unseen:
            parts = [f"{source} lists {_names(unknown)} that the model does not know"] \
                if unknown else []
            parts += [f"the model has {_names(unseen)} that {source} does not list"] \
                if unseen else []
            raise UserError(f"class names differ: {'; '.join(parts)} (is this the model for "
                            "these annotations?)")
        return [self.classes.index(name) for name in classes]

    # ------------------------------------------------------------------ inference
    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB PIL images -> (N, 3, H, W) uint8 batch, the evaluation preprocessing."""
        return np.stack([eval_array(image, self.spec.geometry) for image in images])

    def logits(self, batch: "torch.Tensor") -> "torch.Tensor":
        """Float32 logits of a uint8 tensor batch, on :attr:`device` (for ``evaluate``)."""
        logits = self.runtime.logits(batch)
        if self.tta == "flip":
            logits = (logits + self.runtime.logits(batch.flip(-1))) / 2
        return logits

    def array_logits(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`logits` of a numpy batch."""
        logits = self.runtime.array_logits(batch)
        if self.tta == "flip":
            mirrored = np.ascontiguousarray(batch[..., ::-1])
            logits = (logits + self.runtime.array_logits(mirrored)) / 2
        return logits

    @property
    def temperature(self) -> float:
        """The logits are divided by it before the softmax (1: never calibrated)."""
        return self.spec.temperature or 1.0

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (N, num_classes) of a uint8 (N, 3, H, W) batch."""
        return softmax(self.array_logits(batch), self.temperature).astype(np.float32)

    def check_rejection(self) -> None:
        """A :class:`UserError` unless this model can answer "unknown" (``--reject auto``):
        a threshold in its description, and the score it applies to."""
        where = self.info.get("path", "the model")
        rejection = self.spec.rejection
        if rejection is None:
            raise UserError(f"{where} has no rejection threshold (trained before the "
                            "'unknown' answer, or without a validation set): train it again "
                            "with a validation set, or leave --reject off")
        if rejection.score == "typicality" and not getattr(self.runtime, "typical", False):
            raise UserError(f"{where} has no typicality output (an int8 or older export): "
                            "--reject auto needs the float model exported from a checkpoint "
                            "that has one, or the checkpoint (.pth) itself")

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and the model's rejection score (higher = more like the
        training images) of a uint8 batch; needs :meth:`check_rejection` to pass."""
        rejection = self.spec.rejection
        if rejection.score != "typicality":
            logits = self.array_logits(batch)
            return (softmax(logits, self.temperature).astype(np.float32),
                    score(logits, rejection.score, self.temperature))
        logits, typicality = self.runtime.array_scores(batch)
        if self.tta == "flip":
            mirrored = self.runtime.array_scores(np.ascontiguousarray(batch[..., ::-1]))
            logits, typicality = (logits + mirrored[0]) / 2, (typicality + mirrored[1]) / 2
        return softmax(logits, self.temperature).astype(np.float32), typicality

    def unknown(self, scores: np.ndarray) -> np.ndarray:
        """True where the answer is "unknown" (the score below the model's threshold)."""
        return rejects(self.spec.rejection, scores)

    def predict(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, num_classes), float32, computed ``batch_size`` at a time."""
        out = [self.probabilities(self.preprocess(images[i:i + batch_size]))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.empty((0, len(self.classes)), np.float32)

    def grad_cam(self, batch: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Grad-CAM maps (N, H, W) in [0, 1] of ``classes`` (one id per image) for a uint8
        (N, 3, H, W) batch; needs the PyTorch runtime (the network's feature map)."""
        if self.runtime.name != "torch":
            raise UserError("class-activation maps need the PyTorch network: give a "
                            "checkpoint (.pth) with --runtime torch or auto")
        import torch

        from utils.evaluation.cam import grad_cam

        execution = self.runtime.execution
        x = execution.inputs(torch.from_numpy(batch))
        maps, _ = grad_cam(self.runtime.model, x, torch.from_numpy(classes).to(x.device))
        return maps.cpu().numpy()

    def topk(self, probabilities: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per row, the ``k`` most probable ``(class name, probability)`` pairs, best first."""
        k = min(k, len(self.classes))
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.classes[i], float(row[i])) for i in order]
                for row, order in zip(probabilities, best)]


def choose_runtime(requested: str, device_type: str, full_precision: bool,
                   images: int | None, input_shape: tuple[int, int], export_cached) -> str:
    """The runtime ``--runtime requested`` means for a checkpoint.

    ``auto``: ONNX Runtime on a CPU in full precision (as fast as PyTorch at 32x32, 1.4x
    at 224x224) when the export pays for itself: it is cached already (``export_cached()``),
    or the ``images`` to classify at ``input_shape`` save more time than the export takes
    (:data:`EXPORT_SECONDS`).  PyTorch otherwise, and always on a GPU.
    """
    if requested != "auto":
        return requested
    if device_type != "cpu" or not full_precision:
        return "torch"
    h, w = input_shape
    saved = (images or 0) * EXPORT_SAVES_MS_AT_224 / 1000 * (h * w) / (224 * 224)
    return "onnxruntime" if saved >= EXPORT_SECONDS or export_cached() else "torch"


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
