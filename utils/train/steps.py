"""One optimisation step, the phases a run is made of, and how fast a step runs.

A run is one or two phases: an optional *freeze* phase that trains only the head on top of
a frozen (pretrained) backbone, then the *unfreeze* phase that trains everything.  Each
phase has its own batch size, so its own optimizer and learning-rate schedule.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.data.augment import BatchAugment
from utils.distributed import Dist
from utils.model.execution import Execution
from utils.model.spec import ModelSpec

#: Epochs of at most this many steps end by re-measuring the BatchNorm statistics: their
#: running averages (momentum 0.1, about the last ten steps) trail weights that change
#: that fast, and a validation read through them scores a learnt model as chance.
SHORT_EPOCH_STEPS = 50
#: Images the re-measurement looks at (enough for a mean and variance per channel).
RECALIBRATION_IMAGES = 512


@dataclass(frozen=True)
class Phase:
    """A span of epochs ``[start, end)`` trained with one batch size."""

    name: str
    start: int
    end: int
    batch_size: int


def plan_phases(cfg) -> list[Phase]:
    """The freeze phase (if any) then the unfreeze phase, covering ``cfg.epochs``."""
    freeze = min(cfg.freeze_epochs, cfg.epochs)
    phases = [Phase("freeze", 0, freeze, cfg.freeze_batch_size)] if freeze else []
    if cfg.epochs > freeze:
        phases.append(Phase("unfreeze", freeze, cfg.epochs, cfg.batch_size))
    return phases


def train_step(model, images, labels, augment, optimizer, scaler, execution: Execution,
               label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None):
    """One optimisation step on a batch of base-form uint8 images already on the device.

    Returns the (float32) loss and logits, still on the device: reading them is the
    caller's choice, so steps need not wait for each other.
    """
    x = execution.inputs(augment(images))
    with execution.autocast():
        logits = model(x)
    loss = F.cross_entropy(logits.float(), labels, weight=class_weights,
                           label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


def measure_speed(model: torch.nn.Module, spec: ModelSpec, execution: Execution,
                  batch_size: int, augment: BatchAugment) -> tuple[float, float]:
    """Seconds per image of a training step and of an evaluation pass, timed on a copy of
    ``model`` with random images (the weights and statistics of ``model`` are untouched)."""
    import copy

    model = copy.deepcopy(model)
    images = torch.randint(0, 256, (batch_size, 3, *spec.geometry.base), dtype=torch.uint8,
                           device=execution.device)
    labels = torch.randint(0, spec.num_classes, (batch_size,), device=execution.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler(execution.device.type, enabled=False)

    def timed(step, calls: int) -> float:
        for _ in range(2):  # warm-up: allocations, kernel selection
            step()
        if execution.device.type == "cuda":
            torch.cuda.synchronize(execution.device)
        start = time.perf_counter()
        for _ in range(calls):
            step()
        if execution.device.type == "cuda":
            torch.cuda.synchronize(execution.device)
        return (time.perf_counter() - start) / (calls * batch_size)

    model.train()
    train = timed(lambda: train_step(model, images, labels, augment, optimizer, scaler,
                                     execution), 4)
    model.eval()
    with torch.inference_mode():
        evaluation = timed(lambda: execution.logits(model, images[:, :, :spec.input_shape[0],
                                                                :spec.input_shape[1]]), 3)
    return train, evaluation


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches, augment: BatchAugment,
                          execution: Execution, dist: Dist) -> None:
    """Replace the running BatchNorm statistics by their average over training batches.

    Only the layers that train are touched (a frozen backbone keeps its statistics); the
    batches are this epoch's, augmented as in training, so a resumed run replays this
    too.  Under DDP the processes average their statistics, as their weights agree.
    """
    model.train()
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches seen
    seen = 0
    for images, *_ in batches:
        images = images.to(execution.device, non_blocking=True)
        with execution.autocast():
            model(execution.inputs(augment(images)))
        seen += len(images)
        if seen >= RECALIBRATION_IMAGES:
            break
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
        if dist.enabled:
            for buffer in (m.running_mean, m.running_var):
                dist.all_reduce(buffer).div_(dist.world_size)
