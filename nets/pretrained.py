"""Transfer weights into a model: official ImageNet weights, our checkpoints, plain state_dicts.

Loading is by name *and* shape: every tensor of the source whose name and shape match the
model is copied, the rest keep their fresh initialisation.  That is what transfer learning
needs: a 1000-class ImageNet head does not fit a 10-class model and is skipped (and said
so), while the whole backbone loads.  A source that fills nothing in the backbone is an
error, since training would silently start from scratch.
"""
from __future__ import annotations

import math
import os
import pickle
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

# A module import, not ``from utils.checkpoint import ...``: utils.checkpoint imports nets,
# so this line can run while utils.checkpoint is still half-initialised.
from utils import checkpoint
from utils.cli import UserError, warn

#: Where downloaded weights are kept (relative to the project folder, the cwd).
MODEL_DIR = "model_data"

_URL_SCHEMES = ("http", "https", "file")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        source: the path or URL loaded from.
        loaded: model tensors now holding the source's values.
        skipped_head: head tensors left as initialised (expected when the classes differ).
        skipped_backbone: backbone tensors left as initialised (a partial match).
        adapted: tensors converted to fit, e.g. an RGB first conv summed for grey input.
        total: tensors in the model (BatchNorm's ``num_batches_tracked`` counters aside).
        head_classes: (source, model) class counts when the head was skipped for that reason.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)
    skipped_backbone: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    total: int = 0
    head_classes: tuple[int, int] | None = None

    @property
    def skipped(self) -> list[str]:
        """Every model tensor not loaded, head first."""
        return self.skipped_head + self.skipped_backbone

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)}/{self.total} tensors from {self.source}"]
        if self.skipped_head:
            head = f"skipped head {', '.join(self.skipped_head)}"
            if self.head_classes:
                head += f" ({self.head_classes[0]} -> {self.head_classes[1]} classes)"
            parts.append(head)
        if self.skipped_backbone:
            parts.append(f"skipped {len(self.skipped_backbone)} backbone tensors "
                         f"({_preview(self.skipped_backbone)})")
        if self.adapted:
            parts.append(f"adapted {', '.join(self.adapted)} to the input channels")
        return "; ".join(parts)


def load_pretrained(model: nn.Module, source: str | os.PathLike, *, name: str | None = None,
                    model_dir: str | os.PathLike = MODEL_DIR) -> LoadReport:
    """Copy matching weights from ``source`` into ``model``, print and return a report.

    Args:
        model: a network from :func:`nets.get_model` (it needs ``features``/``classifier``).
        source: a local file (a checkpoint written by train.py, a plain state_dict, or a
            torchvision ``.pth``) or an ``http(s)://`` / ``file://`` URL, which is downloaded
            once into ``model_dir`` via ``torch.hub``.
        name: the network's name for messages, and to refuse a checkpoint of another
            backbone; defaults to the name ``get_model`` gave the model.
        model_dir: download folder for URLs.

    Raises:
        UserError: the source cannot be read, is not a set of weights, was written for
            another backbone, or nothing in it fits the model's backbone.
    """
    source = str(source)
    name = name or getattr(model, "model_name", type(model).__name__)
    state = state_dict_from(_read(source, model_dir), source, name)

    model_state = model.state_dict()
    # BatchNorm's step counters are bookkeeping: loaded when present, never reported.
    counters = {k for k in model_state if k.endswith("num_batches_tracked")}
    target = {k: v for k, v in model_state.items() if k not in counters}
    backbone = _names_of(model, model.features)
    first_conv = _first_conv_weight(model)
    report = LoadReport(source, total=len(target))
    matched = {k: state[k] for k in counters if k in state}
    for key, tensor in target.items():
        value = state.get(key)
        if value is not None and key == first_conv and value.shape != tensor.shape:
            adapted = adapt_input_conv(value, tensor.shape[1])
            if adapted is not None and adapted.shape == tensor.shape:
                value = adapted
                report.adapted.append(key)
        if value is not None and value.shape == tensor.shape:
            matched[key] = value
            report.loaded.append(key)
        elif key in backbone:
            report.skipped_backbone.append(key)
        else:
            report.skipped_head.append(key)
    if not any(key in backbone for key in report.loaded):
        raise UserError(f"{source}: no backbone weights match {name}: "
                        "is it a checkpoint of another architecture?")
    model.load_state_dict(matched, strict=False)

    head_weight = _head_weight(model)
    if head_weight in report.skipped_head and head_weight in state:
        report.head_classes = (state[head_weight].shape[0], target[head_weight].shape[0])
    print(report, flush=True)
    if report.skipped_backbone:
        warn(f"{len(report.skipped_backbone)} backbone tensors of {name} did not match {source} "
             "and start from random values")
    return report


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor | None:
    """Fit an RGB first-conv weight (O, 3, k, k) to ``in_channels`` input channels.

    Grey input: sum over RGB, so a grey image gives the response the RGB filters gave to
    its colour version.  More channels: repeat the RGB filters and rescale so activations
    keep their size (what timm does).  ``None`` when the source is not RGB.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        return None
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (3 / in_channels)


def _read(source: str, model_dir: str | os.PathLike):
    """The object stored at a path or URL (URLs cached in ``model_dir``)."""
    if urlparse(source).scheme not in _URL_SCHEMES:
        return checkpoint.load_file(source)
    cached = Path(model_dir) / Path(urlparse(source).path).name
    try:
        return torch.hub.load_state_dict_from_url(source, model_dir=str(model_dir),
                                                  map_location="cpu", weights_only=True,
                                                  check_hash=False)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"could not download {source} ({reason}): put the file in "
                        f"{model_dir}/ by hand, or pass a local model_path") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise UserError(f"{cached}: not a readable weights file; delete it to download "
                        "it again") from exc


def state_dict_from(obj, source, name: str | None = None) -> dict[str, torch.Tensor]:
    """The weights inside a loaded file, wrapper prefixes stripped.

    Accepts our checkpoint's ``model`` (refused when it names a backbone other than
    ``name``), another script's ``state_dict`` key, or a plain state_dict.
    """
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        backbone = obj.get("backbone")
        if name is not None and backbone is not None and backbone != name:
            raise UserError(f"{source} is a {backbone} checkpoint; it does not fit {name}")
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    is_state_dict = isinstance(obj, dict) and obj and all(
        isinstance(v, torch.Tensor) for v in obj.values())
    if not is_state_dict:
        raise UserError(f"{source}: holds no model weights: not a checkpoint or state_dict "
                        "(expected a dict of tensors)")
    return checkpoint.strip_prefixes(obj)


def _names_of(model: nn.Module, part: nn.Module) -> set[str]:
    """The model's state_dict names of the tensors that belong to ``part``."""
    ids = {id(t) for t in part.state_dict(keep_vars=True).values()}
    return {k for k, t in model.state_dict(keep_vars=True).items() if id(t) in ids}


def _first_conv_weight(model: nn.Module) -> str | None:
    """Name of the first convolution's weight: the one tensor that sees the input channels."""
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{module_name}.weight"
    return None


def _head_weight(model: nn.Module) -> str | None:
    """Name of the final linear layer's weight (its rows are the classes)."""
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    names = _names_of(model, linears[-1])
    return next((n for n in names if n.endswith("weight")), None)


def _preview(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")
