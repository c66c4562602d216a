"""CIFAR-10 as a folder dataset: ``datasets/{train,test}/<class>/NNNNN.png``.

The source is the official "python version" archive (``cifar-10-python.tar.gz``), either a
local copy or downloaded once through torchvision into a cache folder (``model_data/``) and
checksum-verified.  Images are written as PNG, which is lossless, so the exported pixels are
exactly CIFAR-10's; ``NNNNN`` is the image's index in its split (batch order), which makes
every file traceable to the original arrays.

The batches are pickles.  A pickle can run arbitrary code when loaded, and a local archive
may come from anywhere, so they are read with an unpickler that only builds numpy arrays.
"""
from __future__ import annotations

import http.client
import importlib.util
import os
import pickle
import socket
import tarfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from utils.cli import UserError
from utils.data.importing import install_dataset
from utils.layout import DATASETS
from utils.names import class_name_problem

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FILENAME = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META = "batches.meta"
ARCHIVE_ENV = "CIFAR10_ARCHIVE"
#: A mirror of the official archive (same checksum) may replace the default URL.
URL_ENV = "CIFAR10_URL"
#: Seconds a connection may stall before the download gives up (offline machines fail fast).
TIMEOUT = 15

_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"
_OFFLINE_HINT = (f"give a local copy of {FILENAME} with --cifar10-archive PATH (or "
                 f"{ARCHIVE_ENV}=PATH), or import your own dataset with --from PATH")


def locate_archive(archive: str | os.PathLike | None, cache_dir: str | os.PathLike) -> Path:
    """The archive to read: ``archive`` if given, else the cached download, else a download."""
    if archive:
        path = Path(archive)
        if not path.is_file():
            raise UserError(f"CIFAR-10 archive {path} not found")
        return path
    cached = Path(cache_dir) / FILENAME
    # Only a download whose checksum matched is ever renamed to this name.
    return cached if cached.is_file() else download(cache_dir)


def download(cache_dir: str | os.PathLike) -> Path:
    """Download and checksum the official archive into ``cache_dir``; one-line error offline."""
    # torchvision pulls in torch (slow to import): only pay for it when downloading.
    from torchvision.datasets.utils import download_url

    cache_dir = Path(cache_dir)
    url = os.environ.get(URL_ENV) or URL
    partial = cache_dir / f"{FILENAME}.part"
    print(f"downloading CIFAR-10 from {url} into {cache_dir}/ ...", flush=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT)  # torchvision's urlopen calls pass no timeout
    try:
        download_url(url, str(cache_dir), partial.name, MD5)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"cannot download CIFAR-10 ({reason}): {_OFFLINE_HINT}") from None
    except RuntimeError:  # torchvision's checksum failure
        partial.unlink(missing_ok=True)
        raise UserError(f"the CIFAR-10 download from {url} failed its checksum: "
                        f"{_OFFLINE_HINT}") from None
    finally:
        socket.setdefaulttimeout(previous)
    final = cache_dir / FILENAME
    os.replace(partial, final)
    return final


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numpy arrays; refuses every other global."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                *((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("_reconstruct", "scalar"))}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        # The official batches name numpy.core, which numpy 2 renamed (the old name warns).
        module = module.replace("numpy.core.", f"{_NUMPY_CORE}.")
        return super().find_class(module, name)


