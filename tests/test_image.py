"""utils.data.image: every flavour of image becomes upright 8-bit RGB; bad files get a reason."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers import make_image
from utils.cli import UserError
from utils.data.image import IMAGE_EXTENSIONS, ImageError, image_problem, is_image_file, load_image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def test_rgb_image_loads_unchanged(tmp_path):
    path = make_image(tmp_path / "a.png", (10, 200, 30))
    assert np.array_equal(pixels(load_image(path)), np.asarray(Image.open(path)))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.full((4, 6), 77, np.uint8)).save(tmp_path / "g.png")
    out = pixels(load_image(tmp_path / "g.png"))
    assert out.shape == (4, 6, 3) and (out == 77).all()


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)          # fully transparent black: must not show as black
    rgba[0, 1] = (200, 10, 10, 255)    # opaque: unchanged
    rgba[1, :] = (0, 0, 0, 128)        # half transparent black over white: mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = pixels(load_image(tmp_path / "a.png"))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [200, 10, 10]
    assert np.allclose(out[1, 0], 127, atol=1)


def test_palette_with_transparency_is_composited_over_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png", transparency=0)
    out = pixels(load_image(tmp_path / "p.png"))
    assert out[0].tolist() == [[255, 255, 255], [0, 255, 0]]


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.array([[0, 32896, 65535]], np.uint16)).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")  # really a 16-bit file
    out = pixels(load_image(tmp_path / "d.png"))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    # CMYK (0, 0, 0, 0) is white paper, pure cyan is (255, 0, 0, 0).
    cmyk = np.zeros((8, 16, 4), np.uint8)
    cmyk[:, 8:, 0] = 255
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=95)
    out = pixels(load_image(tmp_path / "c.jpg"))
    assert np.allclose(out[4, 2], (255, 255, 255), atol=12)
    assert np.allclose(out[4, 13], (0, 255, 255), atol=12)


def test_exif_orientation_is_applied(tmp_path):
    # Stored landscape, left half red; orientation 6 = "rotate 90 degrees clockwise to view".
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20], stored[:, 20:] = RED, BLUE
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = pixels(load_image(tmp_path / "r.jpg"))
    assert out.shape == (40, 20, 3)  # now portrait
    assert np.allclose(out[5, 10], RED, atol=30) and np.allclose(out[35, 10], BLUE, atol=30)


@pytest.mark.parametrize("limit", [100, 200])  # 16x16 = 256 px: Pillow errors at 2x, warns at 1x
def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    path = make_image(tmp_path / "big.png", RED, size=(16, 16))
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_pixel_limit_can_be_set_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    path = make_image(tmp_path / "big.png", RED, size=(16, 16))
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS"):
        load_image(path)
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "1000")
    assert load_image(path).size == (16, 16)


def _good_bytes(path, fmt):
    make_image(path.with_suffix(".tmp"), RED, size=(64, 64), fmt=fmt)
    return path.with_suffix(".tmp").read_bytes()


def _truncated(path):
    data = _good_bytes(path, "JPEG")
    path.write_bytes(data[: len(data) // 2])


def _corrupt(path):
    data = bytearray(_good_bytes(path, "PNG"))
    data[len(data) // 2:len(data) // 2 + 32] = bytes(32)  # damage the pixel data, not the header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make, reason", [
    (lambda p: None, "not found"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (_truncated, "truncated or corrupt"),
    (_corrupt, "truncated or corrupt"),
    (lambda p: p.write_text("just some notes, not a picture\n"), "not an image"),
    (lambda p: p.mkdir(), "folder"),
], ids=["missing", "zero-byte", "truncated", "corrupt", "text", "folder"])
def test_unusable_files_raise_image_error_with_a_reason(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert reason in info.value.reason
    assert isinstance(info.value, UserError) and str(path) in str(info.value)
    assert image_problem(path) == info.value.reason


def test_image_problem_is_none_for_a_good_image(tmp_path):
    assert image_problem(make_image(tmp_path / "ok.webp", RED)) is None


def test_image_file_names():
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    for name in ["a.jpg", "b.JPG", "c.JpEg", "d.PNG", "e.bmp", "f.webp", "g.TIF", "h.tiff"]:
        assert is_image_file(name), name
    for name in [".hidden.jpg", "notes.txt", "anim.gif", "jpg", "dir/.DS_Store"]:
        assert not is_image_file(name), name
