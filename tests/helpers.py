"""Shared test helpers: tiny learnable image folders and running the real scripts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"

#: One clearly separable colour per class, so a tiny model learns them in a few steps.
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (200, 30, 200),
           (30, 200, 200), (128, 128, 128), (250, 140, 0)]


def make_image(path: Path, colour, size=(16, 16), seed=0, fmt=None) -> Path:
    """Write a noisy solid-colour image (noise keeps every image distinct)."""
    rng = np.random.default_rng(seed)
    h, w = size
    pixels = np.clip(np.array(colour)[None, None, :] + rng.integers(-25, 26, (h, w, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format=fmt)
    return path


def make_dataset(root: Path, classes=("cat", "dog"), train=6, test=3, size=(16, 16),
                 ext="png") -> Path:
    """Create ``root/datasets/{train,test}/<class>/`` with ``train``/``test`` images each."""
    for split, count in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            for i in range(count):
                make_image(root / "datasets" / split / name / f"{i:03d}.{ext}",
                           COLOURS[c % len(COLOURS)], size, seed=hash((split, c, i)) % 2**31)
    return root / "datasets"


def run_script(script: str, *args, cwd: Path, timeout=300, input=None, env=None):
    """Run a top-level script as a user would (``python script.py ...``) from ``cwd``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, input=input,
                          env=full_env)


def assert_clean_error(result, *needles):
    """Exit code 2, no traceback, and a one-line ``error:`` naming the problem."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])
