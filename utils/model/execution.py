"""How a forward pass runs: on which device, normalised how, in which precision and layout.

One :class:`Execution` is shared by the training step, the per-epoch evaluation, ``eval.py``
and ``predict.py``, so they cannot drift apart (a model validated in bf16 and channels-last
is also used that way).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch

from utils.data.preprocess import normalize
from utils.model.precision import amp_dtype

#: A CPU runs a big batch slower per image than small passes: every layer's output is a
#: fresh allocation too large to recycle, so the memory is handed back to the system and
#: page-faulted in again (2 cores, MobileNetV2: eval.py at 32x32 ran 152 img/s in passes
#: of 1024 images, 225 in passes of 32; at 224x224 a pass of 32 ran 41 img/s, of 4, 77).
#: CPU inference passes are cut to this size.
CPU_PASS_PIXELS = 2**18
CPU_PASS_IMAGES = 32

@dataclass(frozen=True)
class Execution:
    """Where and how a model computes.

    Attributes:
        device: where inputs are moved and computed.
        mean, std: the model's input normalisation (from its :class:`ModelSpec`).
        amp_dtype: autocast dtype, ``None`` for full precision.
        channels_last: feed inputs in channels-last memory format.
    """

    device: torch.device
    mean: tuple[float, ...]
    std: tuple[float, ...]
    amp_dtype: torch.dtype | None = None
    channels_last: bool = True

    @classmethod
    def create(cls, spec, device: torch.device, amp: str = "auto",
               channels_last: bool = True) -> "Execution":
        """The execution of ``spec``'s model on ``device`` (``amp`` as in :func:`amp_dtype`)."""
        return cls(device, tuple(spec.mean), tuple(spec.std), amp_dtype(amp, device),
                   channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` moved to the device, in the memory format its inputs will have."""
        return model.to(self.device, memory_format=self.memory_format)

    def for_inference(self, model: torch.nn.Module) -> torch.nn.Module:
        """The network inference runs: on a CPU, a copy of ``model`` (in eval mode) with
        every BatchNorm folded into the convolution before it (:func:`fold_batchnorm`).

        BatchNorm took 0.9 s of a 2.4 s evaluation of 2,000 CIFAR images on the 2-core
        CPU, as much as the convolutions.  Training's validation and test, ``eval.py`` and
        ``predict.py`` all evaluate through here, so their figures stay identical.
        """
        if self.device.type != "cpu":
            return model
        return self.prepare(fold_batchnorm(model))

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 image batch as the model's input: on the device, normalised, laid out."""
        images = images.to(self.device, non_blocking=True)
        return normalize(images, self.mean, self.std).contiguous(memory_format=self.memory_format)

    def autocast(self):
        """The autocast context of :attr:`amp_dtype` (none for full precision)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def passes(self, images: torch.Tensor) -> list[torch.Tensor]:
        """A uint8 image batch as the model's inputs (:meth:`inputs`), cut into small passes
        on a CPU.  For inference (the model in eval mode): splitting changes nothing but
        speed, since every image is then computed on its own."""
        x = self.inputs(images)
        if self.device.type != "cpu":
            return [x]
        per_pass = CPU_PASS_PIXELS // (x.shape[-2] * x.shape[-1])
        return list(x.split(max(1, min(CPU_PASS_IMAGES, per_pass))))

    def logits(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a uint8 image batch, in small passes on a CPU."""
        with self.autocast():
            return torch.cat([model(part) for part in self.passes(images)]).float()


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in eval mode in which each ``Conv2d`` directly followed by a
    ``BatchNorm2d`` in a ``Sequential`` absorbs it (the BatchNorm becomes ``Identity``).

    The logits are those of ``model`` in eval mode up to float rounding; layers outside
    that pattern (a ResNet block's named ``conv1``/``bn1``) are left as they are.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if not isinstance(module, torch.nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, torch.nn.Conv2d) and type(bn) is torch.nn.BatchNorm2d:
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = torch.nn.Identity()
    return folded
