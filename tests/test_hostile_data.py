"""Hostile data below the command line: names, links, caches fooled by kept mtimes, memory
bounds on odd images, and imports that would fill the disk.

Whole-command cases live in the bad-input zoo (tests/test_zoo.py); these are the ones that
need a unit's view (a cache, a memory peak, a patched disk).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import (COLOURS, ROOT, assert_clean_error, make_dataset, make_image, run_script,
                           snapshot)
from utils.cli import UserError
from utils.data import archives
from utils.data import importing as dataset_import
from utils.data.cache import _cache_key
from utils.data.checks import check_images
from utils.data.image import ImageError, load_image
from utils.data.lists import read_annotation, read_classes, write_classes
from utils.data.preprocess import resize_cover
from utils.data.scan import scan_splits
from utils.names import class_name_problem, name_problem, shown

# ---------------------------------------------------------------------------------------------
# Names that cannot round-trip through the annotation files


@pytest.mark.parametrize("name, escaped", [
    ("a\nb.png", "a\\nb.png"), ("a\rb.png", "a\\rb.png"), ("tab\t.png", "tab\\t.png"),
    ("a\x85b.png", "a\\x85b.png"), ("a\u2028b.png", "a\\u2028b.png"),
    (os.fsdecode(b"\xff\xfe.png"), "\\xff\\xfe.png"),
])
def test_unwritable_names_are_told_and_shown_escaped_on_one_line(name, escaped):
    assert name_problem(name)
    assert shown(name) == escaped
    assert shown(name).isprintable()


@pytest.mark.parametrize("name", ["cat", "café", "猫", "Ünïcödé ok", "a;b", "x.y", "🐈‍⬛"])
def test_ordinary_names_pass_unchanged(name):
    assert name_problem(name) is None and class_name_problem(name) is None
    assert shown(name) == name


@pytest.mark.parametrize("name", [" ", "red ", " red", "\tred", "red\u3000", ""])
def test_class_names_that_the_class_list_would_strip_are_refused(name):
    assert class_name_problem(name)


def test_a_bad_file_name_and_a_new_class_never_mislabel_the_lists(tmp_path):
    """The original crash: a new class folder plus a file name that is not UTF-8 rewrote
    cls_classes.txt and then died before cls_train.txt, so every id pointed elsewhere."""
    make_dataset(tmp_path, classes=("cat", "dog"), train=2, test=1)
    annotate = ["txt_annotation.py", "--workers", "0", "--val-fraction", "0"]
    assert run_script(*annotate, cwd=tmp_path).returncode == 0
    make_image(tmp_path / "datasets/train/bee/0.png", COLOURS[2])  # sorts first: ids shift
    make_image(tmp_path / os.fsdecode(b"datasets/train/dog/\xff.png"), COLOURS[1])
    result = run_script(*annotate, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dog/\\xff.png: its name is not valid UTF-8" in result.stderr
    classes = read_classes(tmp_path / "model_data/cls_classes.txt")
    assert classes == ["bee", "cat", "dog"]
    samples = read_annotation(tmp_path / "cls_train.txt", classes)
    assert len(samples) == 5
    assert all(Path(path).parent.name == classes[label] for label, path in samples)


# ---------------------------------------------------------------------------------------------
# Links and files reached twice


def split_lists(datasets: Path) -> dict[str, dict[str, list[str]]]:
    """{split: {class: listed image names}} after scanning, unusable ones left out."""
    scans = scan_splits({split: datasets / split for split in ("train", "test")})
    return {split: {name: sorted(os.path.relpath(p, datasets / split) for p in paths
                                 if p not in scan.unusable)
                    for name, paths in scan.images.items()}
            for split, scan in scans.items()}


def test_links_out_of_the_splits_are_followed(tmp_path):
    make_dataset(tmp_path, classes=("cat",), train=1, test=1)
    elsewhere = tmp_path / "disk2"
    make_image(elsewhere / "dogs/0.png", COLOURS[1])
    make_image(elsewhere / "more/1.png", COLOURS[0])
    (tmp_path / "datasets/train/dog").symlink_to(elsewhere / "dogs")  # a class folder
    (tmp_path / "datasets/train/cat/more").symlink_to(elsewhere / "more")  # a sub-folder
    assert split_lists(tmp_path / "datasets")["train"] == {
        "cat": ["cat/000.png", "cat/more/1.png"], "dog": ["dog/0.png"]}


def test_one_folder_linked_under_two_classes_lists_its_files_under_neither(tmp_path):
    make_dataset(tmp_path, classes=("cat",), train=1, test=1)
    make_image(tmp_path / "disk2/pets/0.png", COLOURS[1])
    (tmp_path / "datasets/train/dog").symlink_to(tmp_path / "disk2/pets")
    (tmp_path / "datasets/train/cat/pets").symlink_to(tmp_path / "disk2/pets")
    train = split_lists(tmp_path / "datasets")["train"]
    assert train == {"cat": ["cat/000.png"], "dog": []}


def test_a_link_loop_outside_the_dataset_is_walked_once(tmp_path):
    make_dataset(tmp_path, classes=("cat",), train=1, test=1)
    make_image(tmp_path / "disk2/a/0.png", COLOURS[1])
    (tmp_path / "disk2/a/again").symlink_to(tmp_path / "disk2")  # disk2/a/again/a/again/...
    (tmp_path / "datasets/train/cat/far").symlink_to(tmp_path / "disk2")
    assert split_lists(tmp_path / "datasets")["train"]["cat"] == ["cat/000.png", "cat/far/a/0.png"]


def test_a_test_image_that_is_a_training_image_is_kept_in_train_only(tmp_path):
    make_dataset(tmp_path, classes=("cat",), train=1, test=1)
    os.link(tmp_path / "datasets/train/cat/000.png", tmp_path / "datasets/test/cat/copy.png")
    lists = split_lists(tmp_path / "datasets")
    assert lists["train"]["cat"] == ["cat/000.png"]
    assert lists["test"]["cat"] == ["cat/000.png"]  # test's own 000.png, not the copy


# ---------------------------------------------------------------------------------------------
# Caches: an image replaced by one of the same size, with its old mtime put back


def replace_keeping_size_and_mtime(path: Path, data: bytes, new_inode: bool) -> None:
    """What ``cp -p`` (same file, rewritten) or ``tar x`` (a new file) leave behind."""
    before = path.stat()
    assert len(data) == before.st_size
    if new_inode:
        path.unlink()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("new_inode", [False, True], ids=["cp-p", "tar-x"])
def test_image_checks_notice_a_replaced_file_whose_mtime_was_kept(tmp_path, new_inode):
    image = make_image(tmp_path / "a.png", COLOURS[0])
    cache = tmp_path / "checks.json"
    assert check_images([str(image)], cache_file=cache) == {}
    replace_keeping_size_and_mtime(image, b"x" * image.stat().st_size, new_inode)
    assert "not an image" in check_images([str(image)], cache_file=cache)[str(image)]


@pytest.mark.parametrize("new_inode", [False, True], ids=["cp-p", "tar-x"])
def test_decode_cache_key_changes_for_a_replaced_file_whose_mtime_was_kept(tmp_path, new_inode):
    """The decoded-pixel cache is named by this key (a new key decodes afresh: test_data)."""
    # BMP: any two 8x8 RGB images are files of exactly the same size.
    paths = [make_image(tmp_path / f"{i}.bmp", COLOURS[i], size=(8, 8), fmt="BMP")
             for i in range(2)]
    samples = [(i, str(p)) for i, p in enumerate(paths)]
    before = _cache_key(samples)
    assert _cache_key(samples) == before  # nothing changed, the cache is reused
    replacement = make_image(tmp_path / "other.bmp", COLOURS[5], size=(8, 8), fmt="BMP")
    replace_keeping_size_and_mtime(paths[0], replacement.read_bytes(), new_inode)
    assert _cache_key(samples) != before, "the cache would serve the old pixels"


# ---------------------------------------------------------------------------------------------
# Memory: decode + preprocess stay bounded whatever the image's shape or size

_PEAK = """
import resource, sys
sys.path.insert(0, {root!r})
from utils.data.image import load_image
from utils.data.preprocess import resize_cover
path, size = sys.argv[1], int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = resize_cover(load_image(path, size=(size, size)), (size, size))
assert out.size == (size, size)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def peak_growth(path: Path, size: int) -> int:
    """Bytes a fresh process's peak memory grows by while loading and resizing ``path``."""
    code = _PEAK.format(root=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code, str(path), str(size)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_a_long_strip_takes_memory_for_its_output_only(tmp_path):
    # 1 x 60,000 pixels, 0.2 MB decoded: covering 32 x 32 means a 1.9-megapixel-wide
    # resize (184 MB) when the whole strip is resized before the crop.
    Image.new("RGB", (60_000, 1), (200, 30, 30)).save(tmp_path / "strip.png")
    assert peak_growth(tmp_path / "strip.png", 32) < 16 * 2**20


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    # 4,200 x 4,200 for a 256-pixel resize: the peak grows by 73 MB when decoded at full
    # size, by 24 MB at half scale.
    gradient = np.linspace(0, 255, 4200, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(gradient, (4200, 1))] * 3, axis=-1)).save(
        tmp_path / "big.jpg", quality=90)
    assert peak_growth(tmp_path / "big.jpg", 256) < 40 * 2**20


