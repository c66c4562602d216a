"""The stages ``benchmark.py`` times: the data pipeline, the training step, evaluation.

Every figure is a median over repeated timed windows after a warm-up; GPU work is
synchronised before each clock read.  Each stage runs beside its naive baseline when asked
(``--baseline``): a per-sample PIL ``DataLoader``, a one-image-at-a-time evaluation loop.
"""
from __future__ import annotations

import dataclasses
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from utils.benchmarks.config import BenchmarkConfig
from utils.cli import warn
from utils.data import preprocess
from utils.data.augment import BatchAugment
from utils.data.batches import Loading, make_batches, one_by_one_batches
from utils.data.image import load_image
from utils.data.lists import read_annotation, read_classes
from utils.distributed import resolve_device
from utils.evaluation.scoring import evaluate, evaluate_logits
from utils.inference.classifier import ModelSource
from utils.inference.onnx_export import export_checked
from utils.inference.onnx_runtime import OnnxRuntime, open_session
from utils.inference.torch_runtime import TorchRuntime, read_model
from utils.model.checkpoint import build_model
from utils.model.execution import Execution
from utils.model.spec import ModelSpec
from utils.train.optim import make_optimizer
from utils.train.steps import train_step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, images_per_call: int, device, calls: int, repeats: int, warmup: int = 2) -> float:
    """Median images/s of ``fn`` over ``repeats`` windows of ``calls`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        rates.append(images_per_call * calls / (time.perf_counter() - t0))
    return statistics.median(rates)


def cycle(iterable):
    while True:
        yield from iterable


class PilDataset(Dataset):
    """The baseline: decode and augment one PIL image per item, as blog-post scripts do."""

    def __init__(self, samples, spec: ModelSpec, train):
        self.samples = samples
        shape = spec.input_shape
        crop = (v2.RandomCrop(shape, padding=max(1, round(min(shape) / 8)))
                if spec.small_input else v2.RandomResizedCrop(shape))
        self.transform = v2.Compose([
            crop if train else v2.Resize(shape), v2.RandomHorizontalFlip(),
            v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(spec.mean, spec.std)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        label, path = self.samples[i]
        return self.transform(load_image(path)), label


class Report:
    """Prints each figure as soon as it is measured, aligned."""

    def __call__(self, key: str, value: str) -> None:
        print(f"{key:<52}{value:>14}", flush=True)


def bench_data(args, ctx, report) -> None:
    """Our pipeline (decode cache + batch augmentation) vs a per-sample PIL DataLoader."""
    device, execution = ctx["device"], ctx["execution"]
    t0 = time.perf_counter()
    batches = ctx["train_batches"]()
    report("decode cache ready (first run builds it)", f"{time.perf_counter() - t0:.1f} s")
    stream = cycle(batches)

    def ours():
        images, *_ = next(stream)
        execution.inputs(ctx["augment"](images.to(device, non_blocking=True)))

    rate = timed(ours, args.batch_size, device, args.steps, args.repeats)
    report("data pipeline, ours (img/s)", f"{rate:,.0f}")
    if not args.baseline:
        return
    loader = DataLoader(PilDataset(ctx["samples"](args.data), ctx["spec"], True),
                        batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        drop_last=True, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda")
    base_stream = cycle(loader)
    calls = max(1, args.baseline_images // args.batch_size)
    base = timed(lambda: next(base_stream)[0].to(device, non_blocking=True), args.batch_size,
                 device, calls, args.repeats, warmup=1)
    report("data pipeline, per-sample PIL DataLoader (img/s)", f"{base:,.0f}")
    report("data pipeline speed-up", f"{rate / base:.1f}x")


def bench_train(args, ctx, report) -> None:
    """The optimisation step alone (batch already on the device), then end to end."""
    device, execution, model = ctx["device"], ctx["execution"], ctx["model"]
    optimizer = make_optimizer(model, "sgd", 0.1, weight_decay=5e-4, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=execution.amp_dtype == torch.float16)
    train_model = torch.compile(model) if args.compile else model
    batches = ctx["train_batches"]()
    fixed = [t.to(device) for t in next(iter(batches))[:2]]

    def step(images, labels):
        train_step(train_model, images, labels, ctx["augment"], optimizer, scaler, execution,
                   label_smoothing=0.1)

    rate = timed(lambda: step(*fixed), args.batch_size, device, args.steps, args.repeats)
    report("train step, data on device (img/s)", f"{rate:,.0f}")
    stream = cycle(batches)

    def end_to_end():
        images, labels, _ = next(stream)
        step(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))

    rate = timed(end_to_end, args.batch_size, device, args.steps, args.repeats)
    report("train, end to end with our pipeline (img/s)", f"{rate:,.0f}")


def bench_eval(args, ctx, report) -> None:
    """Batched evaluation over the decode cache vs one image at a time; latency; per runtime."""
    device, spec = ctx["device"], ctx["spec"]
    num_classes = spec.num_classes
    val_batches = make_batches(ctx["samples"](args.eval_data), spec.geometry,
                               args.eval_batch_size, train=False, source=args.eval_data,
                               loading=ctx["loading"])
    count = sum(len(labels) for _, labels, _ in val_batches)
    samples = ctx["samples"](args.eval_data)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.runtimes:
            runtime = make_runtime(name, args, ctx, Path(folder))
            tag = "" if args.runtimes == ("torch",) else f" [{name}]"
            result = []

            def ours():
                result[:] = [evaluate_logits(runtime.logits, val_batches, num_classes,
                                             runtime.device)]

            rates[name] = timed(ours, count, device, 1, args.repeats, warmup=1)
            report(f"eval, batched ({count} images, img/s){tag}", f"{rates[name]:,.0f}")
            if args.model:
                report(f"eval top-1{tag}", f"{result[0].top1:.2%}")

            def predict_one(path):
                x = preprocess.eval_array(load_image(path), spec.geometry)[None]
                return runtime.array_logits(x).argmax(1).item()

            latencies = []  # the first few warm up (allocations); a tiny set keeps half
            for _, path in samples[:50]:
                t0 = time.perf_counter()
                predict_one(path)
                latencies.append(time.perf_counter() - t0)
            report(f"single-image latency, load + predict (ms, median){tag}",
                   f"{1000 * statistics.median(latencies[min(5, len(latencies) // 2):]):.2f}")
    first = args.runtimes[0]
    for name in args.runtimes[1:]:
        report(f"eval speed-up, {name} / {first}", f"{rates[name] / rates[first]:.2f}x")
    if args.baseline:
        model, execution = ctx["model"], ctx["execution"]
        subset = samples[:args.baseline_images]

        def one_by_one():
            evaluate(model, one_by_one_batches(subset, spec.geometry), execution, num_classes)

        one = timed(one_by_one, len(subset), device, 1, args.repeats, warmup=0)
        report("eval, one image at a time (img/s)", f"{one:,.0f}")
        report("eval speed-up", f"{rates[first] / one:.1f}x")


def make_runtime(name: str, args, ctx, folder: Path):
    """The ``name`` runtime of the benchmark's model (ONNX files written into ``folder``)."""
    spec, model = ctx["spec"], ctx["model"]
    if name == "torch":
        return TorchRuntime(model, ctx["execution"])
    path = folder / "float.onnx"
    if not path.exists():
        export_checked(spec, model, path)
    if name == "onnxruntime-int8":
        from utils.inference.onnx_quantize import (CALIBRATION_IMAGES, calibration_arrays, quantize,
                                                   sample_images)

        calibration = sample_images(ctx["samples"](args.data), CALIBRATION_IMAGES)
        quantize(path, folder / "int8.onnx", calibration_arrays(calibration, spec))
        path = folder / "int8.onnx"
    return OnnxRuntime(open_session(path), spec.mean, spec.std)


