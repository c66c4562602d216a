"""Train a classifier on the annotated folders: ``python train.py [--flag value ...]``.

Edit the defaults below, pass flags (every field is one: ``--backbone resnet50
--epochs 30``), or load a saved config with ``--config logs/<run>/config.json``.
``--resume logs/<run>/last.pth`` continues a stopped run exactly where it stopped.
Many GPUs: ``torchrun --nproc_per_node 4 train.py ...`` (see the README).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import nets
from utils import augment
from utils.annotation import ANNOTATION_FILES, DEFAULT_CLASSES
from utils.cli import UserError, default_workers, run, warn
from utils.config import parse
from utils.execution import AMP_MODES
from utils.optim import OPTIMIZERS, SCHEDULES
from utils.runs import resolve_run, start_training


def _opt(default, help, choices=None):
    metadata = {"help": help, **({"choices": tuple(choices)} if choices else {})}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults: a strong recipe for CIFAR-10 at 32x32."""

    # --- data
    train_annotation: str = _opt(ANNOTATION_FILES["train"], "the images to learn from")
    val_annotation: str = _opt(ANNOTATION_FILES["val"], "scored every epoch: best.pth is the "
                               "best epoch here (an empty file: best.pth is the last epoch)")
    test_annotation: str = _opt(ANNOTATION_FILES["test"], "scored once at the end with best.pth: "
                                "the run's reported figure (results.json)")
    classes_path: str = _opt(DEFAULT_CLASSES, "class names, one per line")
    input_shape: tuple[int, int] = _opt((32, 32), "network input height and width")
    # --- model
    backbone: str = _opt("mobilenetv2", "network", nets.available())
    width_mult: float = _opt(1.0, "channel width multiplier (mobilenets)")
    pretrained: bool = _opt(False, "start from ImageNet weights (downloaded once to model_data/)")
    model_path: str = _opt("", "start from this checkpoint or state_dict (matching tensors)")
    # --- schedule: an optional frozen-backbone phase, then full training
    freeze_epochs: int = _opt(0, "epochs training the head only, backbone frozen")
    freeze_batch_size: int = _opt(512, "batch size during the freeze phase")
    epochs: int = _opt(150, "total epochs, freeze phase included")
    batch_size: int = _opt(512, "batch size per process")
    eval_batch_size: int = _opt(1024, "batch size for the per-epoch evaluation")
    # --- optimisation
    optimizer: str = _opt("sgd", "sgd is Nesterov momentum", OPTIMIZERS)
    lr: float = _opt(0.2, "learning rate for a global batch of 256 (scaled linearly)")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(5e-4, "weight decay (not applied to BatchNorm and biases)")
    schedule: str = _opt("cosine", "learning-rate decay after warm-up", SCHEDULES)
    warmup_epochs: float = _opt(2.0, "linear warm-up length in epochs")
    step_epochs: int = _opt(30, "step schedule: epochs between decays")
    step_gamma: float = _opt(0.1, "step schedule: decay factor")
    label_smoothing: float = _opt(0.1, "label smoothing of the cross-entropy loss")
    class_weights: str = _opt("none", "auto: weigh each class's loss by its inverse frequency "
                              "(mean 1), for imbalanced data", ("none", "auto"))
    augment: str = _opt("none", "extra augmentation policy (crop and flip always on)",
                        augment.POLICIES)
    cutout: float = _opt(0.0, "side of a grey square hiding part of each training image, "
                              "as a fraction of the input side (0: off)")
    # --- speed
    amp: str = _opt("auto", "mixed precision: auto = bf16/fp16 on GPU, off on CPU",
                    AMP_MODES)
    channels_last: bool = _opt(True, "channels-last memory format (faster convs on GPU)")
    compile: bool = _opt(False, "torch.compile the model (pays off on long runs)")
    cache: bool = _opt(True, "decode images once into a uint8 cache in .cache/")
    cache_dir: str = _opt(".cache", "where the decode cache lives")
    workers: int = _opt(default_workers(4), "data-loading processes (default: CPUs, at most 4)")
    sync_bn: bool = _opt(False, "SyncBatchNorm across GPUs under torchrun")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    seed: int = _opt(0, "random seed (runs are reproducible on CPU)")
    # --- output
    save_dir: str = _opt("logs", "folder holding one sub-folder per run")
    run_name: str = _opt("", "name of the run folder (default: backbone and time)")
    save_period: int = _opt(10, "also keep epoch_NNN.pth every this many epochs (0: never)")
    resume: str = _opt("", "continue the run of this last.pth")


#: Where a backbone needs other settings than the defaults above; a flag or a --config
#: value still wins. VGG16 has no BatchNorm: from scratch it diverges at the BN networks' rate.
BACKBONE_DEFAULTS: dict[str, dict] = {
    "vgg16": {"lr": 0.01, "warmup_epochs": 5.0},
}


def with_backbone_defaults(cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    """Apply :data:`BACKBONE_DEFAULTS` to the settings the user did not give."""
    changes = {k: v for k, v in BACKBONE_DEFAULTS.get(cfg.backbone, {}).items()
               if k not in explicit}
    return dataclasses.replace(cfg, **changes)


def check(cfg: TrainConfig) -> None:
    """Reject values no run could use, before anything is written."""
    for name in ("epochs", "batch_size", "freeze_batch_size", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.lr <= 0:
        raise UserError("--lr must be positive")
    if not 0 <= cfg.cutout <= 1:
        raise UserError("--cutout is a fraction of the input side, between 0 and 1")
    if cfg.freeze_epochs < 0 or cfg.workers < 0 or cfg.save_period < 0:
        raise UserError("--freeze-epochs, --workers and --save-period cannot be negative")
    if cfg.freeze_epochs and not (cfg.pretrained or cfg.model_path):
        warn("--freeze-epochs without --pretrained or --model-path freezes a random backbone")


def main(argv=None) -> int:
    cfg, explicit = parse(TrainConfig, argv, description=__doc__.splitlines()[0])
    cfg = with_backbone_defaults(cfg, explicit)
    check(cfg)
    start_training(resolve_run(cfg, explicit)).fit()
    return 0


if __name__ == "__main__":
    run(main)
