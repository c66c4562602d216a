"""Counting a network's cost: parameters, multiply-adds, depthwise-separable savings, latency.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2); it counts
convolutions and matrix products, the layers that dominate the cost.  Everything here runs
on the model's device: build the model under ``torch.device("meta")`` to count for free
(no memory for weights, no arithmetic), on a real device only to time it.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def _macs(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


def _example_input(model: nn.Module, input_shape: tuple[int, int],
                   in_channels: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.zeros(1, in_channels, *input_shape, device=device)


def count_macs(model: nn.Module, input_shape: tuple[int, int], in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass (eval mode) on one image of ``input_shape`` (H, W)."""
    was_training = model.training
    try:
        with torch.no_grad():
            return _macs(model.eval(), _example_input(model, input_shape, in_channels))
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class SeparableCost:
    """One depthwise-separable layer: a Dk x Dk depthwise conv on M channels followed by a
    1x1 pointwise conv to N channels, against the standard Dk x Dk conv from M to N channels
    that it replaces (same stride, same output size)."""

    name: str
    kernel: int                 # Dk
    in_channels: int            # M
    out_channels: int           # N
    output_size: tuple[int, int]
    depthwise_macs: int
    pointwise_macs: int
    standard_macs: int

    @property
    def ratio(self) -> float:
        """Measured (depthwise + pointwise) / standard multiply-adds."""
        return (self.depthwise_macs + self.pointwise_macs) / self.standard_macs

    @property
    def formula(self) -> float:
        """The paper's prediction for :attr:`ratio`: 1/N + 1/Dk²."""
        return 1 / self.out_channels + 1 / self.kernel ** 2


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.groups == 1


def separable_costs(model: nn.Module, input_shape: tuple[int, int],
                    in_channels: int = 3) -> list[SeparableCost]:
    """Every depthwise conv directly followed by a 1x1 conv, with its measured cost.

    That is each block of MobileNetV1, and the depthwise + linear projection of each
    MobileNetV2 block (its 1x1 expansion comes before and is not part of the pair).
    Each conv is counted by the FLOP counter on the input it sees in a forward pass; the
    standard conv is built with the depthwise conv's kernel, stride and padding and
    counted on the same input.
    """
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    # Weightless stand-ins of each conv's input and output: counting them costs nothing.
    inputs: dict[nn.Module, torch.Tensor] = {}
    outputs: dict[nn.Module, torch.Tensor] = {}

    def remember(module, args, output):
        inputs[module] = torch.empty_like(args[0], device="meta")
        outputs[module] = torch.empty_like(output, device="meta")

    hooks = [m.register_forward_hook(remember) for _, m in convs]
    try:
        count_macs(model, input_shape, in_channels)
    finally:
        for hook in hooks:
            hook.remove()

    costs = []
    for (name, dw), (_, pw) in zip(convs, convs[1:]):
        if not (_is_depthwise(dw) and _is_pointwise(pw)):
            continue
        standard = nn.Conv2d(dw.in_channels, pw.out_channels, dw.kernel_size, dw.stride,
                             dw.padding, bias=False, device="meta")
        costs.append(SeparableCost(
            name=name, kernel=dw.kernel_size[0], in_channels=dw.in_channels,
            out_channels=pw.out_channels, output_size=tuple(outputs[pw].shape[-2:]),
            depthwise_macs=_macs(_meta_conv(dw), inputs[dw]),
            pointwise_macs=_macs(_meta_conv(pw), inputs[pw]),
            standard_macs=_macs(standard, inputs[dw])))
    return costs


def _meta_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A weightless copy of ``conv`` (same configuration) for counting."""
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                     device="meta")


def measure_latency(model: nn.Module, input_shape: tuple[int, int], in_channels: int = 3,
                    runs: int = 20, warmup: int = 3) -> float:
    """Median seconds for one image through ``model`` (eval mode, ``torch.inference_mode``)."""
    model.eval()
    x = _example_input(model, input_shape, in_channels)
    synchronize = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            synchronize()
            start = time.perf_counter()
            model(x)
            synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)