STAGE_FUNCTIONS = {"data": bench_data, "train": bench_train, "eval": bench_eval}




def measure(args: BenchmarkConfig) -> None:
    """Time every stage ``args.stages`` names, on the model and data it names, printing each
    figure as soon as it is measured."""
    device = resolve_device(args.device)
    samples: dict[str, list] = {}
    train_images = len(read_annotation(args.data, read_classes(args.classes)))
    if train_images < args.batch_size:  # a small set is measured with the batches it has
        warn(f"{args.data} holds {train_images} images: timing batches of {train_images}, "
             f"not {args.batch_size}")
        args = dataclasses.replace(args, batch_size=train_images)
    if args.model:
        spec, weights, _ = read_model(ModelSource(args.model, classes_file=args.classes))
        model = build_model(spec, weights, args.model)
    else:
        spec = ModelSpec.create(args.backbone, read_classes(args.classes), args.input_shape,
                                width_mult=args.width_mult)
        model = spec.build()
    execution = Execution.create(spec, device, args.amp, args.channels_last)
    h, w = spec.input_shape
    print(f"{spec.backbone} {h}x{w}, batch {args.batch_size}, {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"amp {execution.amp_dtype}, channels_last {args.channels_last}, "
          f"torch {torch.__version__}")
    torch.manual_seed(0)

    def read(annotation):
        if annotation not in samples:
            samples[annotation] = read_annotation(annotation, spec.classes)
        return samples[annotation]

    ctx = {
        "device": device, "spec": spec, "execution": execution,
        "augment": BatchAugment(spec.input_shape, spec.small_input),
        "model": execution.prepare(model),
        "samples": read,
        "loading": Loading(args.workers, device=device),
        "train_batches": lambda: make_batches(read(args.data), spec.geometry, args.batch_size,
                                              train=True, source=args.data,
                                              loading=ctx["loading"]),
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    report = Report()
    for stage in args.stages:
        STAGE_FUNCTIONS[stage](args, ctx, report)
    if device.type == "cuda":
        report("peak GPU memory (MiB)", f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f}")
    report("peak host memory (MiB)",
           f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f}")
