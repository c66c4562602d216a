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

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.cli import UserError, warn

#: File extensions treated as images (lower-case; matching is case-insensitive).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

_MAX_PIXELS_ENV = "MAX_IMAGE_PIXELS"
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class ImageError(UserError):
    """A file that cannot be used as an image; ``reason`` says why in a few words."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
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


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` completely and return it as an upright 8-bit RGB image.

    Raises :class:`ImageError` for a missing, empty, truncated, corrupt, non-image or
    too-large file.  Keeps no state between calls, so DataLoader workers can use it freely.
    """
    limit = pixel_limit()
    try:
        # Opening the file ourselves keeps Pillow from closing it under the returned image
        # and lets an empty file be told apart from a corrupt one.
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ImageError(path, "empty file (0 bytes)")
            # Pillow only warns between 1x and 2x the limit; a limit is a limit.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(f)
                image.load()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageError(path, "is a folder, not a file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unknown format or damaged header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(path, f"image too large (over {limit} pixels, a possible decompression "
                               f"bomb; set {_MAX_PIXELS_ENV} to allow bigger images)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types for bad data
        raise ImageError(path, f"truncated or corrupt ({_short(exc)})") from None
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
        return to_rgb(image)
    except Exception as exc:  # noqa: BLE001 - broken EXIF or an unconvertible colour mode
        raise ImageError(path, f"cannot convert to RGB ({_short(exc)})") from None


def load_or_warn(path: str | os.PathLike) -> Image.Image | None:
    """:func:`load_image`, or ``None`` after a one-line warning naming the file and why:
    the way every batch of images treats one it cannot read (skip it, say so, go on)."""
    try:
        return load_image(path)
    except ImageError as exc:
        warn(f"skipped {path}: {exc.reason}")
        return None


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
