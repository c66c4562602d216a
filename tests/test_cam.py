"""Grad-CAM: it points at the evidence, and runs on every backbone at small and large inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import nets
from nets.common import ImageClassifier
from utils.evaluation.cam import grad_cam, overlay, save_overlay

SIDE, SQUARE = 32, 8
RED, GREEN, BLUE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def squares(n: int, seed: int):
    """Noisy images with two squares in two different corners: a green one everywhere,
    and a red one (class 1) or a blue one (class 0).  Returns images, labels, and the
    corner (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of the red/blue square.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIDE, SIDE, generator=g) * 0.6 + 0.2
    labels = torch.randint(0, 2, (n,), generator=g)
    corners = torch.stack([torch.randperm(4, generator=g)[:2] for _ in range(n)])
    for i in range(n):
        for corner, colour in zip(corners[i].tolist(), (RED if labels[i] else BLUE, GREEN)):
            top = 2 if corner < 2 else SIDE - SQUARE - 2
            left = 2 if corner % 2 == 0 else SIDE - SQUARE - 2
            x[i, :, top:top + SQUARE, left:left + SQUARE] = torch.tensor(colour)[:, None, None]
    return (x - 0.5) / 0.25, labels, corners[:, 0]


class TinyNet(ImageClassifier):
    """Two convolutions and the shared head: trains in about a second on a CPU."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.classifier = nn.Linear(width, 2)


def peak_corner(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(1).argmax(1)
    return (peak // SIDE >= SIDE // 2).long() * 2 + (peak % SIDE >= SIDE // 2).long()


def test_the_map_of_a_class_peaks_where_its_evidence_is():
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(40):
        x, y, _ = squares(32, seed=100 + step)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y, corner = squares(64, seed=1)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95  # it did learn the task
    red = y == 1
    maps, classes = grad_cam(model, x[red])  # the predicted class: "red square"
    assert classes.tolist() == [1] * int(red.sum())
    # The red square's corner, never the green distractor's (an untrained net: 0-50%).
    assert (peak_corner(maps) == corner[red]).all()


@pytest.mark.parametrize("name", nets.available())
def test_maps_for_every_backbone_at_32_and_224_px(name):
    torch.manual_seed(0)
    thin = {"width_mult": 0.25} if name.startswith("mobilenet") else {}
    for side in (32, 224):
        model = nets.get_model(name, 3, input_shape=(side, side), **thin)
        model.freeze_backbone()  # a frozen backbone (no gradients) is no obstacle
        x = torch.randn(2 if side == 32 else 1, 3, side, side)
        with torch.inference_mode():  # nor is a caller's inference mode
            maps, classes = grad_cam(model, x)
        assert model.training  # the mode it was in, restored
        assert maps.shape == (len(x), side, side)
        assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
        if side == 32:
            with torch.no_grad():
                assert classes.tolist() == model.eval()(x).argmax(1).tolist()
            _, chosen = grad_cam(model, x, target=torch.tensor([0, 2]))
            assert chosen.tolist() == [0, 2]


def test_overlay_colours_the_hot_region_and_keeps_the_rest(tmp_path):
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    heat = np.zeros((8, 8), dtype=np.float32)  # a coarse map is resized to the image
    heat[:4, :4] = 1.0
    blended = overlay(image, heat)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert (blended[20:, 20:] == 128).all()  # cold: the picture unchanged
    assert np.abs(blended[:12, :12].astype(int) - 128).max() > 40  # hot: coloured
    path = save_overlay(tmp_path / "cam" / "x.png",
                        torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(heat))
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (224, 224)  # enlarged to be readable
