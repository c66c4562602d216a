"""Measure where the time goes: data pipeline, training step, evaluation, latency.

    python benchmark.py --backbone mobilenetv2 --input-shape 32 32 --batch-size 512
    python benchmark.py --baseline     # also the per-sample PIL / one-by-one loops, same run
    python benchmark.py --stages eval --runtimes torch onnxruntime onnxruntime-int8 \
                        --model logs/<run>/best.pth      # inference engines side by side
    python benchmark.py --make-dataset photos --archive cifar10-jpg.tar.gz --out photos/
    python benchmark.py --time-to-accuracy 80 300   # train.py's defaults per wall-clock budget

Every figure is a median over repeated timed windows after a warm-up; GPU work is
synchronised before each clock read.  Needs annotation files (``txt_annotation.py``).
"""
from __future__ import annotations

import shlex

from utils.benchmarks import time_to_accuracy
from utils.benchmarks.config import BenchmarkConfig
from utils.benchmarks.datasets import cifar_subset, photo_set
from utils.benchmarks.stages import measure
from utils.cli import run
from utils.settings import parse


def main(argv=None) -> int:
    args, _ = parse(BenchmarkConfig, argv, description=__doc__.splitlines()[0])
    if args.make_dataset:
        make = {"photos": photo_set, "cifar-subset": cifar_subset}
        out = make[args.make_dataset](args.archive, args.out)
        print(f"wrote {sum(1 for p in out.rglob('*') if p.is_file())} images into {out}/")
    elif args.time_to_accuracy:
        train_args = ["--train-annotation", args.data, *shlex.split(args.train_args)]
        print(time_to_accuracy.report(time_to_accuracy.reach(list(args.time_to_accuracy),
                                                             train_args, args.eval_data)))
    else:
        measure(args)
    return 0


if __name__ == "__main__":
    run(main)
