"""Setting a training run up: which run it is, its folder, and what the trainer needs.

:func:`resolve_run` decides which run a command starts: a fresh one, or the one
``--resume`` names, with the settings it was started with.  :func:`start_training` builds
the device, model description, weights, data and resume state, checking everything that
can be checked before a file is written, then claims the run folder and hands a
:class:`~utils.train.loop.Trainer` back.

A run folder is claimed atomically (exclusive creation of its ``config.json``), so two runs
started at the same moment with the same name can never write into one folder.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import nets
from utils import distributed
from utils.cli import UserError, warn
from utils.data.augment import BatchAugment
from utils.data.batches import Loading, check_batch_size, make_batches, training_batches
from utils.data.lists import read_annotation, read_classes
from utils.fileio import write_atomic
from utils.model.checkpoint import load_checkpoint, read_weights, transfer_from_file
from utils.model.execution import Execution
from utils.model.spec import ModelSpec
from utils.settings import from_dict, to_dict
from utils.train import recipe
from utils.train.budget import REPORT_SECONDS, TEST_MARGIN, StepBudget
from utils.train.config import TrainConfig
from utils.train.loop import Trainer, TrainingRun
from utils.train.state import RUN_ID_FILE, TrainState, train_fingerprint
from utils.train.steps import measure_speed, plan_phases

#: Where and how fast a run executes, not what it computes: a resume may change these.
RUNTIME_SETTINGS = ("device", "workers", "cache", "cache_dir", "compile", "resume")


@dataclass
class Run:
    """A run about to start: its settings, its folder and, when resumed, its checkpoint."""

    cfg: TrainConfig
    run_dir: Path
    resume: dict[str, Any] | None = None
    named: bool = True  #: the folder name was given (else backbone + time stamp, unique)
    explicit: frozenset[str] = frozenset()  #: the settings the user gave


def resolve_run(cfg, explicit=frozenset()) -> Run:
    """A fresh run of ``cfg``, or the run ``cfg.resume`` continues.

    A resumed run keeps the settings it was started with; of those given in ``explicit``,
    runtime ones override them and any other that disagrees is an error, not ignored.
    """
    if not cfg.resume:
        # Unnamed: the time stamp now, the backbone once the recipe has chosen it.
        run_dir = Path(cfg.save_dir) / (cfg.run_name or time.strftime('%Y%m%d-%H%M%S'))
        if cfg.run_name:
            _check_free(run_dir)  # early, before minutes of set-up; claimed atomically later
        return Run(cfg, run_dir, named=bool(cfg.run_name), explicit=frozenset(explicit))
    ckpt = load_checkpoint(cfg.resume)
    run_dir = Path(cfg.resume).parent
    if "config" not in ckpt or not isinstance(ckpt["config"], dict):
        raise UserError(f"{cfg.resume}: not a training checkpoint (no saved config)")
    if not (_inside(run_dir, cfg.save_dir) or (run_dir / "config.json").is_file()):
        # The run writes its logs next to the checkpoint: never into a random folder.
        raise UserError(f"{cfg.resume}: --resume continues a run in its folder under "
                        f"{cfg.save_dir}/, and {run_dir} is not a run folder; start a new "
                        "run from it with --model-path")
    saved = from_dict(type(cfg), ckpt["config"], source=cfg.resume)
    _check_own_folder(ckpt, saved, run_dir, cfg.resume)
    changed = [f"--{n.replace('_', '-')} {getattr(cfg, n)} (the run has {getattr(saved, n)})"
               for n in sorted(explicit) if n not in RUNTIME_SETTINGS
               and getattr(cfg, n) != getattr(saved, n)]
    if changed:
        raise UserError(f"{cfg.resume}: a resumed run keeps its settings: "
                        f"{', '.join(changed)}; start a new run from it with --model-path")
    resumed = dataclasses.replace(saved, **{n: getattr(cfg, n) for n in explicit
                                            if n in RUNTIME_SETTINGS})
    state = TrainState.from_checkpoint(ckpt, cfg.resume)
    if state.epoch >= resumed.epochs:
        raise UserError(f"{cfg.resume}: the run already finished all {resumed.epochs} epochs")
    if resumed.patience and state.best_epoch and state.epoch - state.best_epoch >= \
            resumed.patience:
        raise UserError(f"{cfg.resume}: the run already stopped early at epoch {state.epoch} "
                        f"(no better validation for {resumed.patience} epochs)")
    return Run(resumed, run_dir, ckpt)


def start_training(run: Run) -> Trainer:
    """Build everything ``run`` trains with, claim its folder, return its trainer.

    A fresh run's settings not given by the user are chosen from the data and the device
    (:mod:`utils.train.recipe`) and printed, each with where it came from, before anything starts.
    Every check that can fail runs before the run folder is claimed.
    """
    dist, device = distributed.setup(run.cfg.device)
    classes = read_classes(run.cfg.classes_path)
    if run.resume is not None:
        spec = ModelSpec.from_dict(run.resume, source=run.cfg.resume)
        if list(spec.classes) != classes:
            raise UserError(f"cannot resume: the checkpoint's {spec.num_classes} classes "
                            f"differ from {run.cfg.classes_path} ({len(classes)} classes)")
    # Read now, not after hours of training: a missing list fails before anything is written.
    train, val, test = (read_annotation(path, classes, allow_empty=empty) for path, empty in (
        (run.cfg.train_annotation, False), (run.cfg.val_annotation, True),
        (run.cfg.test_annotation, True)))
    plan, note = None, None
    if run.resume is None:
        data = recipe.survey(classes, train, val, test)
        weights = _weights(run.cfg, run.explicit, data)
        note = recipe.scratch_note(run.cfg.backbone) if weights is False else None
        plan = recipe.choose(run.cfg, run.explicit, data, device, weights)
        run.cfg = plan.cfg
        spec = ModelSpec.create(run.cfg.backbone, classes, run.cfg.input_shape,
                                run.cfg.crop_fraction,
                                **{f: getattr(run.cfg, f) for f in _arch_fields()
                                   if hasattr(run.cfg, f)})
    _check_batches(run.cfg, train, dist)
    model, execution = _model(run, spec, device, dist)
    budget = None
    if run.cfg.time_budget:
        budget = _budget(run, plan, model, spec, execution, (train, val, test), dist)
    cfg = run.cfg
    loading = Loading(cfg.workers, cfg.cache_dir if cfg.cache else None, device, dist, cfg.seed)
    val_batches = make_batches(val, spec.geometry, cfg.eval_batch_size, train=False,
                               source=cfg.val_annotation, loading=loading) if val else None
    weights = (class_weights(train, spec.num_classes).to(device)
               if cfg.class_weights == "auto" else None)
    fingerprint = train_fingerprint(train, cfg.train_annotation)
    if run.resume is None:
        state = TrainState(run_id=uuid.uuid4().hex, train_fingerprint=fingerprint)
    else:
        state = TrainState.from_checkpoint(run.resume, cfg.resume)
        _check_same_data(state, fingerprint, cfg)

    plan_text, run_dir = None, run.run_dir
    if dist.is_main:  # folders are made only once the run is known to start
        if plan is not None:
            plan_text = recipe.describe(plan, device, len(train), dist.world_size)
            print(plan_text, flush=True)
        else:
            print(f"resuming {cfg.resume}: {state.epoch} of {cfg.epochs} epochs done, best "
                  f"so far epoch {state.best_epoch}", flush=True)
        run_dir = _open_run_dir(run, state.run_id)
        print(f"run folder: {run_dir}")
    return Trainer(TrainingRun(cfg, spec, model, execution, loading, train, val_batches, test,
                               state, run_dir, dist, weights, plan_text, budget, note))


def _budget(run: Run, plan: recipe.Choices | None, model, spec: ModelSpec,
            execution: Execution, lists, dist) -> StepBudget:
    """``--time-budget``'s steps: a training step and an evaluation pass timed now, the
    plan's epochs fitted from them (a fresh run); a resumed run finishes its planned steps.
    """
    train, val, test = lists
    steps = training_batches(-(-len(train) // dist.world_size), run.cfg.batch_size)[0]
    agree = None
    if dist.enabled:
        def agree(total: int) -> int:
            mean = dist.all_reduce(torch.tensor([float(total)], device=execution.device))
            return max(1, round(mean.item() / dist.world_size))
    if plan is None:
        return StepBudget(math.inf, 0.0, 0, agree, say=dist.is_main)
    augment = BatchAugment(spec.input_shape, spec.small_input)
    batch = min(run.cfg.batch_size, len(train))
    train_s, eval_s = measure_speed(model, spec, execution, batch, augment)
    budget = StepBudget(run.cfg.time_budget * 60,
                        len(test) * eval_s * TEST_MARGIN + REPORT_SECONDS,
                        round(run.cfg.warmup_epochs * steps), agree, say=dist.is_main)
    budget.step_seconds = train_s * batch * dist.world_size
    budget.epoch_overhead = len(val) * eval_s + recipe.EPOCH_OVERHEAD
    # Epochs given, or a budget the recipe chose (a limit, not a target: a small set
    # still takes its few minutes): the epochs are a most, within the time.
    if "epochs" in run.explicit or "time_budget" not in run.explicit:
        budget.most_steps = (run.cfg.epochs - min(run.cfg.freeze_epochs, run.cfg.epochs)) * steps
    fit = budget.steps_that_fit(0, steps)
    recipe.fit_to_budget(plan, fit, steps, capped=fit == budget.most_steps)
    run.cfg = plan.cfg
    return budget


def _check_own_folder(ckpt: dict, saved: TrainConfig, run_dir: Path, source: str) -> None:
    """A checkpoint resumes only the run it belongs to: copied into another run's folder,
    it would overwrite that run's checkpoints, logs and report.

    The run's identity is in its checkpoints and its folder (:data:`RUN_ID_FILE`); runs
    older than that are recognised by their settings (``config.json``).
    """
    held = run_dir / RUN_ID_FILE
    folder_id = held.read_text().strip() if held.is_file() else None
    if folder_id is not None:
        same = folder_id == ckpt.get("run_id")
    else:  # a run from before run ids, or a folder holding no run yet
        try:
            on_disk = from_dict(TrainConfig, json.loads((run_dir / "config.json").read_text()))
        except (OSError, ValueError, UserError):
            on_disk = None
        same = on_disk is None or all(getattr(on_disk, f) == getattr(saved, f)
                                      for f in to_dict(saved) if f not in RUNTIME_SETTINGS)
    if not same:
        raise UserError(f"{source} belongs to another run than the one in {run_dir}: "
                        "resuming would overwrite that run's files; resume it from its own "
                        "folder, or start a new run from it with --model-path")


def _check_same_data(state: TrainState, fingerprint: str, cfg: TrainConfig) -> None:
    """A resumed run sees the training list it started with (the schedule, the epochs'
    batches and the figures all depend on it); older checkpoints carry no fingerprint."""
    if state.train_fingerprint is not None and state.train_fingerprint != fingerprint:
        then, now = (f.split(":")[0] for f in (state.train_fingerprint, fingerprint))
        raise UserError(f"cannot resume {cfg.resume}: the training list "
                        f"{cfg.train_annotation} changed since the run started ({then} images "
                        f"then, {now} now); start a new run from it with --model-path")


def _check_batches(cfg, train, dist) -> None:
    """Each phase's batch fits the training set; a frozen random backbone is worth a word."""
    for phase in plan_phases(cfg):
        flag = "--freeze-batch-size" if phase.name == "freeze" else "--batch-size"
        check_batch_size(phase.batch_size, train, cfg.train_annotation, flag, dist.world_size)
    if cfg.freeze_epochs and not (cfg.pretrained or cfg.model_path) and dist.is_main:
        warn("--freeze-epochs without --pretrained or --model-path freezes a random backbone")


