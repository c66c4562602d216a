"""The training loop behind ``train.py``: phases, optimisation, evaluation, checkpoints.

A run is one or two phases: an optional *freeze* phase that trains only the head on top of
a frozen (pretrained) backbone, then the *unfreeze* phase that trains everything.  Each
phase has its own batch size, so its own optimizer and learning-rate schedule (warm-up then
cosine or step, stepped every iteration).  Every epoch ends with an evaluation on the test
annotation (the same code ``eval.py`` runs), a row in ``metrics.csv`` and checkpoints.

Everything random is re-seeded from ``(seed, epoch)`` at the start of each epoch, so a run
resumed from ``last.pth`` replays exactly the epochs it would have run.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import nets
from nets.pretrained import load_pretrained
from utils import distributed, preprocess
from utils.annotation import read_annotation, read_classes
from utils.augment import BatchAugment
from utils.checkpoint import save_checkpoint, strip_prefixes
from utils.cli import UserError, warn
from utils.config import to_dict
from utils.data import make_batches
from utils.evaluate import amp_dtype, autocast, evaluate
from utils.run_log import RunLog

MIN_SENSIBLE_STEPS = 200  # below this an SGD/Adam schedule barely gets going
LOG_EVERY = 25  # steps between host syncs for the progress bar


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


def make_optimizer(model: torch.nn.Module, cfg, lr: float, device: torch.device):
    """SGD (Nesterov) / Adam / AdamW; no weight decay on BatchNorm weights and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = True if device.type == "cuda" else None  # one kernel for the whole update
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True, fused=fused)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, fused=fused)


