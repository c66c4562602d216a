"""Running a checkpoint's network with PyTorch, and reading the checkpoint ``--model`` names.

:class:`TorchRuntime` computes logits exactly as training's validation did (the model's
:class:`~utils.model.execution.Execution`: device, precision, memory format, CPU passes), behind
the interface :class:`utils.inference.onnx_runtime.OnnxRuntime` shares.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from utils.cli import UserError
from utils.data.lists import read_classes
from utils.evaluation.typicality import Typicality, TypicalNetwork, from_state, scored
from utils.inference.classifier import ModelSource
from utils.layout import DEFAULT_CLASSES
from utils.model import checkpoint as ckpt_io
from utils.model.execution import Execution
from utils.model.spec import ModelSpec


class TorchRuntime:
    """A network in eval mode and how its passes run; with ``typicality`` (a checkpoint's
    statistics), it also computes the "unknown" score (:meth:`array_scores`)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, execution: Execution,
                 typicality: Typicality | None = None):
        self.execution = execution
        self.model = execution.for_inference(execution.prepare(model).eval())
        self.scoring = None if typicality is None else execution.prepare(
            TypicalNetwork(self.model, typicality)).eval()

    @property
    def typical(self) -> bool:
        """Whether :meth:`array_scores` can compute typicality."""
        return self.scoring is not None

    @property
    def export_module(self) -> torch.nn.Module:
        """What an ONNX export of this model holds: the network, with typicality as a
        second output when the checkpoint has the statistics."""
        return self.scoring if self.scoring is not None else self.model

    @property
    def device(self) -> str:
        return str(self.execution.device)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a uint8 (N, 3, H, W) batch, computed as the model was validated."""
        return self.execution.logits(self.model, batch)

    def array_logits(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`logits` of a numpy batch, as a numpy array."""
        return self.logits(torch.from_numpy(batch)).cpu().numpy()

    def array_scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and typicality of a numpy batch, in one pass (needs :attr:`typical`)."""
        logits, typicality = scored(self.scoring, torch.from_numpy(batch), self.execution)
        return logits.cpu().numpy(), typicality.cpu().numpy()


def read_model(source: ModelSource
               ) -> tuple[ModelSpec, dict[str, torch.Tensor], dict[str, Any]]:
    """The description, weights and origin (epoch, top-1 and, when the checkpoint has them,
    the ``typicality`` statistics) of the weights file ``source`` names.

    A checkpoint of ours needs nothing else; ``backbone``, ``input_shape`` and
    ``width_mult``, if given, must agree with it (naming the wrong network is an error,
    not a silent switch).  Plain weights (a state_dict, or another script's checkpoint
    holding one under ``model`` / ``state_dict``) need ``backbone`` and ``input_shape``
    (``width_mult`` defaults to 1.0); their class names are read from ``classes_file``
    (default: the project's).
    """
    path = source.path
    obj = ckpt_io.load_file(path)
    given = {"backbone": source.backbone, "input_shape": source.input_shape,
             "width_mult": source.width_mult}
    if ckpt_io.is_checkpoint(obj):
        spec = ckpt_io.check_checkpoint(obj, path)
        for key, value in given.items():
            if value is not None and _as_listed(value) != _as_listed(getattr(spec, key)):
                raise UserError(f"{path} is a checkpoint with {key} "
                                f"{_as_listed(getattr(spec, key))}, not "
                                f"{_as_listed(value)}: drop --{key.replace('_', '-')}, "
                                "checkpoints describe their own network")
        # Version 1 checkpoints recorded the test set's top-1, later ones validation's.
        scored_on = "validation" if obj.get("version", 1) >= 2 else "test"
        typicality = obj.get("typicality")
        return spec, obj["model"], {"epoch": obj.get("epoch"), "scored_on": scored_on,
                                    "top1": obj.get("val_top1", obj.get("top1")),
                                    "typicality": None if typicality is None
                                    else from_state(typicality, str(path))}
    if source.backbone is None or source.input_shape is None:
        raise UserError(f"{path}: not a checkpoint written by train.py; for plain "
                        "weights give --backbone, --input-shape H W and --classes FILE")
    spec = ModelSpec.create(source.backbone,
                            read_classes(source.classes_file or DEFAULT_CLASSES),
                            source.input_shape, **({} if source.width_mult is None
                                                   else {"width_mult": source.width_mult}))
    return spec, ckpt_io.state_dict_from(obj, path, source.backbone), {}


def _as_listed(value):
    """Description values compared the way a checkpoint stores them (tuples as lists)."""
    return list(value) if isinstance(value, (tuple, list)) else value
