"""Benchmark datasets cut from the CIFAR-10 JPEG archive, so figures can be reproduced.

* :func:`cifar_subset`: the first ``train`` / ``test`` images of each class (sorted by file
  name), as class folders at 32x32: the CPU time-to-accuracy benchmark's data;
* :func:`photo_set`: a few classes, upscaled to photo sizes and saved as JPEGs: a stand-in
  for "a few hundred photos of my own", with real visual differences between the classes.
"""
from __future__ import annotations

import io
import os
import tarfile
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

from PIL import Image

from utils.cli import UserError

PHOTO_CLASSES = ("airplane", "frog", "truck")


def _members(archive: str | os.PathLike, per_split: dict[str, int],
             classes: Sequence[str] | None = None) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, file name, bytes) of the first ``per_split[split]`` images per class."""
    try:
        tar = tarfile.open(archive)
    except (OSError, tarfile.TarError) as exc:
        raise UserError(f"cannot read {archive}: {exc}") from None
    with tar:
        found: dict[tuple[str, str], list[tarfile.TarInfo]] = defaultdict(list)
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] in per_split \
                    and (classes is None or parts[-2] in classes):
                found[(parts[-3], parts[-2])].append(member)
        if not found:
            raise UserError(f"{archive} holds no train/<class>/ or test/<class>/ images")
        for (split, name), members in sorted(found.items()):
            for member in sorted(members, key=lambda m: PurePosixPath(m.name).name)[
                    :per_split[split]]:
                yield split, name, PurePosixPath(member.name).name, \
                    tar.extractfile(member).read()


def cifar_subset(archive, out: str | os.PathLike, train: int = 500, test: int = 200) -> Path:
    """``out/{train,test}/<class>/`` with the first ``train`` / ``test`` images per class."""
    out = Path(out)
    for split, name, file, data in _members(archive, {"train": train, "test": test}):
        path = out / split / name / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return out


def photo_set(archive, out: str | os.PathLike, classes: Sequence[str] = PHOTO_CLASSES,
              train: int = 100, test: int = 50, size: tuple[int, int] = (240, 320)) -> Path:
    """``out/{train,test}/<class>/`` with ``classes``' first images, resized to ``size``
    (H, W; 4:3 like a phone photo) and saved as JPEG."""
    out = Path(out)
    h, w = size
    for split, name, file, data in _members(archive, {"train": train, "test": test},
                                            classes):
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((w, h), Image.BICUBIC)
        path = out / split / name / file
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path.with_suffix(".jpg"), quality=90)
    return out
