"""Mixed precision: the modes a command accepts, and the dtype each means on a device.

torch-free at import: ``predict.py`` lists the modes without loading torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

AMP_MODES = ("auto", "bf16", "fp16", "off")


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on GPUs that have it, else fp16; full precision on CPU."""
    import torch

    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]
