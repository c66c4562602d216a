"""The settings of ``benchmark.py``: what to measure, on which model and data."""
from __future__ import annotations

from dataclasses import dataclass

import nets
from utils.cli import UserError, default_workers
from utils.layout import ANNOTATION_FILES, DEFAULT_CLASSES
from utils.model.precision import AMP_MODES
from utils.settings import MAX_BATCH, MAX_WORKERS, above, at_least, between, setting

#: What computes the eval stage's logits: torch eager, ONNX Runtime float32, ONNX Runtime int8.
RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8")
STAGES = ("data", "train", "eval")
DATASETS = ("photos", "cifar-subset")
#: The most timed windows a figure may cost.
MAX_REPEATS = 1000


@dataclass
class BenchmarkConfig:
    """Measure the stages of the pipeline, or write a benchmark dataset, or time training
    to accuracy."""

    backbone: str = setting("mobilenetv2", "network", nets.available())
    input_shape: tuple[int, int] = setting((32, 32), "network input height and width")
    width_mult: float = setting(1.0, "channel width multiplier (mobilenets)")
    batch_size: int = setting(512, "training batch size", valid=at_least(1, high=MAX_BATCH))
    eval_batch_size: int = setting(1024, "evaluation batch size",
                                   valid=at_least(1, high=MAX_BATCH))
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    amp: str = setting("auto", "mixed precision: auto = bf16/fp16 on GPU, off on CPU",
                       AMP_MODES)
    channels_last: bool = setting(True, "channels-last memory format")
    compile: bool = setting(False, "torch.compile the training model", switch=True)
    data: str = setting(ANNOTATION_FILES["train"], "training annotation file")
    eval_data: str = setting(ANNOTATION_FILES["test"], "evaluation annotation file")
    classes: str = setting(DEFAULT_CLASSES, "class list file")
    workers: int = setting(default_workers(4), "data-loading processes",
                           valid=between(0, MAX_WORKERS))
    steps: int = setting(30, "timed steps per window", valid=at_least(1, high=100_000))
    repeats: int = setting(3, "timed windows (median reported)",
                           valid=at_least(1, high=MAX_REPEATS))
    baseline: bool = setting(False, "also time a per-sample PIL DataLoader and a "
                             "one-image-at-a-time eval", switch=True)
    baseline_images: int = setting(2000, "images the (slow) baseline loops process per window",
                                   valid=at_least(1, high=10**7))
    make_dataset: str | None = setting(None, "write a benchmark dataset cut from the CIFAR-10 "
                                       "JPEG archive: 3 classes of 320x240 photo-like JPEGs "
                                       "(100 train / 50 test each), or the first 500 / 200 "
                                       "images of every class; then exit", DATASETS)
    archive: str | None = setting(None, "--make-dataset: the CIFAR-10 JPEG archive")
    out: str | None = setting(None, "--make-dataset: the folder to write")
    time_to_accuracy: tuple[float, ...] | None = setting(
        None, "train the defaults (on --data, scored on --eval-data) once per wall-clock "
        "budget and print the top-1 each reached; then exit", valid=above(0, 86400),
        metavar="SECONDS")
    train_args: str = setting("", "--time-to-accuracy: extra train.py flags, e.g. "
                              "'--device cpu'")
    stages: tuple[str, ...] = setting(STAGES, "what to measure", STAGES)
    runtimes: tuple[str, ...] = setting(("torch",), "eval stage: the inference engines to time "
                                        "on the same batches (onnxruntime: the model "
                                        "exported; -int8: also quantized, calibrated on "
                                        "--data); ratios are to the first", RUNTIMES)
    model: str | None = setting(None, "a checkpoint whose network and weights to measure "
                                "(default: a new --backbone network); the eval stage then "
                                "reports top-1 too")

    def check(self) -> None:
        if self.make_dataset and not (self.archive and self.out):
            raise UserError("--make-dataset needs --archive (the CIFAR-10 JPEG archive) and "
                            "--out")
