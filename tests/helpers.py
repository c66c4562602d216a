"""Shared test helpers: tiny learnable image folders and running the real scripts."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
#: The shared data sets: ``../shared/data`` beside the clone (as CI has it), or $SHARED_DATA.
SHARED_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_CIFAR = SHARED_DATA / "cifar10-jpg.tar.gz"

#: One clearly separable colour per class, so a tiny model learns them in a few steps.
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (200, 30, 200),
           (30, 200, 200), (128, 128, 128), (250, 140, 0)]


def make_image(path: Path, colour, size=(16, 16), seed=0, fmt=None) -> Path:
    """Write an image of one colour, overlaid with a coarse 4x4 pattern and grain drawn from
    ``seed``: the colour says the class, the pattern makes every image a different picture
    (grain alone would make them near-copies to the import's duplicate audit)."""
    rng = np.random.default_rng(seed)
    h, w = size
    pattern = rng.integers(-60, 61, (4, 4, 3))
    pattern = pattern[np.arange(h) * 4 // h][:, np.arange(w) * 4 // w]
    pixels = np.clip(np.array(colour)[None, None, :] + pattern
                     + rng.integers(-25, 26, (h, w, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format=fmt)
    return path


def make_dataset(root: Path, classes=("cat", "dog"), train=6, test=3, size=(16, 16),
                 ext="png", seed=0) -> Path:
    """Create ``root/datasets/{train,test}/<class>/`` with ``train``/``test`` images each
    (datasets made with another ``seed`` share no picture with this one)."""
    for split, count in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            for i in range(count):
                make_image(root / "datasets" / split / name / f"{i:03d}.{ext}",
                           COLOURS[c % len(COLOURS)], size,
                           seed=zlib.crc32(f"{seed}/{split}{c}/{i}".encode()))
    return root / "datasets"


SHAPES = ("circle", "square", "triangle")


def make_shapes_dataset(root: Path, train=60, test=20, size=32, seed=0) -> Path:
    """``root/datasets/{train,test}/{circle,square,triangle}/``: one shape per image, in its
    class's colour family (red, green, blue), of random size, place and shade, on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, count in (("train", train), ("test", test)):
        for c, name in enumerate(SHAPES):
            for i in range(count):
                pixels = rng.integers(0, 90, (size, size, 3))
                r = rng.uniform(0.18, 0.35) * size
                cy, cx = rng.uniform(r, size - r, 2)
                if name == "circle":
                    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                elif name == "square":
                    mask = (abs(yy - cy) <= r * 0.85) & (abs(xx - cx) <= r * 0.85)
                else:
                    mask = (yy >= cy - r) & (yy <= cy + r) & (abs(xx - cx) <= (yy - cy + r) / 2)
                colour = np.full(3, 40)
                colour[c] = rng.integers(160, 256)
                pixels[mask] = colour + rng.integers(0, 40, 3)
                path = root / "datasets" / split / name / f"{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.astype(np.uint8)).save(path)
    return root / "datasets"


def listed(project: Path, *splits: str) -> list[str]:
    """The ``<class_id>;<path>`` lines of the project's annotation files of ``splits``."""
    return [line for split in splits
            for line in (Path(project) / f"cls_{split}.txt").read_text().splitlines()
            if line and not line.startswith("#")]


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


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) -> its bytes, and every link -> where
    it points: compare before/after."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)):
            b"link to " + os.fsencode(os.readlink(p)) if p.is_symlink() else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def make_cifar10_archive(path: Path, classes=("cat", "dog", "frog"), per_batch=4,
                         test=3, members=None) -> Path:
    """A tiny ``cifar-10-python.tar.gz`` in the official layout (pickled dict batches).

    Each of the five train batches holds ``per_batch`` images and the test batch ``test``;
    labels cycle through ``classes``. ``members`` limits which files are written (to build
    a damaged archive).
    """
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(0)

    def batch(name, n, offset):
        labels = [(offset + i) % len(classes) for i in range(n)]
        return {b"batch_label": name.encode(), b"labels": labels,
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"filenames": [f"img_{offset + i}.png".encode() for i in range(n)]}

    contents = {f"data_batch_{b}": batch(f"training batch {b} of 5", per_batch, (b - 1) * per_batch)
                for b in range(1, 6)}
    contents["test_batch"] = batch("testing batch 1 of 1", test, 0)
    contents["batches.meta"] = {b"label_names": [c.encode() for c in classes],
                                b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in contents.items():
            if members is not None and name not in members:
                continue
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@contextlib.contextmanager
def working_directory(path: Path):
    """Run a block from ``path``, as a script run there would (``monkeypatch.chdir`` is not
    available to module-scoped fixtures)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(previous)


def smooth_image(rng, size=(48, 64)) -> np.ndarray:
    """An (H, W, 3) uint8 picture that looks like one: smooth colour fields, a few edges and
    grain (pure noise drives every model to one corner)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fields = [np.sin(xx / rng.uniform(3, 30) + rng.uniform(0, 6))
              * np.cos(yy / rng.uniform(3, 30) + rng.uniform(0, 6)) for _ in range(3)]
    image = 127 + 100 * np.stack(fields, -1) + rng.normal(0, 15, (h, w, 3))
    image[(xx.astype(int) // 9 + yy.astype(int) // 7) % 5 == 0] += 50
    return np.clip(image, 0, 255).astype(np.uint8)


def calibrated_checkpoint(path: Path, classes=("cat", "dog", "fox"), backbone="mobilenetv1",
                          input_shape=(32, 32), crop_fraction=1.0, width_mult=0.25,
                          seed=0):
    """Save an untrained checkpoint whose outputs depend on its input, and return its spec.

    Random weights give near-uniform probabilities (every ReLU6 saturated or silent), which
    hide preprocessing and conversion errors.  Here BatchNorm statistics are measured on
    generated pictures and the head is scaled so logits spread over a few units: every
    pixel then moves the probabilities, which is what an export test needs.
    """
    import torch

    from utils.data.preprocess import eval_array, normalize
    from utils.model.checkpoint import make_checkpoint, save_checkpoint
    from utils.model.spec import ModelSpec

    spec = ModelSpec(backbone, tuple(classes), tuple(input_shape), crop_fraction=crop_fraction,
                     width_mult=width_mult)
    torch.manual_seed(seed)
    model = spec.build()
    rng = np.random.default_rng(seed)
    pictures = [Image.fromarray(smooth_image(rng)) for _ in range(48)]
    x = normalize(torch.from_numpy(np.stack([eval_array(p, spec.geometry) for p in pictures])),
                  spec.mean, spec.std)
    for module in model.modules():  # running statistics over all the pictures
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for chunk in x.split(16):
            model(chunk)
        model.eval()
        head = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)][-1]
        scale = 3.0 / float(model(x).std())
        head.weight.mul_(scale)
        head.bias.mul_(scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(make_checkpoint(spec, model.state_dict(), epoch=1, val_top1=0.5), path)
    return spec
