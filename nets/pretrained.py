"""Transfer weights into a model: official ImageNet weights, or any state_dict.

Loading is by name *and* shape: every tensor of the source whose name and shape match the
model is copied, the rest keep their fresh initialisation.  That is what transfer learning
needs: a 1000-class ImageNet head does not fit a 10-class model and is skipped (and said
so), while the whole backbone loads.  A source that fills nothing in the backbone is an
error, since training would silently start from scratch.

Reading files is the caller's business (``utils.model.checkpoint.read_weights`` reads ours and
other scripts' checkpoints safely); this module only downloads the official weights.
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

#: Where downloaded weights are kept (relative to the project folder, the cwd).
MODEL_DIR = "model_data"


@dataclass
class LoadReport:
    """What :func:`transfer_weights` did.

    Attributes:
        source: the path or URL loaded from.
        model_name: the network loaded into.
        loaded: model tensors now holding the source's values.
        skipped_head: head tensors left as initialised (expected when the classes differ).
        skipped_backbone: backbone tensors left as initialised (a partial match).
        adapted: tensors converted to fit, e.g. an RGB first conv summed for grey input.
        total: tensors in the model (BatchNorm's ``num_batches_tracked`` counters aside).
        head_classes: (source, model) class counts when the head was skipped for that reason.
    """

    source: str
    model_name: str = "model"
    loaded: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)
    skipped_backbone: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    total: int = 0
    head_classes: tuple[int, int] | None = None

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

    @property
    def warning(self) -> str | None:
        """What a user must be told, beyond the report: backbone tensors left random."""
        if not self.skipped_backbone:
            return None
        return (f"{len(self.skipped_backbone)} backbone tensors of {self.model_name} did not "
                f"match {self.source} and start from random values")


def load_pretrained(model: nn.Module, url: str | None = None, *,
                    model_dir: str | os.PathLike = MODEL_DIR) -> LoadReport:
    """Download ``model``'s official ImageNet weights once into ``model_dir`` and transfer them.

    ``url`` replaces the official address (a mirror, or a ``file://`` URL).  Raises
    ``ValueError`` when the network has no official weights or they do not fit it, and
    ``OSError`` when they cannot be downloaded or cached.
    """
    name = getattr(model, "model_name", type(model).__name__)
    url = url or model.pretrained_cfg.url
    if url is None:
        raise ValueError(f"{name} has no official ImageNet weights: train it from scratch "
                         "or start from a checkpoint of yours (model_path)")
    return transfer_weights(model, download_weights(url, model_dir), url)


def download_weights(url: str, model_dir: str | os.PathLike = MODEL_DIR) -> dict[str, torch.Tensor]:
    """The state_dict at ``url``, fetched through ``torch.hub`` once and cached in ``model_dir``."""
    cached = Path(model_dir) / Path(urlparse(url).path).name
    try:
        return torch.hub.load_state_dict_from_url(url, model_dir=str(model_dir),
                                                  map_location="cpu", weights_only=True,
                                                  check_hash=False)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OSError(f"could not download {url} ({reason}): put the file in "
                      f"{model_dir}/ by hand, or pass a local model_path") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:  # damaged
        raise ValueError(f"{cached}: not a readable weights file; delete it to download "
                         "it again") from exc


def transfer_weights(model: nn.Module, state: dict[str, torch.Tensor],
                     source: str = "state_dict") -> LoadReport:
    """Copy the tensors of ``state`` whose name and shape fit ``model``; return a report.

    Args:
        model: a network from :func:`nets.get_model` (it needs ``features``/``classifier``).
        state: the source weights, wrapper prefixes (``module.``) already removed.
        source: the path or URL they came from, for the report.

    Raises:
        ValueError: nothing in ``state`` fits the model's backbone.
    """
    model_state = model.state_dict()
    # BatchNorm's step counters are bookkeeping: loaded when present, never reported.
    counters = {k for k in model_state if k.endswith("num_batches_tracked")}
    target = {k: v for k, v in model_state.items() if k not in counters}
    backbone = _names_of(model, model.features)
    first_conv = _first_conv_weight(model)
    name = getattr(model, "model_name", type(model).__name__)
    report = LoadReport(str(source), name, total=len(target))
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
        raise ValueError(f"{source}: no backbone weights match {name}: "
                         "is it a checkpoint of another architecture?")
    model.load_state_dict(matched, strict=False)

    head_weight = _head_weight(model)
    if head_weight in report.skipped_head and head_weight in state:
        report.head_classes = (state[head_weight].shape[0], target[head_weight].shape[0])
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