def test_reduced_jpeg_decoding_stays_close_to_a_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    smooth.resize((2400, 2400), Image.BICUBIC).save(tmp_path / "big.jpg", quality=90)
    full = np.asarray(resize_cover(load_image(tmp_path / "big.jpg"), (64, 64)), dtype=int)
    reduced_image = load_image(tmp_path / "big.jpg", size=(64, 64))
    assert reduced_image.size == (600, 600)  # 1/4 scale still leaves 8 x 64 pixels
    reduced = np.asarray(resize_cover(reduced_image, (64, 64)), dtype=int)
    assert np.abs(full - reduced).mean() < 1.0


@pytest.mark.parametrize("shape", [(16, 16), (20, 28), (480, 640), (1200, 300), (3000, 2000),
                                   (1, 1), (33, 7), (3000, 200), (2, 500)])
@pytest.mark.parametrize("size", [(16, 16), (32, 32), (37, 37), (256, 256), (224, 292)])
def test_resize_cover_gives_the_pixels_of_a_whole_image_resize(shape, size):
    """While the covering resize is at most 4 times the output (a 4:1 panorama for a square
    output), the whole image is resized and cropped as always: the same pixels as before.
    Beyond, only the kept box is resized, which Pillow rounds a little differently."""
    h, w = shape
    image = Image.fromarray(np.random.default_rng(h * w).integers(0, 256, (h, w, 3),
                                                                  dtype=np.uint8))
    scale = max(size[0] / h, size[1] / w)
    new_w, new_h = max(size[1], round(w * scale)), max(size[0], round(h * scale))
    left, top = (new_w - size[1]) // 2, (new_h - size[0]) // 2
    whole = image.resize((new_w, new_h), Image.BILINEAR, reducing_gap=3.0)
    expected = np.asarray(whole.crop((left, top, left + size[1], top + size[0])), dtype=int)
    got = np.asarray(resize_cover(image, size), dtype=int)
    if new_w * new_h <= 4 * size[0] * size[1]:
        assert np.array_equal(got, expected)
    else:  # measured on pixel noise, the worst case
        assert np.abs(got - expected).mean() < 1 and np.abs(got - expected).max() <= 4