def _unpickle(tar: tarfile.TarFile, member: str) -> dict[str, object]:
    """One batch file as a dict with ``str`` keys (the official files have bytes keys)."""
    info = tar.getmember(f"{FOLDER}/{member}")
    if not info.isfile():
        raise UserError(f"{info.name} in the CIFAR-10 archive is not a regular file")
    try:
        data = _ArrayUnpickler(tar.extractfile(info), encoding="bytes").load()
    except (tarfile.TarError, EOFError, zlib.error, OSError):
        raise  # a damaged archive, reported as such by the caller
    except Exception as exc:  # noqa: BLE001 - untrusted bytes can fail in any way
        raise UserError(f"{info.name} in the CIFAR-10 archive cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{info.name} in the CIFAR-10 archive is not a batch dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def read_archive(archive: str | os.PathLike) -> tuple[list[str], dict[str, tuple]]:
    """Class names and ``{split: (images (N, 32, 32, 3) uint8, labels (N,))}`` from ``archive``.

    Checks that the expected members are present and well formed before anything is exported.
    """
    try:
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
            missing = [m for m in (*TRAIN_BATCHES, *TEST_BATCHES, META)
                       if f"{FOLDER}/{m}" not in names]
            if missing:
                raise UserError(f"{archive} is not the CIFAR-10 python archive: missing "
                                f"{', '.join(f'{FOLDER}/{m}' for m in missing)}")
            classes = _class_names(_unpickle(tar, META).get("label_names"))
            splits = {split: _read_batches(tar, batches, len(classes))
                      for split, batches in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES))}
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"cannot read CIFAR-10 archive {archive}: {exc}") from None
    return classes, splits


def _class_names(raw) -> list[str]:
    """``label_names`` from batches.meta, checked: each one becomes a folder name."""
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{META} in the CIFAR-10 archive has no label_names list")
    names = [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in raw]
    for name in names:
        # A name must not be able to point anywhere else, or to break the class list file.
        if (not name.isprintable() or name.startswith(".") or "/" in name or "\\" in name
                or class_name_problem(name)):
            raise UserError(f"CIFAR-10 archive has an unusable class name {name!r}")
    if len(set(names)) != len(names):
        raise UserError(f"CIFAR-10 archive lists a class name twice: {names}")
    return names


def _read_batches(tar: tarfile.TarFile, batches: tuple[str, ...],
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The batches' images (N, 32, 32, 3) and labels (N,), concatenated in order."""
    images, labels = [], []
    for member in batches:
        batch = _unpickle(tar, member)
        data, batch_labels = batch.get("data"), np.asarray(batch.get("labels", []))
        if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
                or data.shape[1] != 3 * 32 * 32 or batch_labels.shape != (len(data),)
                or not np.isin(batch_labels, np.arange(num_classes)).all()):
            raise UserError(f"{member} in the CIFAR-10 archive is malformed (expected uint8 "
                            f"data of shape (N, 3072) and N labels below {num_classes})")
        # Rows are channel-planar (1024 R, 1024 G, 1024 B): reshape to HWC for PIL.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


#: What a CIFAR-10 export records as its origin (the archive it came from does not matter).
CIFAR10_ORIGIN = {"source": "CIFAR-10"}


def export(archive: str | os.PathLike, target: str | os.PathLike = DATASETS,
           replace: bool = False, workers: int = 1) -> None:
    """Export ``archive`` into ``target/{train,test}/<class>/NNNNN.png`` (all or nothing)."""
    classes, splits = read_archive(archive)
    print(f"exporting CIFAR-10 from {archive} into {target}/ ...", flush=True)

    def build(staging: Path) -> None:
        jobs = []
        for split, (images, labels) in splits.items():
            for name in classes:
                (staging / split / name).mkdir(parents=True)
            paths = [str(staging / split / classes[label] / f"{i:05d}.png")
                     for i, label in enumerate(labels)]
            step = 1000
            jobs += [(images[i:i + step], paths[i:i + step]) for i in range(0, len(paths), step)]
        if workers <= 1:
            for job in jobs:
                _write_pngs(job)
        else:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_pngs, jobs))

    install_dataset(target, build, replace, origin=CIFAR10_ORIGIN)
    counts = ", ".join(f"{len(labels)} {split}" for split, (_, labels) in splits.items())
    print(f"exported CIFAR-10 ({counts} images, {len(classes)} classes) into {target}/")


def _write_pngs(job: tuple[np.ndarray, list[str]]) -> None:
    images, paths = job
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path, compress_level=1)  # lossless at any level; 1 is fast
