"""The batched evaluation loop shared by training (every epoch) and ``eval.py``."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.metrics import ConfusionMatrix, topk_correct
from utils.preprocess import normalize


@dataclass
class EvalResult:
    """Sums over the evaluated images; ``matrix`` is the confusion matrix (true x predicted)."""

    loss_sum: float
    top1_correct: int
    top5_correct: int
    count: int
    matrix: torch.Tensor

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def top1(self) -> float:
        return self.top1_correct / max(self.count, 1)

    @property
    def top5(self) -> float:
        return self.top5_correct / max(self.count, 1)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on GPUs that have it, else fp16; full precision on CPU."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for ``dtype`` (``None`` = full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


#: A CPU runs a big batch slower per image than small passes: every layer's output is a
#: fresh allocation too large to recycle, so the memory is handed back to the system and
#: page-faulted in again (2 cores, MobileNetV2: eval.py at 32x32 ran 152 img/s in passes
#: of 1024 images, 225 in passes of 32; at 224x224 a pass of 32 ran 41 img/s, of 4, 77).
#: CPU passes are cut to this size.
CPU_PASS_PIXELS = 2**18
CPU_PASS_IMAGES = 32


def forward(model: torch.nn.Module, x: torch.Tensor, device: torch.device,
            amp_dtype: torch.dtype | None = None,
            memory_format: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """Float32 logits of the normalised batch ``x``, in small passes on a CPU.

    Splitting changes nothing but speed: in eval mode every image is computed on its own.
    """
    x = x.contiguous(memory_format=memory_format)
    passes = [x]
    if device.type == "cpu":
        per_pass = CPU_PASS_PIXELS // (x.shape[-2] * x.shape[-1])
        passes = x.split(max(1, min(CPU_PASS_IMAGES, per_pass)))
    with autocast(device, amp_dtype):
        return torch.cat([model(part) for part in passes]).float()


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches, *, num_classes: int, mean, std,
             device: torch.device, amp_dtype: torch.dtype | None = None,
             channels_last: bool = False, reduce=None, progress=None) -> EvalResult:
    """Loss, top-1/top-5 and confusion matrix of ``model`` over ``batches`` of uint8 images.

    Everything is accumulated on the device and read once at the end.  ``reduce`` (e.g. an
    all-reduce under DDP) is applied to the summed tensors before they are read, so every
    rank reports the metrics of the whole evaluation set.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top1, top5
    count = 0  # on the host: no device sync per batch
    matrix = ConfusionMatrix(num_classes, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, labels in (progress(batches) if progress else batches):
        if not len(labels):
            continue
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = forward(model, normalize(images, mean, std), device, amp_dtype, memory_format)
        count += len(labels)
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                             topk_correct(logits, labels, 1).double(),
                             topk_correct(logits, labels, 5).double()])
        matrix.update(logits.argmax(1), labels)
    sums = torch.cat([sums, sums.new_tensor([count])])
    if reduce is not None:
        reduce(sums)
        reduce(matrix.matrix)
    model.train(was_training)
    loss, top1, top5, count = sums.tolist()
    return EvalResult(loss, round(top1), round(top5), round(count), matrix.matrix.cpu())