def make_scheduler(optimizer, cfg, epochs: int, steps_per_epoch: int):
    """Linear warm-up, then cosine decay to 0 or step decay; stepped every iteration."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    if cfg.schedule == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup)
    else:
        main = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(1, cfg.step_epochs * steps_per_epoch), gamma=cfg.step_gamma)
    if warmup <= 0:
        return main
    start = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup,
                                              total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [start, main], milestones=[warmup])


def scaled_lr(cfg, batch_size: int, world_size: int) -> float:
    """The linear scaling rule: ``cfg.lr`` is the rate for a global batch of 256."""
    return cfg.lr * batch_size * world_size / 256


def train_step(model, images, labels, augment, optimizer, scaler, *, label_smoothing: float,
               mean, std, amp_dtype, memory_format):
    """One optimisation step on a batch of base-form uint8 images already on the device.

    Returns the (float32) loss and logits, still on the device: reading them is the
    caller's choice, so steps need not wait for each other.
    """
    x = preprocess.normalize(augment(images), mean, std).contiguous(memory_format=memory_format)
    with autocast(images.device, amp_dtype):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


class Trainer:
    """Owns the model, data and state of one run; :meth:`fit` trains it to the end."""

    def __init__(self, cfg, run_dir: Path, resume: dict[str, Any] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist, self.device = distributed.setup(cfg.device)
        self.classes = read_classes(cfg.classes_path)
        self.input_shape = tuple(cfg.input_shape)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.resume = resume
        if resume is not None:
            self._check_resume(resume)

        torch.manual_seed(cfg.seed)
        # A resumed run has its own weights: no need to fetch the ImageNet ones again.
        self.model = nets.get_model(cfg.backbone, len(self.classes),
                                    pretrained=cfg.pretrained and resume is None,
                                    input_shape=self.input_shape, width_mult=cfg.width_mult)
        # The normalisation the backbone's ImageNet weights expect; recorded in checkpoints.
        self.mean, self.std = self.model.pretrained_cfg.mean, self.model.pretrained_cfg.std
        if cfg.model_path and resume is None:
            load_pretrained(self.model, cfg.model_path)
        if resume is not None:
            self.model.load_state_dict(strip_prefixes(resume["model"]))
        if cfg.sync_bn and self.dist.enabled:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device, memory_format=self.memory_format)

        self.phases = plan_phases(cfg)
        # Fail before anything is written: the annotation must exist and hold whole batches.
        train_count = len(read_annotation(cfg.train_annotation, len(self.classes)))
        for phase in self.phases:
            if train_count < phase.batch_size * self.dist.world_size:
                raise UserError(f"the {phase.name} batch size {phase.batch_size} is larger than "
                                f"the {train_count} images in {cfg.train_annotation}: lower it")
        self.val_batches = self._batches(cfg.test_annotation, cfg.eval_batch_size, train=False)
        self.best_top1 = resume["best_top1"] if resume else -1.0
        self.best_epoch = resume.get("best_epoch", 0) if resume else 0
        self.start_epoch = resume["epoch"] if resume else 0
        self.log: RunLog | None = None

    def _check_resume(self, ckpt: dict) -> None:
        if ckpt["classes"] != self.classes:
            raise UserError(f"cannot resume: the checkpoint's {len(ckpt['classes'])} classes differ "
                            f"from {self.cfg.classes_path} ({len(self.classes)} classes)")
        for key in ("optimizer", "scheduler", "epoch", "best_top1"):
            if key not in ckpt:
                raise UserError(f"cannot resume: the checkpoint has no {key} (is it a last.pth?)")

    def _batches(self, annotation, batch_size: int, train: bool):
        cfg = self.cfg
        return make_batches(annotation, len(self.classes), self.input_shape, batch_size,
                            train=train, device=self.device, workers=cfg.workers, seed=cfg.seed,
                            rank=self.dist.rank, world_size=self.dist.world_size,
                            cache=cfg.cache, cache_dir=cfg.cache_dir,
                            builder=self.dist.local_rank == 0, barrier=self.dist.barrier)

    # ---------------------------------------------------------------- phases
    def _start_phase(self, phase: Phase):
        """Freeze or unfreeze, then build this phase's data, optimizer and schedule."""
        cfg = self.cfg
        if phase.name == "freeze":
            self.model.freeze_backbone()
        else:
            self.model.unfreeze_backbone()
        train_batches = self._batches(cfg.train_annotation, phase.batch_size, train=True)
        steps = len(train_batches)
        lr = scaled_lr(cfg, phase.batch_size, self.dist.world_size)
        optimizer = make_optimizer(self.model, cfg, lr, self.device)
        scheduler = make_scheduler(optimizer, cfg, phase.end - phase.start, steps)
        scaler = torch.amp.GradScaler(self.device.type,
                                      enabled=self.amp_dtype == torch.float16)
        if self.resume is not None and self.resume.get("phase") == phase.name \
                and self.resume["epoch"] < phase.end:
            optimizer.load_state_dict(self.resume["optimizer"])
            scheduler.load_state_dict(self.resume["scheduler"])
            if "scaler" in self.resume:
                scaler.load_state_dict(self.resume["scaler"])
        model = self.model
        if self.dist.enabled:  # re-wrapped per phase: DDP only syncs what was trainable at wrap
            model = DistributedDataParallel(model, device_ids=[self.device] if
                                            self.device.type == "cuda" else None)
        if cfg.compile:
            model = torch.compile(model)
        total_steps = steps * (phase.end - phase.start)
        if self.dist.is_main and total_steps < MIN_SENSIBLE_STEPS:
            warn(f"the {phase.name} phase takes only {total_steps} optimizer steps "
                 f"({steps} per epoch): far too few for {cfg.optimizer} to converge; "
                 "raise --epochs or lower --batch-size")
        return model, train_batches, optimizer, scheduler, scaler

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict:
        """Train every remaining epoch; returns the last epoch's record."""
        cfg, record = self.cfg, {}
        augment = BatchAugment(self.input_shape, preprocess.is_small(self.input_shape),
                               cfg.augment, cfg.cutout)
        started = time.perf_counter()
        current = None
        if self.dist.is_main:  # folders are made only once the run is known to start
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.tmp"):  # writes torn by a killed run
                stale.unlink()
            (self.run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
            self.log = RunLog(self.run_dir, self.start_epoch)
            print(f"run folder: {self.run_dir}")
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                phase = next(p for p in self.phases if p.start <= epoch < p.end)
                if phase != current:
                    model, batches, optimizer, scheduler, scaler = self._start_phase(phase)
                    current = phase
                seed = cfg.seed * 1_000_003 + epoch * 1009 + self.dist.rank
                torch.manual_seed(seed)
                augment.seed(seed, self.device)
                batches.set_epoch(epoch)
                t0 = time.perf_counter()
                train = self._train_epoch(model, batches, optimizer, scheduler, scaler, augment,
                                          epoch, phase, started)
                seconds = time.perf_counter() - t0
                val = evaluate(self.model, self.val_batches, num_classes=len(self.classes),
                               mean=self.mean, std=self.std,
                               device=self.device, amp_dtype=self.amp_dtype,
                               channels_last=cfg.channels_last, reduce=self.dist.all_reduce)
                record = {"epoch": epoch + 1, "phase": phase.name,
                          "lr": optimizer.param_groups[0]["lr"], **train,
                          "val_loss": val.loss, "val_acc": val.top1, "val_top5": val.top5,
                          "seconds": seconds}
                if self.dist.is_main:
                    # The row goes first: a resume drops rows past its checkpoint's epoch.
                    self.log.log_epoch(record)
                    self._save(epoch + 1, phase, val, optimizer, scheduler, scaler)
                    tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f} "
                               f"acc {record['train_acc']:.4f} | val loss {val.loss:.4f} "
                               f"top-1 {val.top1:.4f} top-5 {val.top5:.4f} | "
                               f"{record['img_per_s']:.0f} img/s, {seconds:.1f}s")
        finally:
            if self.log is not None:
                self.log.close()
            distributed.cleanup(self.dist)
        if self.dist.is_main:
            print(f"done in {time.perf_counter() - started:.1f}s: best top-1 "
                  f"{max(self.best_top1, 0):.4f} at epoch {self.best_epoch}; "
                  f"checkpoints in {self.run_dir}")
        return record

    def _train_epoch(self, model, batches, optimizer, scheduler, scaler, augment, epoch,
                     phase, started) -> dict:
        cfg, device = self.cfg, self.device
        model.train()
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, correct
        count = 0  # known on the host: counting it on the device would sync every step
        bar = tqdm(batches, total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs} {phase.name}",
                   disable=not self.dist.is_main, dynamic_ncols=True, leave=False)
        t0 = time.perf_counter()
        for step, (images, labels) in enumerate(bar, 1):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            loss, logits = train_step(model, images, labels, augment, optimizer, scaler,
                                      label_smoothing=cfg.label_smoothing, mean=self.mean,
                                      std=self.std, amp_dtype=self.amp_dtype,
                                      memory_format=self.memory_format)
            scheduler.step()
            count += len(labels)
            sums += torch.stack([loss.detach().double() * len(labels),
                                 (logits.argmax(1) == labels).sum().double()])
            if step % LOG_EVERY == 0 or step == len(batches):
                loss_sum, correct = sums.tolist()  # the only host sync
                if not math.isfinite(loss_sum):
                    raise UserError(f"the loss became {loss_sum} at epoch {epoch + 1}: "
                                    "lower --lr or use --amp off")
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.4g}",
                                img_s=f"{count * self.dist.world_size / elapsed:.0f}")
                if epoch == self.start_epoch and step == LOG_EVERY and self.dist.is_main:
                    self._print_eta(elapsed / step, len(batches))
        elapsed = time.perf_counter() - t0
        totals = self.dist.all_reduce(torch.cat([sums, sums.new_tensor([count])]))
        loss_sum, correct, count = totals.tolist()
        return {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1),
                "img_per_s": count / elapsed}

    def _print_eta(self, seconds_per_step: float, steps_per_epoch: int) -> None:
        remaining = (self.cfg.epochs - self.start_epoch) * steps_per_epoch * seconds_per_step
        tqdm.write(f"ETA for {self.cfg.epochs - self.start_epoch} epochs: about "
                   f"{remaining / 60:.1f} min (excluding evaluation)")

    # ---------------------------------------------------------------- checkpoints
    def _save(self, epoch: int, phase: Phase, val, optimizer, scheduler, scaler) -> None:
        """``last.pth`` every epoch, ``best.pth`` on a new best top-1, periodic copies."""
        is_best = val.top1 > self.best_top1
        if is_best:
            self.best_top1, self.best_epoch = val.top1, epoch
        cfg = self.cfg
        ckpt = {
            "model": strip_prefixes(self.model.state_dict()),
            "backbone": cfg.backbone, "num_classes": len(self.classes),
            "classes": self.classes, "input_shape": list(self.input_shape),
            "width_mult": cfg.width_mult, "in_channels": 3,
            "mean": list(self.mean), "std": list(self.std),
            "epoch": epoch, "phase": phase.name, "top1": val.top1, "top5": val.top5,
            "best_top1": self.best_top1, "best_epoch": self.best_epoch,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "config": to_dict(cfg),
        }
        if is_best:
            save_checkpoint(ckpt, self.run_dir / "best.pth")
        save_checkpoint(ckpt, self.run_dir / "last.pth")
        if cfg.save_period and epoch % cfg.save_period == 0:
            save_checkpoint(ckpt, self.run_dir / f"epoch_{epoch:03d}.pth")
