"""Checkpoints exported once for ONNX Runtime, kept in ``.cache/onnx/`` while they are unchanged.

``--runtime onnxruntime`` (and ``auto`` on a CPU, see
:func:`utils.inference.classifier.choose_runtime`) runs a ``.pth`` through ONNX Runtime: the
export (tens of seconds on a small CPU) is paid the first time and the file reused
afterwards. An entry is named after the checkpoint's path and keyed by its size,
modification and change times and the description it was exported with, so rewriting,
replacing or touching the checkpoint makes a new export, and the outdated one is deleted.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from utils.evaluation.typicality import Typicality, TypicalNetwork
from utils.inference.onnx_export import OPSET, export_checked, source_of
from utils.layout import CACHE_DIR
from utils.model import checkpoint as ckpt_io
from utils.model.spec import ModelSpec

CACHE_SUBDIR = "onnx"


def cache_file(checkpoint: str | os.PathLike, spec: ModelSpec,
               cache_dir: str | os.PathLike = CACHE_DIR) -> Path:
    """Where the export of ``checkpoint`` as it is now (described by ``spec``) is kept."""
    real = os.path.realpath(checkpoint)
    st = os.stat(real)
    key = json.dumps([real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                      spec.to_dict(), OPSET])
    return Path(cache_dir) / CACHE_SUBDIR / f"{_digest(real)}-{_digest(key)}.onnx"


def cached_export(checkpoint: str | os.PathLike, spec: ModelSpec,
                  weights: dict[str, torch.Tensor], info: dict[str, Any],
                  cache_dir: str | os.PathLike = CACHE_DIR,
                  typicality: Typicality | None = None) -> Path:
    """The ONNX export of ``checkpoint``: reused while it is unchanged, else written (and
    checked against PyTorch) now, replacing this checkpoint's outdated export.  With the
    checkpoint's ``typicality`` statistics the graph computes that score too."""
    target = cache_file(checkpoint, spec, cache_dir)
    if target.is_file():
        return target
    print(f"exporting {checkpoint} for ONNX Runtime (once: kept in {target.parent}/ while the "
          "checkpoint is unchanged)", file=sys.stderr, flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    model = ckpt_io.build_model(spec, weights, checkpoint).eval()
    if typicality is not None:
        model = TypicalNetwork(model, typicality)
    export_checked(spec, model, target, source_of(checkpoint, info))
    for outdated in target.parent.glob(f"{target.name.split('-')[0]}-*.onnx"):
        if outdated != target:
            outdated.unlink(missing_ok=True)
    return target


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
