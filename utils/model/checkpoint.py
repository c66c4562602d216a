"""Self-describing checkpoints: the file format, safe loading, atomic writes, weights files.

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)`` (no pickled code can run).  Its keys are:

* ``format``, ``version``: what wrote it (:data:`FORMAT`, :data:`VERSION`);
* the :class:`~utils.model.spec.ModelSpec` fields (backbone, classes, num_classes,
  input_shape, mean, std, crop_fraction, width_mult, in_channels): enough to use the model
  without the training config;
* ``model``: the weights;
* in checkpoints written by training: ``config`` (the run's settings), ``val_top1`` /
  ``val_topk`` (validation scores of this epoch) and the
  :class:`~utils.train.state.TrainState` (epoch, phase, best metric, optimizer / scheduler /
  scaler state) needed to resume.

Version history: 1, the first; 2 adds ``crop_fraction`` (version 1 files get the crop that
version applied); 3 names the validation scores ``val_top1`` / ``val_topk`` (before:
``top1`` / ``top5``, still read).
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

import nets
from utils.cli import UserError, user_errors, warn
from utils.model.spec import ModelSpec

FORMAT = "imgcls-checkpoint"
VERSION = 3


def make_checkpoint(spec: ModelSpec, weights: dict[str, torch.Tensor], **extra) -> dict[str, Any]:
    """The checkpoint dict of a model: its description, its weights and ``extra`` entries."""
    return {**spec.to_dict(), "model": strip_prefixes(weights), **extra}


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename.

    A process killed at any moment leaves either the previous file or the new one, never a
    torn one; a failed write (disk full, read-only folder) raises :class:`UserError` and
    leaves the previous file untouched.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **checkpoint}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"could not write checkpoint {path}: "
                        f"{reason.strip().splitlines()[-1][:200]}") from exc
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load`` a weights file safely (CPU, ``weights_only=True``), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only names the offending global when a pickle would build arbitrary objects
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise UserError(f"{path}: refused to load: it contains Python objects or code, "
                            "which are never unpickled (weights_only)") from exc
        raise UserError(f"{path}: not a PyTorch checkpoint or weights file") from exc
    except Exception as exc:  # zip/pickle/EOF errors all mean the same thing to a user
        raise UserError(f"{path}: not a PyTorch checkpoint or weights file") from exc


def is_checkpoint(obj: Any) -> bool:
    """True for a checkpoint written by :func:`save_checkpoint`."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def check_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> ModelSpec:
    """Check a loaded checkpoint's version, description and weights; return its spec."""
    version = ckpt.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: checkpoint has no valid format version")
    if version > VERSION:
        raise UserError(f"{path}: checkpoint format version {version} is newer than this "
                        f"code reads ({VERSION}): update the project")
    spec = ModelSpec.from_dict(ckpt, source=str(path))
    spec.check_buildable(str(path))
    weights = ckpt.get("model")
    if not (isinstance(weights, dict)
            and all(isinstance(v, torch.Tensor) for v in weights.values())):
        raise UserError(f"{path}: checkpoint is missing its weights (model)")
    return spec


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints, checked (:func:`check_checkpoint`); anything else is a
    :class:`UserError`."""
    ckpt = load_file(path)
    if not is_checkpoint(ckpt):
        raise UserError(f"{path}: not a checkpoint written by train.py "
                        "(a plain state_dict needs --backbone/--input-shape/--classes)")
    check_checkpoint(ckpt, path)
    return ckpt


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) wrappers from keys."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def state_dict_from(obj, source, backbone: str | None = None) -> dict[str, torch.Tensor]:
    """The weights inside a loaded file, wrapper prefixes stripped.

    Accepts our checkpoint's ``model`` (refused when it names a backbone other than
    ``backbone``), another script's ``state_dict`` key, or a plain state_dict.
    """
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        saved = obj.get("backbone")
        if backbone is not None and saved is not None and saved != backbone:
            raise UserError(f"{source} is a {saved} checkpoint; it does not fit {backbone}")
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    is_state_dict = isinstance(obj, dict) and obj and all(
        isinstance(v, torch.Tensor) for v in obj.values())
    if not is_state_dict:
        raise UserError(f"{source}: holds no model weights: not a checkpoint or state_dict "
                        "(expected a dict of tensors)")
    return strip_prefixes(obj)


def read_weights(path: str | os.PathLike, backbone: str | None = None) -> dict[str, torch.Tensor]:
    """The weights of any weights file: our checkpoint, another script's, a state_dict."""
    return state_dict_from(load_file(path), path, backbone)


def transfer_from_file(model: torch.nn.Module, path: str | os.PathLike,
                       backbone: str | None = None) -> nets.LoadReport:
    """Start ``model`` from the tensors of weights file ``path`` that fit it (by name and
    shape), print what was loaded and warn about backbone tensors left random."""
    with user_errors(ValueError):
        report = nets.transfer_weights(model, read_weights(path, backbone), str(path))
    print(report, flush=True)
    if report.warning:
        warn(report.warning)
    return report


def build_model(spec: ModelSpec, weights: dict[str, torch.Tensor],
                source: str | os.PathLike = "checkpoint") -> torch.nn.Module:
    """Rebuild the network ``spec`` describes and load ``weights`` into it (strictly)."""
    model = spec.build()
    try:
        model.load_state_dict(strip_prefixes(weights))
    except RuntimeError as exc:
        raise UserError(f"{source}: weights do not fit {spec.backbone} with "
                        f"{spec.num_classes} classes") from exc
    return model