def test_a_small_jpeg_given_a_size_decodes_exactly_as_without(tmp_path):
    make_image(tmp_path / "a.jpg", COLOURS[3], size=(300, 400))
    assert np.array_equal(np.asarray(load_image(tmp_path / "a.jpg", size=(32, 32))),
                          np.asarray(load_image(tmp_path / "a.jpg")))


# ---------------------------------------------------------------------------------------------
# Files that are not regular files


def test_a_pipe_is_not_read_and_is_called_a_pipe():
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"\x89PNG\r\n\x1a\n")
        with pytest.raises(ImageError, match="not a regular file \\(a named pipe\\)"):
            load_image(f"/dev/fd/{read_end}")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_device_is_never_opened():
    with pytest.raises(ImageError, match="not a regular file \\(a device\\)"):
        load_image("/dev/zero")


# ---------------------------------------------------------------------------------------------
# Imports: the disk, a read-only target, limits that can be raised


@pytest.fixture
def source(tmp_path) -> Path:
    make_dataset(tmp_path / "src", classes=("cat", "dog"), train=2, test=1)
    return tmp_path / "src/datasets"


def zip_bomb(path: Path, source: Path, zeros: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(source.rglob("*.png")):
            zf.write(file, file.relative_to(source))
        zf.writestr("train/cat/zeros.png", bytes(zeros))
    return path


def test_an_import_that_would_fill_the_disk_is_refused_first(tmp_path, source, monkeypatch):
    target = tmp_path / "project/datasets"
    make_dataset(tmp_path / "project", train=1, test=1)
    before = snapshot(target)
    real = dataset_import.shutil.disk_usage
    monkeypatch.setattr(dataset_import.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=20_000))  # room for ~1 image
    for src in (source, zip_bomb(tmp_path / "data.zip", source, 0)):
        with pytest.raises(UserError, match="free some space"):
            dataset_import.import_dataset(src, target, replace=True)
        assert snapshot(target) == before


