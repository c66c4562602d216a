"""The networks, built from scratch, and a registry to create them by name.

>>> model = get_model("mobilenetv2", num_classes=10, input_shape=(32, 32), width_mult=0.5)
>>> model.freeze_backbone()          # train the head only, then unfreeze_backbone()

Every model has a ``features`` backbone and a ``classifier`` head, ``forward_features`` /
``forward_head``, and ``freeze_backbone`` / ``unfreeze_backbone``.  VGG16, MobileNetV2 and the
ResNets use torchvision's parameter names, so its ImageNet weights load key-for-key.

This package depends on torch alone: bad arguments raise ``ValueError`` / ``KeyError`` (the
scripts turn them into one-line errors) and weight files are read by the caller.

Importing it does not import torch: the input-size rules (:mod:`nets.geometry`) and the
pretrained configs (:mod:`nets.registry`) serve torch-free inference (an ``.onnx`` model's
description), and torch loads with the first use of a network or weights.
"""
from __future__ import annotations

import importlib

from nets.geometry import MAX_INPUT, MIN_INPUT, SMALL_INPUT, check_input_shape, is_small_input
from nets.registry import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, register_model

#: What loads torch, and the module that has it.
_LAZY = {**dict.fromkeys(("get_model", "available", "arguments", "get_entry"), "nets.factory"),
         **dict.fromkeys(("MODEL_DIR", "LoadReport", "download_weights", "load_pretrained",
                          "transfer_weights"), "nets.pretrained")}

__all__ = ["get_model", "available", "arguments", "register_model", "get_entry", "PretrainedCfg",
           "load_pretrained", "download_weights", "transfer_weights", "LoadReport",
           "is_small_input", "check_input_shape", "MIN_INPUT", "MAX_INPUT", "SMALL_INPUT",
           "IMAGENET_MEAN", "IMAGENET_STD", "MODEL_DIR"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