def _model(run: Run, spec: ModelSpec, device, dist) -> tuple[torch.nn.Module, Execution]:
    """The network with its starting weights (resumed, ImageNet, a file, or fresh), placed."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed)
    model = spec.build(pretrained=cfg.pretrained and run.resume is None)
    if run.resume is not None:
        model.load_state_dict(read_weights(cfg.resume))
    elif cfg.model_path:
        transfer_from_file(model, cfg.model_path, spec.backbone)
    if cfg.sync_bn and dist.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    execution = Execution.create(spec, device, cfg.amp, cfg.channels_last)
    return execution.prepare(model), execution


def class_weights(samples, num_classes: int) -> torch.Tensor:
    """Inverse class frequencies, scaled to mean 1 over the classes that have images."""
    counts = torch.bincount(torch.tensor([label for label, _ in samples]),
                            minlength=num_classes).double()
    inverse = torch.where(counts > 0, 1 / counts.clamp(min=1), torch.zeros_like(counts))
    return (inverse * (counts > 0).sum() / inverse.sum()).float()


def _weights(cfg, explicit, data: recipe.Survey) -> bool | None:
    """Whether the backbone's ImageNet weights can be had, when the recipe would use them.

    They are fetched now (once; cached in model_data/), so the recipe fits what is really
    there.  Asked for with --pretrained, failing is an error; chosen by the recipe, a
    warning says how to place the file and training starts from scratch.
    """
    url = nets.get_entry(cfg.backbone).pretrained_cfg.url
    wanted = cfg.pretrained if "pretrained" in explicit else not data.small
    if url is None or not wanted:
        return None
    try:
        nets.download_weights(url, nets.MODEL_DIR)
    except (OSError, ValueError) as exc:
        if "pretrained" in explicit:
            raise UserError(str(exc)) from exc
        warn(f"no ImageNet weights for {cfg.backbone} ({exc}); training from scratch")
        return False
    return True


def _arch_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ModelSpec) if f.metadata.get("arch")]


def _inside(path: Path, folder: str | os.PathLike) -> bool:
    return Path(folder).resolve() in path.resolve().parents


def _check_free(run_dir: Path) -> None:
    """A clear error when ``run_dir`` already holds anything."""
    try:
        entries = sorted(p.name for p in run_dir.iterdir())
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UserError(f"{run_dir} is a file, not a run folder: pick another --run-name") \
            from None
    except OSError as exc:
        raise UserError(f"cannot use run folder {run_dir}: {exc.strerror or exc}") from None
    if not entries:
        return
    if "last.pth" in entries:
        way_out = f"--resume {run_dir / 'last.pth'}"
    else:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        way_out = f"move its files ({shown}) elsewhere"
    raise UserError(f"{run_dir} already holds a run: pick another --run-name, or {way_out}")


def _open_run_dir(run: Run, run_id: str | None) -> Path:
    """Claim a fresh run's folder, or reopen a resumed one; write the run's config.json.

    A time-stamped default name taken by a run started in the same second becomes
    ``<name>-2``, ``-3``, ...; a name the user chose is never changed behind their back.
    """
    config = json.dumps(to_dict(run.cfg), indent=2) + "\n"
    if run.resume is not None:
        for stale in run.run_dir.glob(".*.tmp"):  # writes torn by a killed run of ours
            stale.unlink()
        write_atomic(run.run_dir / "config.json", config)
        if run_id is not None and not (run.run_dir / RUN_ID_FILE).exists():
            write_atomic(run.run_dir / RUN_ID_FILE, f"{run_id}\n")  # its new home
        return run.run_dir
    if not run.named:
        run.run_dir = run.run_dir.with_name(f"{run.cfg.backbone}-{run.run_dir.name}")
    name = run.run_dir.name
    candidates = [run.run_dir] if run.named else [
        run.run_dir, *(run.run_dir.with_name(f"{name}-{i}") for i in range(2, 100))]
    for run_dir in candidates:
        if _claim(run_dir, config):
            write_atomic(run_dir / RUN_ID_FILE, f"{run_id}\n")
            return run_dir
    _check_free(run.run_dir)  # says what is in it
    raise UserError(f"{run.run_dir} was just claimed by another run: pick another --run-name")


def _claim(run_dir: Path, config: str) -> bool:
    """Make ``run_dir`` this run's by creating its config.json exclusively; False when the
    folder is taken (by files, or by a run that got there first)."""
    try:
        if run_dir.is_dir() and any(run_dir.iterdir()):
            return False
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "config.json", "x", encoding="utf-8") as f:
            f.write(config)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise UserError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") from None

