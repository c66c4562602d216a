"""Reading one image file the way every part of the platform sees it: 8-bit RGB, upright.

:func:`load_image` is the single decoding path for data checks, training, evaluation and
prediction, so an image that passes ``txt_annotation.py``'s check is exactly an image the
model can read.  Photos come in every flavour; all of these become plain RGB rather than
errors:

* EXIF orientation is applied (a phone photo taken in portrait stays portrait);
* grayscale, palette, CMYK, YCbCr, LAB, ... are converted by Pillow;
* transparency (RGBA, LA, palette with a transparent colour) is composited over **white**.
  Simply dropping alpha would expose whatever colour the editor left under transparent
  pixels (often black or junk); white is what users see in a viewer or on a web page;
* 16-bit grayscale (``I;16`` / ``I``) is scaled to 8 bits (Pillow's own conversion clips
  everything above 255 to white instead).

Anything that is not a readable image raises :class:`ImageError` with a short reason, and so
does an image larger than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
about 89 megapixels; the ``MAX_IMAGE_PIXELS`` environment variable changes it).
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.cli import UserError, warn
from utils.names import shown

#: File extensions treated as images (lower-case; matching is case-insensitive).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

_MAX_PIXELS_ENV = "MAX_IMAGE_PIXELS"
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
#: Files up to this size are read into memory whole when checked (see load_image_and_digest).
_READ_AT_ONCE = 64 * 2**20
#: A JPEG decodes at reduced scale only while it stays this many times the size asked for.
_DRAFT_MARGIN = 8


class ImageError(UserError):
    """A file that cannot be used as an image; ``reason`` says why in a few words."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"cannot read image {shown(path)}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a non-hidden file name with an image extension (any letter case)."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def pixel_limit() -> int | None:
    """Pillow's decompression-bomb limit, applying the ``MAX_IMAGE_PIXELS`` override if set."""
    value = os.environ.get(_MAX_PIXELS_ENV)
    if value:
        try:
            Image.MAX_IMAGE_PIXELS = int(value)
        except ValueError:
            raise UserError(f"{_MAX_PIXELS_ENV}={value!r} is not a whole number of pixels")
    return Image.MAX_IMAGE_PIXELS


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``path`` completely and return it as an upright 8-bit RGB image.

    Raises :class:`ImageError` for a missing, empty, truncated, corrupt, non-image or
    too-large file, and for anything that is not a regular file (a named pipe or a device
    is never read: it could block or never end).  Keeps no state between calls, so
    DataLoader workers can use it freely.

    ``size`` (H, W) is the size the caller will cover-resize the image to
    (:func:`utils.data.preprocess.resize_cover`).  A JPEG at least ``2 * _DRAFT_MARGIN`` (16)
    times larger on both sides is then decoded by libjpeg at 1/2, 1/4 or 1/8 scale
    (``draft``), still at least ``_DRAFT_MARGIN`` times ``size``: an 89-megapixel photo
    for a 256-pixel resize takes 17 MB instead of 267 MB.  After the resize its pixels
    differ from a full decode by under half a level on average for sizes of 64 and more
    (1.5 at 32), a few levels at sharp edges.  Smaller images, and every image when
    ``size`` is not given, decode exactly as before.

    Memory: decoding holds the image at its stored size, a few bytes per pixel, which the
    pixel limit caps (about 89 megapixels by default); only JPEGs can shrink while
    decoding.  :func:`utils.data.preprocess.resize_cover` then needs memory in proportion to
    its output only, whatever the image's shape.
    """
    with open_regular_file(path) as f:  # ours: Pillow must not close it under the image
        return _decode(f, path, size)


def load_image_and_digest(path: str | os.PathLike) -> tuple[Image.Image, bytes]:
    """:func:`load_image` of the whole file, and a 128-bit BLAKE2b digest of its bytes: what
    the import check needs to fingerprint an image (exact copies by their bytes) without
    reading the file twice.

    A file up to :data:`_READ_AT_ONCE` bytes is read once and decoded from memory; a larger
    one (a file that size is rarely an image) is decoded from disk and then hashed in
    chunks, so a huge non-image never sits in memory whole.
    """
    with open_regular_file(path) as f:
        if os.fstat(f.fileno()).st_size <= _READ_AT_ONCE:
            try:
                data = f.read()
            except OSError as exc:  # an I/O error on a failing disk
                raise ImageError(path, f"cannot be read ({exc.strerror or exc})") from None
            return _decode(io.BytesIO(data), path, None), hashlib.blake2b(
                data, digest_size=16).digest()
        image = _decode(f, path, None)
        digest = hashlib.blake2b(digest_size=16)
        try:
            f.seek(0)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        except OSError as exc:
            raise ImageError(path, f"cannot be read ({exc.strerror or exc})") from None
        return image, digest.digest()


def _decode(f: BinaryIO, path: str | os.PathLike, size: tuple[int, int] | None) -> Image.Image:
    """The upright RGB image in the open file ``f`` (see :func:`load_image`)."""
    limit = pixel_limit()
    try:
        # Pillow only warns between 1x and 2x the limit; a limit is a limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(f)
            if size is not None:
                _draft(image, size)
            image.load()
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unknown format or damaged header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(path, f"image too large (over {limit} pixels, a possible "
                               f"decompression bomb; set {_MAX_PIXELS_ENV} to allow bigger "
                               f"images)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types for bad data
        raise ImageError(path, f"truncated or corrupt ({_short(exc)})") from None
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
        return to_rgb(image)
    except Exception as exc:  # noqa: BLE001 - broken EXIF or an unconvertible colour mode
        raise ImageError(path, f"cannot convert to RGB ({_short(exc)})") from None


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular, non-empty file; else an
    :class:`ImageError` saying what it is (a named pipe or a device is never opened:
    opening can block or have effects)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(path, _not_regular(mode))
        # Non-blocking, so that a named pipe put there meanwhile cannot block the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise ImageError(path, "a link to a missing file" if broken else "file not found") \
            from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:  # a link loop, a name too long, ...
        raise ImageError(path, f"cannot be opened ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        os.close(fd)
        raise ImageError(path, _not_regular(info.st_mode) if not stat.S_ISREG(info.st_mode)
                         else "empty file (0 bytes)")
    return open(fd, "rb")


def load_or_warn(path: str | os.PathLike) -> Image.Image | None:
    """:func:`load_image`, or ``None`` after a one-line warning naming the file and why:
    the way every batch of images treats one it cannot read (skip it, say so, go on)."""
    try:
        return load_image(path)
    except ImageError as exc:
        warn(f"skipped {shown(path)}: {exc.reason}")
        return None


def _draft(image: Image.Image, size: tuple[int, int]) -> None:
    """Ask a JPEG much larger than ``size`` to decode at a reduced scale (see load_image)."""
    side = _DRAFT_MARGIN * max(size)  # square: the EXIF orientation may swap the sides
    if image.format in ("JPEG", "MPO") and min(image.size) >= 2 * side:
        image.draft(image.mode, (side, side))  # the largest scale leaving >= side pixels


def _not_regular(mode: int) -> str:
    """The reason a non-regular file is not read, for :class:`ImageError`."""
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) \
        else "a device"
    return f"not a regular file ({kind})"


def image_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes cleanly."""
    try:
        load_image(path)
    except ImageError as exc:
        return exc.reason
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see the module notes for the choices)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        scaled = np.asarray(image, dtype=np.float32) / 257.0  # 65535 -> 255
        image = Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8))
    elif (image.mode == "P" and "transparency" in image.info) or image.mode in {"LA", "PA"}:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "RGBa"}:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
