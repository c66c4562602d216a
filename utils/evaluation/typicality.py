"""How typical an image's activations are: the score behind the "unknown" answer.

A network trained on a few classes answers an image of none of them with a confident class:
by its last layers, random noise looks like "edges everywhere, a triangle, 97%", and no score
computed from the logits (maximum probability, maximum logit, energy) tells it from a real
test image.  Its middle blocks, though, see activation statistics that no training image
produced.  So a model keeps, for each of its backbone blocks, one Gaussian (class-agnostic,
shrunk covariance) of the block's output averaged over space, fitted on the training images;
each block's score (minus the squared Mahalanobis distance to the mean) is standardised by
its mean and spread on those images, and an image's *typicality* is its lowest standardised
block score: the depth at which it looks least like the training data.  No block is chosen
by looking at unknown images: every block votes and the most atypical one decides.  On the
shapes experiment (README, "Unknown images") it separated noise and solid colours from test
images with AUROC 0.997-1.000 where the logit scores reached 0.04-0.64.

The score is computed in the network's own forward pass (:class:`TypicalNetwork`: logits and
typicality, one pass), so the PyTorch runtime and an exported ``.onnx`` model (its second
output, ``typicality``) compute the same thing.  What it stores (:func:`to_state`): the
chosen blocks' indices, one mean and one precision matrix per block, and the standardisation,
about 60 KB for MobileNetV2 x0.25 and 1 MB at full width; a checkpoint keeps it under
``typicality`` beside its weights.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

from utils.cli import UserError
from utils.model.execution import Execution

#: Blocks wider than this are left out (a 512x512 precision matrix is 1 MiB in float32; a
#: MobileNetV2's 1280-channel last convolution would be 6.5 MiB).
MAX_CHANNELS = 512
#: At most this many blocks, evenly spaced (a VGG's every conv, BatchNorm and ReLU would
#: otherwise all count, and say the same thing).
MAX_BLOCKS = 24
#: The Gaussians are fitted on at most this many training images (evenly spaced over the
#: training list): a few thousand pin a 512-dimensional covariance down, and the pass stays
#: short.
FIT_IMAGES = 5000
#: Each covariance is shrunk towards a multiple of the identity by this share of its mean
#: eigenvalue: blocks have more channels than a small training set has images.
SHRINKAGE = 0.1


def choose_blocks(network: nn.Module, input_shape: Sequence[int]) -> list[int]:
    """Indices of the children of ``network.features`` whose outputs are scored: those with
    parameters (activations, pools and identities repeat their input's statistics), giving a
    (N, C, H, W) map of at most :data:`MAX_CHANNELS` channels; at most :data:`MAX_BLOCKS`
    of them, evenly spaced."""
    param = next(network.parameters())
    x = torch.zeros(1, 3, *input_shape, device=param.device)
    was_training = network.training
    network.eval()
    chosen = []
    try:
        with torch.inference_mode():
            for i, child in enumerate(network.features):
                x = child(x)
                if next(child.parameters(), None) is not None and x.dim() == 4 \
                        and x.shape[1] <= MAX_CHANNELS:
                    chosen.append(i)
    finally:
        network.train(was_training)
    if len(chosen) > MAX_BLOCKS:
        step = len(chosen) / MAX_BLOCKS
        chosen = [chosen[math.floor(k * step)] for k in range(MAX_BLOCKS)]
    return chosen


def pooled_outputs(network: nn.Module, x: torch.Tensor, blocks: Iterable[int]
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The logits of ``x`` and, for each block of ``blocks``, its output averaged over space
    (float32), in one forward pass through ``features`` then the head."""
    wanted, pooled = set(blocks), []
    for i, child in enumerate(network.features):
        x = child(x)
        if i in wanted:  # taken now: an in-place activation next would change x
            pooled.append(x.float().mean((2, 3)))
    return network.forward_head(x), pooled


class Typicality(nn.Module):
    """The fitted Gaussians: pooled block outputs -> one typicality per image."""

    def __init__(self, blocks: Sequence[int], means: Sequence[torch.Tensor],
                 precisions: Sequence[torch.Tensor], centre: torch.Tensor,
                 spread: torch.Tensor):
        super().__init__()
        self.blocks = [int(b) for b in blocks]
        for i, (mean, precision) in enumerate(zip(means, precisions)):
            self.register_buffer(f"mean{i}", mean.float())
            self.register_buffer(f"precision{i}", precision.float())
        self.register_buffer("centre", centre.float())
        self.register_buffer("spread", spread.float())

    def block_scores(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, blocks) standardised scores: 0 is as typical as the average training image,
        -10 is ten training spreads below it."""
        columns = []
        for i, x in enumerate(pooled):
            d = x - getattr(self, f"mean{i}")
            columns.append(-((d @ getattr(self, f"precision{i}")) * d).sum(1))
        return (torch.stack(columns, 1) - self.centre) / self.spread

    def forward(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per image, the lowest standardised block score (higher = more typical)."""
        return self.block_scores(pooled).min(1).values


class TypicalNetwork(nn.Module):
    """A network with a second output: ``(logits, typicality)`` from one forward pass."""

    def __init__(self, network: nn.Module, typicality: Typicality):
        super().__init__()
        if max(typicality.blocks, default=-1) >= len(network.features):
            raise UserError("the model's typicality statistics name blocks its network does "
                            "not have: the checkpoint is damaged")
        self.network, self.typicality = network, typicality

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, pooled = pooled_outputs(self.network, x, self.typicality.blocks)
        return logits, self.typicality(pooled)


def scored(module: TypicalNetwork, images: torch.Tensor, execution: Execution
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits and typicality of a uint8 image batch, computed as
    :meth:`Execution.logits <utils.model.execution.Execution.logits>` computes logits."""
    with torch.inference_mode(), execution.autocast():
        outputs = [module(part) for part in execution.passes(images)]
    return (torch.cat([o[0] for o in outputs]).float(),
            torch.cat([o[1] for o in outputs]).float())


@torch.inference_mode()
def fit(network: nn.Module, batches, execution: Execution, input_shape: Sequence[int]
        ) -> Typicality:
    """Fit the Gaussians on ``batches`` (the training images, evaluation preprocessing) of
    ``network`` in eval mode, as inference runs it (:meth:`Execution.for_inference`)."""
    blocks = choose_blocks(network, input_shape)
    if not blocks:
        raise ValueError("the network has no block to score")
    columns: list[list[torch.Tensor]] = [[] for _ in blocks]
    for images, _, _ in batches:
        with execution.autocast():
            for part in execution.passes(images):
                _, pooled = pooled_outputs(network, part, blocks)
                for column, x in zip(columns, pooled):
                    column.append(x.cpu())
    features = [torch.cat(column).double() for column in columns]
    means, precisions = [], []
    for x in features:
        mean = x.mean(0)
        centred = x - mean
        cov = centred.T @ centred / max(len(x), 1)
        eye = torch.eye(cov.shape[0], dtype=cov.dtype)
        cov = (1 - SHRINKAGE) * cov + SHRINKAGE * cov.trace() / cov.shape[0] * eye
        means.append(mean)
        precisions.append(torch.linalg.pinv(cov, hermitian=True))
    raw = Typicality(blocks, means, precisions, torch.zeros(len(blocks)),
                     torch.ones(len(blocks)))
    scores = raw.block_scores([x.float() for x in features])
    return Typicality(blocks, means, precisions, scores.mean(0),
                      scores.std(0, unbiased=False).clamp(min=1e-12))


def fit_sample(samples: Sequence, limit: int = FIT_IMAGES) -> list:
    """At most ``limit`` of ``samples``, evenly spaced (every class keeps its share)."""
    step = max(1, math.ceil(len(samples) / limit))
    return list(samples[::step])


# ---------------------------------------------------------------------- stored form
def to_state(typicality: Typicality) -> dict:
    """What a checkpoint stores (tensors and lists of them: ``weights_only`` loads it)."""
    count = len(typicality.blocks)
    return {"blocks": torch.tensor(typicality.blocks, dtype=torch.long),
            "means": [getattr(typicality, f"mean{i}").cpu() for i in range(count)],
            "precisions": [getattr(typicality, f"precision{i}").cpu() for i in range(count)],
            "centre": typicality.centre.cpu(), "spread": typicality.spread.cpu()}


def from_state(state, source: str) -> Typicality:
    """The :class:`Typicality` a checkpoint stores, every tensor checked: a damaged file is
    a one-line :class:`UserError`, never a shape error mid-prediction."""
    def damaged(what: str) -> UserError:
        return UserError(f"{source}: the typicality statistics are damaged ({what})")

    if not isinstance(state, dict):
        raise damaged("not a dict")
    blocks, means, precisions = (state.get(k) for k in ("blocks", "means", "precisions"))
    centre, spread = state.get("centre"), state.get("spread")
    if not (isinstance(blocks, torch.Tensor) and blocks.dim() == 1 and len(blocks)
            and not blocks.is_floating_point() and int(blocks.min()) >= 0):
        raise damaged("blocks")
    count = len(blocks)
    for name, value in (("means", means), ("precisions", precisions)):
        if not (isinstance(value, list) and len(value) == count
                and all(isinstance(t, torch.Tensor) for t in value)):
            raise damaged(name)
    for name, value in (("centre", centre), ("spread", spread)):
        if not (isinstance(value, torch.Tensor) and value.shape == (count,)):
            raise damaged(name)
    for mean, precision in zip(means, precisions):
        if mean.dim() != 1 or precision.shape != (len(mean), len(mean)):
            raise damaged("shapes")
    tensors = [*means, *precisions, centre, spread]
    if not all(t.is_floating_point() and bool(torch.isfinite(t).all()) for t in tensors) \
            or not bool((spread > 0).all()):
        raise damaged("values")
    return Typicality(blocks.tolist(), means, precisions, centre, spread)
