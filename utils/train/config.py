"""The settings of a training run: every field is a ``train.py`` flag.

``--config logs/<run>/config.json`` loads a saved run's settings (flags given beside it
override them); a run writes the settings it ran with, every automatic choice resolved.
"""
from __future__ import annotations

from dataclasses import dataclass

import nets
from utils.cli import default_workers
from utils.data import augment
from utils.layout import ANNOTATION_FILES, CACHE_DIR, DEFAULT_CLASSES, LOGS
from utils.model.precision import AMP_MODES
from utils.model.spec import MIN_CROP_FRACTION
from utils.settings import (MAX_BATCH, MAX_EPOCHS, MAX_WORKERS, above, at_least, between,
                            setting)
from utils.train.optim import OPTIMIZERS, SCHEDULES

AUTO = "chosen from the data and the device, see the plan"
BATCHNORM = "BatchNorm learns from two images at least"


@dataclass
class TrainConfig:
    """Everything a run depends on: ``train.py``'s flags, ``config.json`` in a run folder.

    Settings marked "chosen from the data" are picked for the dataset and the device when
    not given (:mod:`utils.train.recipe`; the run's plan prints each one and why); the
    values here are then only the fallback: the CIFAR-10 recipe for a GPU.  Edit a default
    here to change it for every run.
    """

    # --- data
    train_annotation: str = setting(ANNOTATION_FILES["train"], "the images to learn from")
    val_annotation: str = setting(ANNOTATION_FILES["val"], "scored every epoch: best.pth is "
                                  "the best epoch here (an empty list: the last epoch)")
    test_annotation: str = setting(ANNOTATION_FILES["test"], "scored once at the end with "
                                   "best.pth: the run's reported figure (results.json)")
    classes_path: str = setting(DEFAULT_CLASSES, "class names, one per line")
    input_shape: tuple[int, int] = setting((32, 32), "network input height and width",
                                           auto=AUTO)
    # --- model
    backbone: str = setting("mobilenetv2", "network", nets.available(),
                            auto="mobilenetv1 from scratch on a CPU, else mobilenetv2")
    width_mult: float = setting(1.0, "channel width multiplier (mobilenets)", valid=above(0),
                                auto=AUTO)
    small_input_drops: int | None = setting(
        None, "small inputs (under 96 px): early stride-2 steps the stem drops, 2 (32 px "
        "reaches the head as 4x4) or 1 (2x2, several times faster)", valid=between(1, 2),
        auto="1 for mobilenetv1 on a CPU (2,000+ images), else the networks' 2")
    pretrained: bool = setting(False, "start from ImageNet weights (downloaded once to "
                               "model_data/)", auto="for photos, when the backbone has them")
    model_path: str = setting("", "start from this checkpoint or state_dict (matching tensors)")
    # --- schedule: an optional frozen-backbone phase, then full training
    freeze_epochs: int = setting(0, "epochs training the head only, backbone frozen",
                                 valid=between(0, MAX_EPOCHS), auto=AUTO)
    freeze_batch_size: int = setting(512, "batch size during the freeze phase",
                                     valid=at_least(2, BATCHNORM, MAX_BATCH),
                                     auto="the batch size")
    epochs: int = setting(150, "total epochs, freeze phase included",
                          valid=between(1, MAX_EPOCHS),
                          auto=AUTO)
    batch_size: int = setting(512, "batch size per process",
                              valid=at_least(2, BATCHNORM, MAX_BATCH),
                              auto=AUTO)
    eval_batch_size: int = setting(1024, "batch size for the per-epoch evaluation",
                                   valid=between(1, MAX_BATCH))
    patience: int | None = setting(None, "stop when validation top-1 has not improved for "
                                   "this many epochs (unset: never)",
                                   valid=between(1, MAX_EPOCHS))
    time_budget: float | None = setting(None, "minutes this command may take, start to exit: "
                                        "the steps that fit (at most --epochs when given) "
                                        "are estimated from a measured step and re-fitted "
                                        "after every epoch, the schedule over them; the "
                                        "final test and report are inside it (unset: no "
                                        "limit)", valid=above(0, 60 * 24 * 366),
                                        auto="18 for photos on a CPU unless --epochs is given")
    # --- optimisation
    optimizer: str = setting("sgd", "sgd is Nesterov momentum", OPTIMIZERS, auto=AUTO)
    lr: float = setting(0.2, "learning rate for a global batch of 256 (scaled linearly for "
                        "sgd, by the square root for adam/adamw)",
                        valid=above(0, 100), auto=AUTO)
    momentum: float = setting(0.9, "SGD momentum", valid=between(0, 1))
    weight_decay: float = setting(5e-4, "weight decay (not applied to BatchNorm and biases)",
                                  valid=between(0, 10))
    schedule: str = setting("cosine", "learning-rate decay after warm-up", SCHEDULES)
    warmup_epochs: float = setting(2.0, "linear warm-up length in epochs",
                                   valid=between(0, MAX_EPOCHS),
                                   auto="2 epochs, at most a tenth of the run")
    step_epochs: int = setting(30, "step schedule: epochs between decays",
                              valid=between(1, MAX_EPOCHS))
    step_gamma: float = setting(0.1, "step schedule: decay factor", valid=between(0, 1))
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss",
                                     valid=between(0, 1))
    class_weights: str = setting("none", "auto: weigh each class's loss by its inverse "
                                 "frequency (mean 1), for imbalanced data", ("none", "auto"))
    crop_scale: float = setting(augment.CROP_SCALE, "smallest share of the image a "
                                "random-resized training crop keeps (photos; 1: whole images)",
                                valid=between(0.01, 1), auto=AUTO)
    crop_fraction: float | None = setting(
        None, "photos: evaluation keeps the centre of each image, this share of its side, "
        "resized to the input; unset: the backbone's (0.875)",
        valid=between(MIN_CROP_FRACTION, 1), auto=AUTO)
    augment: str = setting("none", "extra augmentation policy (crop and flip always on)",
                           augment.POLICIES)
    cutout: float = setting(0.0, "side of a grey square hiding part of each training image, "
                            "as a fraction of the input side (0: off)", valid=between(0, 1))
    # --- speed
    amp: str = setting("auto", "mixed precision: auto = bf16/fp16 on GPU, off on CPU",
                       AMP_MODES)
    channels_last: bool = setting(True, "channels-last memory format (faster convs on GPU)")
    compile: bool = setting(False, "torch.compile the model (pays off on long runs)")
    cache: bool = setting(True, "decode images once into a uint8 cache in .cache/")
    cache_dir: str = setting(CACHE_DIR, "where the decode cache lives")
    workers: int = setting(default_workers(4), "data-loading processes (CPUs, at most 4)",
                           valid=between(0, MAX_WORKERS))
    sync_bn: bool = setting(False, "SyncBatchNorm across GPUs under torchrun")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    seed: int = setting(0, "random seed (runs are reproducible on CPU)",
                        valid=between(0, 2**32 - 1))
    # --- output
    save_dir: str = setting(LOGS, "folder holding one sub-folder per run")
    run_name: str = setting("", "name of the run folder (empty: backbone and time)")
    save_period: int = setting(10, "also keep epoch_NNN.pth every this many epochs (0: never)",
                               valid=between(0, MAX_EPOCHS))
    resume: str = setting("", "continue the run of this last.pth")