def test_an_import_of_more_files_than_the_disk_has_inodes_is_refused(tmp_path, source,
                                                                       monkeypatch):
    real = os.statvfs(tmp_path)
    fake = {name: getattr(real, name) for name in dir(real) if name.startswith("f_")}
    fake.update(f_files=1_000_000, f_favail=5)
    monkeypatch.setattr(dataset_import.os, "statvfs",
                        lambda p: type("statvfs", (), fake)())
    with pytest.raises(UserError, match="more than 5 files"):
        dataset_import.import_dataset(source, tmp_path / "datasets")
    assert not (tmp_path / "datasets").exists()


def test_a_read_only_datasets_folder_is_a_one_line_error(tmp_path, source, monkeypatch):
    # Root ignores file modes, so read-only is what mkdtemp says when it cannot write.
    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied", kwargs["dir"])
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(UserError, match="Permission denied") as info:
        dataset_import.import_dataset(source, tmp_path / "datasets")
    assert "\n" not in str(info.value)


def test_the_expansion_limit_is_counted_and_can_be_raised(tmp_path, source, monkeypatch):
    monkeypatch.setattr(archives, "_RATIO_FLOOR", 2**20)  # so a 2 MiB bomb is one
    bomb = zip_bomb(tmp_path / "bomb.zip", source, 2 * 2**20)
    with pytest.raises(UserError, match="100 times its size.*--max-ratio N or "
                                        "DATASET_MAX_RATIO=N"):
        dataset_import.import_dataset(bomb, tmp_path / "a")
    dataset_import.import_dataset(bomb, tmp_path / "b", max_ratio=10_000)
    assert (tmp_path / "b/train/cat/zeros.png").stat().st_size == 2 * 2**20
    monkeypatch.setenv("DATASET_MAX_RATIO", "10000")
    dataset_import.import_dataset(bomb, tmp_path / "c")
    monkeypatch.setenv("DATASET_MAX_RATIO", "lots")
    with pytest.raises(UserError, match="DATASET_MAX_RATIO='lots'"):
        dataset_import.import_dataset(bomb, tmp_path / "d")


def test_the_flag_raises_the_limit_from_the_command_line(tmp_path, source):
    result = run_script("txt_annotation.py", "--from", source, "--max-ratio", "0",
                        cwd=tmp_path)
    assert_clean_error(result, "--max-ratio")
    result = run_script("txt_annotation.py", "--workers", "0", "--from", source,
                        "--max-ratio", "1000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Annotation files that cannot be written


def test_an_unwritable_class_list_is_a_one_line_error(tmp_path):
    (tmp_path / "model_data").write_text("a file where a folder should be\n")
    with pytest.raises(UserError, match="cannot write .*cls_classes.txt"):
        write_classes(tmp_path / "model_data/cls_classes.txt", ["cat"])


def test_a_damaged_check_cache_is_ignored(tmp_path):
    image = make_image(tmp_path / "a.png", COLOURS[0])
    cache = tmp_path / "checks.json"
    cache.write_text(json.dumps({"version": "whatever", "files": {str(image): 5}}))
    assert check_images([str(image)], cache_file=cache) == {}
    data = json.loads(cache.read_text())
    data["files"][str(image)] = 5  # an entry that is not a list, under the right version
    cache.write_text(json.dumps(data))
    assert check_images([str(image)], cache_file=cache) == {}
