"""Print a network's size and cost: parameters, multiply-adds, depthwise-separable savings.

    python summary.py --backbone mobilenetv1 --input-shape 224 224 [--width-mult 0.5] [--latency]

MACs are counted by torch's FLOP counter (MACs = FLOPs / 2) on weightless "meta" tensors,
so even VGG16 costs nothing to count.  For every depthwise-separable layer the measured
cost against the standard convolution it replaces is printed beside the MobileNet paper's
formula 1/N + 1/Dk^2.  ``--latency`` also times one image on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import nets
from utils.cli import UserError, run, user_errors
from utils.settings import at_least, between, parse, setting


@dataclass
class SummaryConfig:
    """Which network to describe, and whether to time it."""

    backbone: str | None = setting(None, "the network (required): "
                                   f"{', '.join(nets.available())}")
    input_shape: tuple[int, int] = setting((224, 224), "image size (below 96 the small-input "
                                           "stem)")
    width_mult: float | None = setting(None, "width multiplier α (MobileNets only; 1.0 when "
                                       "not given)")
    num_classes: int = setting(1000, "outputs", valid=between(1, 1_000_000))
    in_channels: int = setting(3, "image channels", valid=between(1, 64))
    latency: bool = setting(False, "also time single-image inference on the CPU", switch=True)
    runs: int = setting(20, "timed runs for --latency (median)", valid=between(1, 10_000))
    threads: int | None = setting(None, "CPU threads for --latency; 1 gives steadier figures "
                                  "on a busy machine", valid=at_least(1, high=1024),
                                  auto="torch's, one per core")

    def check(self) -> None:
        if self.backbone is None:
            raise UserError("--backbone is required (one of: "
                            f"{', '.join(nets.available())})")


def _millions(n: float) -> str:
    return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.2f} M"


def main(argv: list[str] | None = None) -> int:
    import torch  # after the settings: a bad flag is answered without loading torch

    from nets.profile import count_macs, count_parameters, measure_latency, separable_costs

    args, _ = parse(SummaryConfig, argv, description=__doc__.split("\n\n")[0])
    shape = tuple(args.input_shape)
    build = dict(name=args.backbone, num_classes=args.num_classes, input_shape=shape,
                 in_channels=args.in_channels,
                 **({} if args.width_mult is None else {"width_mult": args.width_mult}))
    with torch.device("meta"), user_errors(ValueError, KeyError):
        model = nets.get_model(**build)

    params = count_parameters(model)
    macs = count_macs(model, shape, args.in_channels)
    print(f"{args.backbone}: input {shape[0]}x{shape[1]}x{args.in_channels}, "
          f"width_mult {args.width_mult or 1.0:g}, {args.num_classes} classes")
    print(f"parameters  {params:,} ({_millions(params)})")
    print(f"MACs        {macs:,} ({_millions(macs)}; FLOPs / 2, torch.utils.flop_counter)")
    if args.latency:
        if args.threads:
            torch.set_num_threads(args.threads)
        cpu_model = nets.get_model(**build)
        seconds = measure_latency(cpu_model, shape, args.in_channels, runs=args.runs)
        threads = torch.get_num_threads()
        print(f"latency     {seconds * 1e3:.1f} ms (CPU, 1 image, median of {args.runs}, "
              f"{threads} thread{'s' if threads > 1 else ''})")

    costs = separable_costs(model, shape, args.in_channels)
    if costs:
        print("\ndepthwise-separable layers: cost against a standard Dk x Dk conv from M to N")
        print(f"{'layer':<24}{'Dk':>3}{'M':>6}{'N':>6}{'output':>10}{'dw+pw MACs':>14}"
              f"{'standard MACs':>15}{'ratio':>9}{'1/N+1/Dk²':>11}")
        for c in costs:
            out = f"{c.output_size[0]}x{c.output_size[1]}"
            print(f"{c.name:<24}{c.kernel:>3}{c.in_channels:>6}{c.out_channels:>6}{out:>10}"
                  f"{c.depthwise_macs + c.pointwise_macs:>14,}{c.standard_macs:>15,}"
                  f"{c.ratio:>9.4f}{c.formula:>11.4f}")
    return 0


if __name__ == "__main__":
    run(main)
