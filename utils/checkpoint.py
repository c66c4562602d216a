"""Self-describing checkpoints: safe loading, atomic writes, and rebuilding the model.

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)`` (no pickled code can run).  Besides the weights it
records everything needed to use the model without the training config: backbone, classes,
input shape, width multiplier, normalisation; and everything needed to resume: epoch,
optimizer / scheduler / scaler state, RNG state and the best metric so far.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

import nets
from utils.cli import UserError

FORMAT = "imgcls-checkpoint"
VERSION = 1

#: Keys every checkpoint carries so that inference needs nothing else.
DESCRIPTION_KEYS = ("backbone", "num_classes", "classes", "input_shape", "width_mult",
                    "in_channels", "mean", "std")


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
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise UserError(f"could not write checkpoint {path}: {exc.strerror or exc}") from exc
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


def check_complete(ckpt: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Return ``ckpt`` if it carries the weights and every description key."""
    missing = [k for k in (*DESCRIPTION_KEYS, "model") if k not in ckpt]
    if missing:
        raise UserError(f"{path}: checkpoint is missing {', '.join(missing)}")
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints; anything else is a :class:`UserError`."""
    ckpt = load_file(path)
    if not is_checkpoint(ckpt):
        raise UserError(f"{path}: not a checkpoint written by train.py "
                        "(a plain state_dict needs --backbone/--input-shape/--classes)")
    return check_complete(ckpt, path)


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) wrappers from keys."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def build_model(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> torch.nn.Module:
    """Rebuild the network a checkpoint describes and load its weights (strictly)."""
    model = nets.get_model(ckpt["backbone"], ckpt["num_classes"],
                           input_shape=tuple(ckpt["input_shape"]),
                           width_mult=ckpt["width_mult"], in_channels=ckpt["in_channels"])
    try:
        model.load_state_dict(strip_prefixes(ckpt["model"]))
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit {ckpt['backbone']} with "
                        f"{ckpt['num_classes']} classes") from exc
    return model
