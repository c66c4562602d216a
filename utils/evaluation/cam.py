"""Grad-CAM: where in the image the evidence for a class lies (Selvaraju et al., 2017).

Works for every network of ``nets/`` through the interface they share:
``forward_features(x)`` gives the last feature map A (N, C, h, w) and ``forward_head(A)``
the logits y.  The map of class c is ``relu(sum_k w_k A_k)`` with ``w_k`` the spatial mean
of dy_c/dA_k, upsampled to the input size and scaled to [0, 1].

Only the head is differentiated: the backbone runs without gradients and A is detached,
so a map costs one forward pass plus the head's backward, and works on a frozen backbone.

>>> x = normalize(clf.preprocess([image]).to(clf.device), clf.mean, clf.std)
>>> maps, classes = grad_cam(clf.model, x)                 # the predicted class by default
>>> save_overlay("cat_cam.png", clf.preprocess([image])[0], maps[0])
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image


def grad_cam(model: torch.nn.Module, x: torch.Tensor,
             target: int | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-activation maps of a normalised batch ``x`` (N, 3, H, W).

    Args:
        model: a network with ``forward_features`` and ``forward_head``.
        x: the batch as the model takes it (normalised float).
        target: the class to explain: one id for the whole batch, one per image, or
            ``None`` for each image's predicted class.

    Returns:
        ``(maps, classes)``: float maps (N, H, W) in [0, 1] on ``x``'s device (all zeros
        where no location supports the class), and the class each map explains (N,).
    """
    was_training = model.training
    model.eval()
    try:
        # inference_mode(False): a caller's inference mode would forbid the backward.
        with torch.inference_mode(False), torch.no_grad():
            features = model.forward_features(x.clone()).float()
        features = features.detach().requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            logits = model.forward_head(features)
            if target is None:
                classes = logits.argmax(1)
            else:
                classes = torch.as_tensor(target, device=logits.device).long().expand(len(x))
            score = logits.gather(1, classes[:, None]).sum()
            grads, = torch.autograd.grad(score, features)
    finally:
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    high = cam.amax(dim=(1, 2), keepdim=True)
    # A map flat to float precision says nothing about location: all zeros, not noise.
    flat = (high - low) <= 1e-6 * high
    maps = torch.where(flat, torch.zeros_like(cam), (cam - low) / (high - low))
    return maps, classes.detach()


def as_rgb_array(image) -> np.ndarray:
    """(H, W, 3) uint8 array of a PIL image, an (H, W, 3) array or a (3, H, W) tensor."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] == 3:
            image = image.permute(1, 2, 0)
        image = image.numpy()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image, got {array.dtype} {array.shape}")
    return array


def overlay(image, heatmap, alpha: float = 0.55, colormap: str = "turbo") -> np.ndarray:
    """``image`` with ``heatmap`` (values in [0, 1], any size) blended over it in colour.

    The colour's weight grows with the heat, so cold regions keep the picture as it is and
    the evidence stands out.  Returns an (H, W, 3) uint8 array the size of ``image``.
    """
    rgb = as_rgb_array(image).astype(np.float32)
    heat = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) \
        else np.asarray(heatmap, dtype=np.float32)
    if heat.shape != rgb.shape[:2]:
        heat = np.asarray(Image.fromarray(heat).resize(
            (rgb.shape[1], rgb.shape[0]), Image.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)[..., None]
    colour = colormaps[colormap](heat[..., 0])[..., :3].astype(np.float32) * 255
    weight = alpha * heat
    return np.round(rgb * (1 - weight) + colour * weight).astype(np.uint8)


def overlay_image(image, heatmap, min_side: int = 224) -> Image.Image:
    """:func:`overlay` as a PIL image, enlarged so its shorter side is at least ``min_side``.

    Model inputs are often tiny (32x32): enlarging keeps the picture readable while the map
    is resampled smoothly from its own resolution.
    """
    rgb = Image.fromarray(as_rgb_array(image))
    scale = max(1.0, min_side / min(rgb.size))
    if scale > 1:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.BICUBIC)
    return Image.fromarray(overlay(rgb, heatmap))


def save_overlay(path: str | os.PathLike, image, heatmap, min_side: int = 224) -> Path:
    """Write :func:`overlay_image` as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_image(image, heatmap, min_side).save(path, format="PNG")
    return path
