"""Settings chosen from the data and the device: what a practitioner would pick.

Every setting a user gives (flag or ``--config``) is kept as given. The others that are
marked ``auto`` in :class:`utils.train.config.TrainConfig` are chosen here from a
:class:`Survey` of the training data and from the device, and each choice comes with the
reason the run's plan prints. The recipes:

* small images (CIFAR-style, under 96 px) on a GPU: the CIFAR-10 recipe, unchanged, at the
  images' own size (batch sizes bounded by the training set);
* small images on a CPU, where time is what users feel: a half-width MobileNetV1 whose
  small-input stem keeps 16x16 (not 32x32) after it, AdamW, batches of 32 (as fast per image
  as larger ones, and training stays under 1.5 GiB), and the epochs a CPU gets through in
  about twenty minutes;
* photos: ImageNet transfer when the backbone has weights (one frozen epoch to fit the new
  head, then everything), at the weights' input size; from scratch on a CPU, the CPU
  network at 128 px (a 224 px network trains several times slower) with crops of at least
  :data:`PHOTO_CPU_CROP_SCALE` of the photo and an evaluation crop to match; on a CPU a
  run is given a time budget of :data:`PHOTO_CPU_MINUTES` unless its epochs are;
* everywhere: a warm-up of at most a tenth of the run, and early stopping on validation
  for the short photo runs.

Figures behind the choices are in the README ("Your own photos").
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image

import nets
from utils.evaluation.intervals import images_needed, wilson

#: Images sampled for their size: enough for a median, quick to read (headers only).
SIZE_SAMPLE = 200
#: Seconds an epoch spends beyond its steps (checkpoints, logs, plots): for time budgets.
EPOCH_OVERHEAD = 1.0
#: Training images a CPU recipe gets through (about 20 minutes at 250 img/s, 2 cores).
CPU_IMAGES = 300_000
#: Minutes a photo run on a CPU takes unless told otherwise (the whole command; the
#: import and annotation before it take well under a minute for a few thousand photos).
PHOTO_CPU_MINUTES = 18.0
#: The smallest share of a photo a training crop keeps on a CPU from scratch: a 6-minute
#: cats/dogs run scored 79.9% top-1 at 0.35 against 75.1% at 0.08 (README, "Your own photos").
PHOTO_CPU_CROP_SCALE = 0.35
#: ... and the share of a photo's side evaluation keeps: objects then look as large as in the
#: training crops (whose mean side is about 0.78 of the photo at that scale; Touvron et al.,
#: "Fixing the train-test resolution discrepancy", 2019).  A 6-minute run: 82.7% against
#: 79.9% with ImageNet's 0.875.
PHOTO_CPU_CROP_FRACTION = 0.77
#: From this many training images a CPU recipe halves the MobileNets' width: below it a run
#: is short anyway, and full width learns more per epoch.
HALF_WIDTH_IMAGES = 2000

#: Where a backbone needs other settings than the defaults; a flag or a --config value still
#: wins.  VGG16 has no BatchNorm: from scratch it diverges at the BN networks' rate.
BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {
    "vgg16": {"lr": 0.01, "warmup_epochs": 5.0},
}


@dataclass(frozen=True)
class Survey:
    """What the training run will see, before it starts."""

    classes: tuple[str, ...]
    counts: tuple[int, ...]  #: training images per class
    val: int
    test: int
    image_shape: tuple[int, int] | None  #: median (H, W) of a sample of training images

    @property
    def train(self) -> int:
        return sum(self.counts)

    @property
    def small(self) -> bool:
        """CIFAR-style images, trained at their own size with the small-input stems."""
        return self.image_shape is not None and nets.is_small_input(self.image_shape)

    @property
    def imbalance(self) -> float:
        """Largest over smallest class (classes without images aside)."""
        present = [c for c in self.counts if c]
        return max(present) / min(present) if present else 1.0

    def describe(self) -> str:
        size = (f"; images about {self.image_shape[1]}x{self.image_shape[0]}"
                if self.image_shape else "")
        balance = ("balanced" if self.imbalance < 1.5
                   else f"imbalance {self.imbalance:.1f}x, largest over smallest")
        return (f"{self.train} training images in {len(self.classes)} classes ({balance}), "
                f"{self.val} validation, {self.test} test{size}")


def survey(classes: Sequence[str], train, val, test) -> Survey:
    """Count the samples per class and read the size of up to :data:`SIZE_SAMPLE` images."""
    counts = [0] * len(classes)
    for label, _ in train:
        counts[label] += 1
    step = max(1, len(train) // SIZE_SAMPLE)
    sizes = []
    for _, path in train[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(path) as image:  # the header only
                sizes.append((image.height, image.width))
        except Exception:  # noqa: BLE001 - unreadable images are reported where they are read
            continue
    size = (round(statistics.median(h for h, _ in sizes)),
            round(statistics.median(w for _, w in sizes))) if sizes else None
    return Survey(tuple(classes), tuple(counts), len(val), len(test), size)


@dataclass
class Choices:
    """A config with, per setting, where its value came from."""

    cfg: Any
    why: dict[str, str]  #: setting -> "given", "default" or the reason it was chosen
    data: Survey

    @property
    def given(self) -> set[str]:
        return {name for name, why in self.why.items() if why == "given"}

    def set(self, name: str, value, reason: str) -> None:
        if self.why.get(name) != "given":
            self.cfg = dataclasses.replace(self.cfg, **{name: value})
            self.why[name] = reason


def choose(cfg, explicit, data: Survey, device: torch.device,
           weights_available: bool | None = None) -> Choices:
    """The settings for this run: the given ones, and the others chosen for ``data`` on
    ``device`` (``weights_available``: whether the backbone's ImageNet weights can be had,
    when that matters; ``None`` = not asked)."""
    from dataclasses import fields

    choices = Choices(cfg, {f.name: "given" if f.name in explicit else "default"
                            for f in fields(cfg)}, data)
    for name, value in BACKBONE_DEFAULTS.get(cfg.backbone, {}).items():
        choices.set(name, value, f"{cfg.backbone}'s own default")
    gpu = device.type == "cuda"
    if data.small:
        _small_images(choices, data, gpu)
    else:
        _photos(choices, data, gpu, bool(weights_available))
    if weights_available is False:  # wanted, and not to be had
        choices.set("pretrained", False, scratch_note(cfg.backbone))
    _batches(choices, data)
    _warmup(choices)
    return choices


def scratch_note(backbone: str) -> str:
    """What the plan, the final lines and the report say when the ImageNet weights a run
    wanted could not be had, and how to get them."""
    url = nets.get_entry(backbone).pretrained_cfg.url
    return (f"from scratch: no ImageNet weights for {backbone} (download {url} into "
            f"{nets.MODEL_DIR}/, or run once with internet access, to start from them)")


def fit_to_budget(choices: Choices, steps: int, steps_per_epoch: int,
                  capped: bool = False) -> None:
    """The plan's epochs for ``--time-budget``: the ``steps`` that fit (estimated from a
    measured step, :mod:`utils.train.budget`, and re-fitted as the run goes), or, when
    ``capped``, all the steps of the epochs planned, which fit."""
    epochs = -(-steps // max(steps_per_epoch, 1))
    budget = choices.cfg.time_budget
    choices.set("epochs", epochs, f"within {budget:g} min (measured), re-fitted after every "
                                  "epoch" if capped else
                                  f"about {steps} steps fit {budget:g} min (measured), "
                                  "re-fitted after every epoch")
    _warmup(choices)


def _small_images(choices: Choices, data: Survey, gpu: bool) -> None:
    choices.set("input_shape", data.image_shape, "the images' own size (small images)")
    if gpu:
        return  # the CIFAR-10 recipe, as it is
    _cpu_network(choices, data)
    if choices.cfg.backbone == "mobilenetv1" and data.train >= HALF_WIDTH_IMAGES:
        choices.set("small_input_drops", 1, "CPU recipe: 16x16 after the stem at 32 px, "
                                            "2.5x the images per second, and more top-1 in "
                                            "80 s")
    _cpu_epochs(choices, data, least=10)


def _cpu_epochs(choices: Choices, data: Survey, least: int) -> None:
    """About :data:`CPU_IMAGES` training images in all (at least ``least`` epochs, at most
    150); a time budget may end the run sooner."""
    epochs = min(150, max(least, round(CPU_IMAGES / max(data.train, 1))))
    choices.set("epochs", epochs, f"CPU recipe: {epochs * data.train:,} images in all (about "
                                  f"{CPU_IMAGES:,}, at least {least} epochs)")


def _cpu_network(choices: Choices, data: Survey, timed: bool = False) -> None:
    """A network trained from scratch on a CPU: half-width MobileNetV1 (the fastest per
    image here), AdamW, batches of 32.  Full width for fewer than
    :data:`HALF_WIDTH_IMAGES` images, unless the run is ``timed`` (a time budget: then
    images per second are what counts)."""
    choices.set("backbone", "mobilenetv1", "CPU recipe: 1.3x the images per second of "
                                           "MobileNetV2 at the same width")
    if "width_mult" in nets.arguments(choices.cfg.backbone) and (
            timed or data.train >= HALF_WIDTH_IMAGES):
        choices.set("width_mult", 0.5, f"CPU recipe, {data.train:,} images: 2-3x the images "
                                       "per second of full width")
    if "lr" not in choices.given:  # a rate given means the optimizer it was meant for
        choices.set("optimizer", "adamw", "CPU recipe: gets far in the few epochs a CPU "
                                          "affords")
    if choices.cfg.optimizer == "adamw":
        choices.set("lr", 0.02, "AdamW's rate per 256 images")
        choices.set("weight_decay", 0.05, "AdamW's decoupled decay")
    choices.set("batch_size", 32, "CPU recipe: as fast per image as larger batches, more "
                                  "steps, and the memory of training under 1.5 GiB")


def _photos(choices: Choices, data: Survey, gpu: bool, transfer: bool) -> None:
    cfg = choices.cfg
    entry = nets.get_entry(cfg.backbone)
    transfer = transfer and choices.why["pretrained"] != "given" or cfg.pretrained
    if transfer:
        choices.set("pretrained", True, "photos: start from the ImageNet weights")
        choices.set("input_shape", entry.pretrained_cfg.input_shape,
                    "the size the ImageNet weights were trained at")
        choices.set("freeze_epochs", 1, "fit the new head on the frozen backbone first")
        choices.set("epochs", 15, "fine-tuning converges in a few epochs")
        choices.set("lr", 0.05, "fine-tuning: a quarter of the from-scratch rate")
    else:
        side = 224 if gpu else 128
        choices.set("input_shape", (side, side),
                    "photos from scratch" + ("" if gpu else ": 128 px trains about 3x faster "
                                             "than 224 on a CPU"))
        if gpu:
            choices.set("epochs", 90, "from scratch on a small set")
        else:
            _cpu_epochs(choices, data, least=40)
            _cpu_network(choices, data, timed="epochs" not in choices.given)
            if "crop_scale" not in choices.given:  # the pair was measured, not each alone
                choices.set("crop_scale", PHOTO_CPU_CROP_SCALE, "CPU photos from scratch: a "
                                                                "short run under-fits 0.08")
                choices.set("crop_fraction", PHOTO_CPU_CROP_FRACTION, "objects as large as in "
                                                                      "the training crops")
    if choices.why["batch_size"] != "given":
        choices.set("batch_size", 64 if gpu else 32, "photos")
    if not gpu and "epochs" not in choices.given:
        choices.set("time_budget", PHOTO_CPU_MINUTES, "photos on a CPU: at most the epochs "
                                                      "that fit, a model within 20 minutes "
                                                      "(--epochs or --time-budget for more)")


def _batches(choices: Choices, data: Survey) -> None:
    """Batch sizes never above the training set: a power of two, at most an eighth of the
    set (but 8 when the set holds that many, and 2 at the very least)."""
    cfg = choices.cfg
    cap, limit = 2, max(data.train // 8, min(8, data.train))
    while cap * 2 <= limit:
        cap *= 2
    if cfg.batch_size > cap:
        choices.set("batch_size", cap, f"sized to the {data.train} training images")
    choices.set("freeze_batch_size", choices.cfg.batch_size, "the batch size")


def _warmup(choices: Choices) -> None:
    cfg = choices.cfg
    tenth = cfg.epochs / 10
    if cfg.warmup_epochs > tenth:
        choices.set("warmup_epochs", round(tenth, 2), "at most a tenth of the run")


def _held_out_line(data: Survey) -> list[str]:
    """A line naming the held-out sets too small to measure anything: on fewer images than
    :func:`~utils.evaluation.intervals.images_needed`, a figure can be off by more than ±10
    points."""
    need = images_needed()
    small = [f"{n} {name}" for name, n in (("validation", data.val), ("test", data.test))
             if 0 < n < need]
    if not small:
        return []
    fewest = min(n for n in (data.val, data.test) if n)
    worst = wilson(fewest // 2, fewest)  # a figure near 50% has the widest interval
    return [f"held-out  {' and '.join(small)} images: too few to measure the model (a figure "
            f"on them can be off by up to ±{100 * worst.half_width:.0f} points; about {need} "
            "images keep any figure within ±10)"]


def describe(choices: Choices, device: torch.device, train_images: int,
             world_size: int = 1) -> str:
    """The run's plan: the data, the device, and each setting that was chosen or given,
    with where it came from; then what one epoch and the whole run take in steps."""
    from dataclasses import fields

    from utils.data.batches import training_batches

    cfg = choices.cfg
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    lines = [f"data      {choices.data.describe()}", *_held_out_line(choices.data),
             f"device    {device}{threads}{f' x {world_size} processes' if world_size > 1 else ''}",
             "settings  (given: by you; auto: chosen for these data and this device; "
             "every one is a flag)"]
    auto_fields = {f.name for f in fields(cfg) if f.metadata.get("auto")}
    width = max(len(name) for name in auto_fields | set(choices.why))
    for f in fields(cfg):
        why, value = choices.why[f.name], getattr(cfg, f.name)
        if why == "default" and (f.name not in auto_fields or value is None):
            continue  # an automatic setting left unset has nothing to say
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        label = why if why in ("given", "default") else f"auto: {why}"
        lines.append(f"  {f.name:<{width}}  {shown:<12} {label}")
    per_rank = -(-train_images // world_size)
    steps, left_out = training_batches(per_rank, cfg.batch_size)
    schedule = (f"{cfg.freeze_epochs} frozen-backbone epoch(s), then " if cfg.freeze_epochs
                else "")
    lines.append(f"schedule  {schedule}{cfg.epochs - min(cfg.freeze_epochs, cfg.epochs)} "
                 f"epoch(s) of {steps} steps (batch {cfg.batch_size})"
                 + (f"; {left_out} images sit out each epoch, a different few each time (a "
                    "batch that small would unsettle BatchNorm)" if left_out else "")
                 + (f"; stops early after {cfg.patience} epochs without a better validation "
                    "score" if cfg.patience else ""))
    return "\n".join(lines)
