"""The bad-input zoo: every kind of messy input, through the real commands, one row each.

Every row runs one script as a user would (a subprocess in a copy of a small trained
project) and is held to the same promises (SPEC, "Bad input"):

* the exit code is 2 with exactly one ``error:`` line, the last thing printed, naming the
  problem; or 0, with a ``warning:`` line naming each problem (none at all for the image
  flavours that are simply converted);
* no traceback anywhere in the output;
* no file that existed under ``datasets/``, ``model_data/`` or ``logs/`` was changed or
  removed.

Add a row when a new kind of bad input turns up.  Rows prefer the cheapest command that
reaches the code path: ``txt_annotation.py`` starts in a fraction of a second, the
torch-based scripts in a few seconds, ``train.py`` and ``benchmark.py`` in about six.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import train
import txt_annotation
from tests.helpers import COLOURS, make_dataset, make_image, run_script, snapshot, working_directory
from tests.test_predict import make_checkpoint
from tests.test_train import FAST
from utils.data.lists import read_annotation
from utils.model.checkpoint import load_checkpoint, save_checkpoint

CLASSES = ["blue", "green", "red"]
WATCHED = ("datasets", "model_data", "logs")
GOOD = "datasets/train/red/000.png"  # an image every fresh project copy has


# ---------------------------------------------------------------------------------------------
# The project every row starts from (built once per module, copied per row)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """3 classes x 8 train / 2 test 16x16 images, annotated, one 2-epoch run in logs/run/,
    and a few extra checkpoints under files/ (outside the watched folders)."""
    root = tmp_path_factory.mktemp("zoo-base")
    make_dataset(root, classes=CLASSES, train=8, test=2)
    with working_directory(root):  # in this process: the rows pay for script start-up
        txt_annotation.main(["--workers", "0"])
        train.main([*FAST, "--epochs", "2", "--save-period", "1", "--run-name", "run"])
    files = root / "files"
    sensitive_checkpoint(files / "sharp.pth")
    make_checkpoint(files / "five.pth", classes=["a", "b", "c", "d", "e"], temperature=1.0)
    make_checkpoint(files / "two.pth", classes=["blue", "green"])
    make_checkpoint(files / "v1.pth", backbone="mobilenetv1")
    # A checkpoint that says "mobilenetv1" but holds MobileNetV2 weights.
    liar = torch.load(files / "sharp.pth", weights_only=True)
    torch.save({**liar, "backbone": "mobilenetv1"}, files / "liar.pth")
    torch.save(liar["model"], files / "plain.pth")  # a bare state_dict
    return root


def sensitive_checkpoint(path: Path) -> None:
    """A checkpoint whose predictions move visibly with the pixels.

    A freshly initialised network answers about the same for every image: its BatchNorm
    statistics are not those of its own activations.  Calibrating them on random images and
    giving the head small weights spreads the probabilities well away from 0, 1 and 1/3.
    """
    model = make_checkpoint(path, temperature=1.0)  # calibrated: no warning to expect
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the calibration batch
    torch.manual_seed(0)
    with torch.no_grad():
        model.train()(torch.randn(64, 3, 16, 16))
    for linear in model.classifier.modules():
        if isinstance(linear, torch.nn.Linear):
            torch.nn.init.normal_(linear.weight, std=0.01)
    save_checkpoint({**load_checkpoint(path), "model": model.state_dict()}, path)


@pytest.fixture()
def project(base, tmp_path) -> Path:
    """A private copy of the base project for one row to mess up."""
    return Path(shutil.copytree(base, tmp_path / "project", symlinks=True))


# ---------------------------------------------------------------------------------------------
# Bad and unusual files


def good_bytes(project: Path) -> bytes:
    """A valid 64x64 PNG, large enough that damage can miss the header."""
    return make_image(project / "scratch/good.png", COLOURS[0], (64, 64)).read_bytes()


def zero_byte(project, path):
    path.write_bytes(b"")


def truncated(project, path):
    data = good_bytes(project)
    path.write_bytes(data[: len(data) // 2])


def corrupt(project, path):
    data = bytearray(good_bytes(project))
    data[len(data) // 2:len(data) // 2 + 32] = bytes(32)  # pixel data, not the header
    path.write_bytes(bytes(data))


def not_an_image(project, path):
    path.write_text("meeting notes, saved with the wrong extension\n")


def bomb(project, path):
    """A PNG whose header claims 100,000 x 100,000 pixels: 40 GB decoded, 60 bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


DAMAGED = {"zero.png": (zero_byte, "empty file"), "cut.png": (truncated, "truncated"),
           "bad.png": (corrupt, "corrupt"), "notes.jpg": (not_an_image, "not an image"),
           "bomb.png": (bomb, "too large")}


def grayscale(path):
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(path)


def rgba(path):
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[:, 8:] = (200, 20, 20, 255)  # left half fully transparent black
    Image.fromarray(pixels, "RGBA").save(path)


def palette_transparent(path):
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, 30, 200, 30] + [0] * (254 * 3))
    image.paste(1, (0, 0, 16, 8))
    image.save(path, transparency=0)


def sixteen_bit(path):
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).save(path)
    with Image.open(path) as written:
        assert written.mode.startswith("I")  # really 16 bits per pixel on disk


def cmyk_jpeg(path):
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[:, 8:, 0] = 255  # cyan right half
    Image.fromarray(pixels, "CMYK").save(path, quality=95)


def exif_rotated(path):
    """A noisy landscape JPEG whose EXIF orientation (6) says "turn 90 degrees clockwise"."""
    pixels = np.random.default_rng(7).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes(), quality=95)


CONVERTED = {"gray.png": grayscale, "rgba.png": rgba, "palette.png": palette_transparent,
             "deep.png": sixteen_bit, "cmyk.jpg": cmyk_jpeg, "exif.jpg": exif_rotated}


# ---------------------------------------------------------------------------------------------
# Row set-ups: each changes a fresh project copy before the command runs


def add_damaged(name):
    def setup(project):
        make, _ = DAMAGED[name]
        make(project, project / "datasets/train/red" / name)
    return setup


def add_converted(name):
    def setup(project):
        CONVERTED[name](project / "datasets/train/red" / name)
    return setup


def remove(*paths):
    def setup(project):
        for path in paths:
            target = project / path
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
    return setup


def empty_datasets(project):
    shutil.rmtree(project / "datasets")
    (project / "datasets").mkdir()


def empty_class_folder(project):
    for image in (project / "datasets/train/green").iterdir():
        image.unlink()


def damaged_folder(project):
    """``odd/`` holding one of each damaged kind next to one good image."""
    (project / "odd").mkdir()
    for name, (make, _) in DAMAGED.items():
        make(project, project / "odd" / name)
    shutil.copy(project / GOOD, project / "odd/good.png")


def converted_folder(project):
    (project / "odd").mkdir()
    for name, make in CONVERTED.items():
        make(project / "odd" / name)


def exif_references(project):
    """``odd/exif.jpg`` and its decoded pixels as PNGs: as stored, and turned upright."""
    (project / "odd").mkdir()
    exif_rotated(project / "odd/exif.jpg")
    with Image.open(project / "odd/exif.jpg") as stored:
        stored = stored.convert("RGB")  # convert() ignores the orientation tag
    stored.save(project / "odd/as_stored.png")
    stored.transpose(Image.Transpose.ROTATE_270).save(project / "odd/upright.png")


def big_image(project):
    make_image(project / "big.png", COLOURS[1], size=(64, 64))  # 4096 px


def damage_after_annotation(path):
    def setup(project):
        truncated(project, project / path)
    return setup


def write_file(name, make):
    def setup(project):
        make(project / name)
    return setup


def write_classes(*names):
    return write_file("model_data/cls_classes.txt",
                      lambda p: p.write_text("".join(f"{n}\n" for n in names)))


def add_path(*names, make=None):
    """Put ``names`` (str, or bytes for names that are not UTF-8) under datasets/train/: a
    copy of a good image each, or what ``make(path)`` makes."""
    def setup(project):
        for name in names:
            path = project / "datasets/train" / os.fsdecode(name)
            path.parent.mkdir(exist_ok=True)
            make(path) if make else shutil.copy(project / GOOD, path)
    return setup


def link(name, target):
    """datasets/<name> -> ``target`` (relative to the link's folder)."""
    def setup(project):
        (project / "datasets" / name).symlink_to(target)
    return setup


def hard_link_under_two_classes(project):
    os.link(project / GOOD, project / "datasets/train/blue/twin.png")


def source_folder(change=lambda src: None):
    """files/src/: a copy of the dataset to import with --from, changed by ``change``."""
    def setup(project):
        shutil.copytree(project / "datasets", project / "files/src", symlinks=True)
        change(project / "files/src")
    return setup


def datasets_is_a_file(project):
    source_folder()(project)
    shutil.rmtree(project / "datasets")
    (project / "datasets").write_text("not a folder\n")


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, streamed: what a bomb unpacks to."""

    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


BOMB_SIZE = 100 * 2**20  # over the 64 MiB every archive may unpack to


def archive_bomb(kind):
    """files/bomb.<kind>: a valid dataset plus one 100 MiB file of zeros (about 100 KB)."""
    def setup(project):
        path = project / f"files/bomb.{kind}"
        good = (project / GOOD).read_bytes()
        if kind == "zip":
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("train/red/000.png", good)
                zf.writestr("test/red/000.png", good)
                with zf.open("train/red/zeros.png", "w") as out:
                    shutil.copyfileobj(_Zeros(BOMB_SIZE), out)
        else:
            with tarfile.open(path, "w:gz", compresslevel=1) as tar:
                for name, size, data in [("train/red/000.png", len(good), io.BytesIO(good)),
                                         ("test/red/000.png", len(good), io.BytesIO(good)),
                                         ("train/red/zeros.png", BOMB_SIZE, _Zeros(BOMB_SIZE))]:
                    info = tarfile.TarInfo(name)
                    info.size = size
                    tar.addfile(info, data)
        assert path.stat().st_size < BOMB_SIZE / 100
    return setup


NOT_CHECKPOINTS = {
    "text": lambda p: p.write_text("weights: see the shared drive\n"),
    "random-bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "plain-tensor": lambda p: torch.save(torch.zeros(3, 3), p),
    "empty": lambda p: p.write_bytes(b""),
    "torn-checkpoint": lambda p: p.write_bytes(
        (p.parent / "logs/run/last.pth").read_bytes()[:100_000]),
}


def not_a_checkpoint(kind):
    return write_file("model.pth", NOT_CHECKPOINTS[kind])


# ---------------------------------------------------------------------------------------------
# Extra checks for rows whose success has to be shown, not just the absence of errors


def listed_in_annotation(*names):
    """Each image is listed, in cls_train.txt or in a set held out of train/."""
    def check(project, result):
        listed = "".join((project / f"cls_{split}.txt").read_text()
                         for split in ("train", "val", "test"))
        for name in names:
            assert f"datasets/train/red/{name}" in listed, name
    return check


def predicted(result) -> dict[str, list[float]]:
    """``{path: probabilities in class order}`` from ``predict.py --json`` output."""
    return {Path(r["path"]).name: [p["probability"] for p in
                                   sorted(r["predictions"], key=lambda p: p["class"])]
            for r in json.loads(result.stdout)}


def every_converted_image_predicted(project, result):
    assert set(predicted(result)) == set(CONVERTED)


def exif_orientation_applied(project, result):
    probabilities = predicted(result)
    assert probabilities["exif.jpg"] == pytest.approx(probabilities["upright.png"], abs=1e-5)
    # Telling the two apart is possible at all: ignoring the tag would give other answers.
    assert probabilities["exif.jpg"] != pytest.approx(probabilities["as_stored.png"], abs=1e-3)


def good_image_still_predicted(name):
    def check(project, result):
        assert name in result.stdout
    return check


def lists_only_good_images(count):
    """cls_train.txt and cls_val.txt (held out of train/) read back cleanly (UTF-8, one
    entry per line) and list ``count`` images, each under the class folder it is in."""
    def check(project, result):
        classes = (project / "model_data/cls_classes.txt").read_text().splitlines()
        samples = [s for split in ("train", "val")
                   for s in read_annotation(project / f"cls_{split}.txt", classes)]
        assert len(samples) == count, samples
        for label, path in samples:
            assert Path(path).parent.name == classes[label], (label, path)
    return check


def error_is_short(project, result):
    assert len(messages(result.stderr, "error")[0]) < 250, result.stderr


def train_ran(project, result):
    assert (project / "logs/new/last.pth").is_file()


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Case:
    """One row: ``script args`` run in a project prepared by ``setup``.

    ``says`` lists, per expected message, words that one ``error:`` (exit 2) or
    ``warning:`` (exit 0) line must contain; exit 0 with nothing to say means no
    warning at all.
    """

    script: str
    args: tuple = ()
    setup: Callable[[Path], None] | None = None
    exit: int = 2
    says: tuple[tuple[str, ...], ...] = ()
    env: dict = field(default_factory=dict)
    check: Callable | None = None
    stdin: str | None = None


def row(id, script, *args, **kwargs):
    return pytest.param(Case(script, args, **kwargs), id=id)


ANNOTATE = ("--workers", "0")
EVAL = ("--workers", "0")
RESUME = ("--resume", "logs/run/epoch_001.pth")

ROWS = [
    # --- datasets/ and its folders
    row("annotate-no-datasets", "txt_annotation.py", *ANNOTATE, setup=remove("datasets"),
        says=[("datasets/train", "not found")]),
    row("annotate-empty-datasets", "txt_annotation.py", *ANNOTATE, setup=empty_datasets,
        says=[("datasets/train", "not found")]),
    row("annotate-class-folder-without-images", "txt_annotation.py", *ANNOTATE,
        setup=empty_class_folder, exit=0, says=[("'green'", "no usable images")]),
    # --- damaged files with image extensions: skipped, each named with its reason
    *[row(f"annotate-{name}", "txt_annotation.py", *ANNOTATE, setup=add_damaged(name), exit=0,
          says=[(f"red/{name}", reason)]) for name, (_, reason) in DAMAGED.items()],
    row("predict-damaged-files", "predict.py", "odd", setup=damaged_folder, exit=0,
        says=[(f"odd/{name}", reason) for name, (_, reason) in DAMAGED.items()],
        check=good_image_still_predicted("odd/good.png")),
    row("predict-bomb-under-a-lowered-limit", "predict.py", "big.png", GOOD, setup=big_image,
        env={"MAX_IMAGE_PIXELS": "1000"}, exit=0, says=[("big.png", "too large")],
        check=good_image_still_predicted(GOOD)),
    row("annotate-pixel-limit-not-a-number", "txt_annotation.py", *ANNOTATE,
        env={"MAX_IMAGE_PIXELS": "lots"}, says=[("MAX_IMAGE_PIXELS", "lots")]),
    # --- names that cannot round-trip through the annotation files, links, special files
    row("annotate-class-name-with-newline", "txt_annotation.py", *ANNOTATE,
        setup=add_path("re\nd/000.png"), says=[("train/re\\nd", "control character")]),
    row("annotate-class-name-with-trailing-space", "txt_annotation.py", *ANNOTATE,
        setup=add_path("red /000.png"), says=[("train/red '", "whitespace")]),
    row("annotate-class-name-only-a-space", "txt_annotation.py", *ANNOTATE,
        setup=add_path(" /000.png"), says=[("train/ '", "whitespace")]),
    row("annotate-class-name-not-utf8", "txt_annotation.py", *ANNOTATE,
        setup=add_path(b"r\xe9d/000.png"), says=[("train/r\\xe9d", "not valid utf-8")]),
    row("annotate-class-names-in-two-unicode-forms", "txt_annotation.py", *ANNOTATE,
        setup=add_path("caf\u00e9/0.png", "cafe\u0301/0.png"), says=[("unicode forms",)]),
    row("annotate-file-name-not-utf8", "txt_annotation.py", *ANNOTATE,
        setup=add_path(b"red/\xff.png"), exit=0,
        says=[("red/\\xff.png", "not valid utf-8")], check=lists_only_good_images(24)),
    row("annotate-file-name-with-newline", "txt_annotation.py", *ANNOTATE,
        setup=add_path("red/a\nb.png"), exit=0,
        says=[("red/a\\nb.png", "control character")], check=lists_only_good_images(24)),
    row("annotate-named-pipe", "txt_annotation.py", *ANNOTATE,
        setup=add_path("red/pipe.png", make=os.mkfifo), exit=0,
        says=[("red/pipe.png", "named pipe")], check=lists_only_good_images(24)),
    row("annotate-class-linked-to-its-split", "txt_annotation.py", *ANNOTATE,
        setup=link("train/all", "."), says=[("train/all", "listed twice")]),
    row("annotate-class-linked-to-another", "txt_annotation.py", *ANNOTATE,
        setup=link("train/rouge", "red"), says=[("train/rouge", "listed twice")]),
    row("annotate-test-class-linked-to-train", "txt_annotation.py", *ANNOTATE,
        setup=link("test/all", "../train/red"), says=[("test/all", "listed twice")]),
    row("annotate-image-linked-within-its-split", "txt_annotation.py", *ANNOTATE,
        setup=link("train/blue/red.png", "../red/000.png"), exit=0,
        says=[("blue/red.png", "listed twice")], check=lists_only_good_images(24)),
    row("annotate-one-file-under-two-classes", "txt_annotation.py", *ANNOTATE,
        setup=hard_link_under_two_classes, exit=0,
        says=[("blue/twin.png", "two labels"), (GOOD, "two labels")],
        check=lists_only_good_images(23)),
    row("predict-piped-stdin", "predict.py", "/dev/stdin", GOOD, stdin="\x89PNG not really",
        exit=0, says=[("/dev/stdin", "not a regular file")],
        check=good_image_still_predicted(GOOD)),
    row("annotate-cache-folder-is-a-file", "txt_annotation.py", *ANNOTATE,
        setup=write_file(".cache", lambda p: shutil.rmtree(p) or p.write_text("")), exit=0,
        says=[("not cached", ".cache")]),
    row("annotate-empty-test-split", "txt_annotation.py", *ANNOTATE,
        setup=remove("datasets/test/blue", "datasets/test/green", "datasets/test/red"), exit=0,
        says=[("datasets/test/", "no usable images", "held out")]),
    row("eval-empty-test-list", "eval.py", *EVAL, setup=write_file("cls_test.txt",
                                                                   lambda p: p.write_text("")),
        says=[("cls_test.txt", "datasets/test/<class>/")]),
    # --- --from imports: refused whole, datasets/ left as it was (even with --force)
    row("import-folder-with-link-out", "txt_annotation.py", *ANNOTATE, "--force",
        "--from", "files/src", setup=source_folder(
            lambda src: (src / "train/red/passwd.png").symlink_to("/etc/passwd")),
        says=[("passwd.png", "is a link")]),
    row("import-folder-with-link-loop", "txt_annotation.py", *ANNOTATE, "--force",
        "--from", "files/src", setup=source_folder(
            lambda src: (src / "train/red/up").symlink_to("..")),
        says=[("red/up", "is a link")], check=error_is_short),
    row("import-folder-with-named-pipe", "txt_annotation.py", *ANNOTATE, "--force",
        "--from", "files/src", setup=source_folder(lambda src: os.mkfifo(src / "test/red/p.png")),
        says=[("p.png", "special file")]),
    row("import-folder-with-unusable-class-name", "txt_annotation.py", *ANNOTATE, "--force",
        "--from", "files/src", setup=source_folder(
            lambda src: (src / "train/red").rename(src / "train/red ")),
        says=[("train/red '", "whitespace")]),
    row("import-into-datasets-that-is-a-file", "txt_annotation.py", *ANNOTATE,
        "--from", "files/src", setup=datasets_is_a_file, says=[("datasets", "not a folder")]),
    *[row(f"import-{kind}-bomb", "txt_annotation.py", *ANNOTATE, "--force", "--from",
          f"files/bomb.{kind}", setup=archive_bomb(kind), says=[("refused", "zip bomb")])
      for kind in ("zip", "tar.gz")],
    # --- image flavours that are converted, not errors
    *[row(f"annotate-{name}", "txt_annotation.py", *ANNOTATE, setup=add_converted(name), exit=0,
          check=listed_in_annotation(name)) for name in CONVERTED],
    row("predict-converted-flavours", "predict.py", "odd", "--json", setup=converted_folder,
        exit=0, check=every_converted_image_predicted),
    row("predict-exif-orientation", "predict.py", "odd", "--json", "--model", "files/sharp.pth",
        setup=exif_references, exit=0, check=exif_orientation_applied),
    # --- annotation files: missing, stale, out of range, unreadable
    row("eval-missing-annotation", "eval.py", *EVAL, setup=remove("cls_test.txt"),
        says=[("cls_test.txt", "txt_annotation.py")]),
    row("eval-annotation-is-a-folder", "eval.py", *EVAL, "--annotation", "datasets",
        says=[("datasets",)]),
    row("eval-annotation-is-binary", "eval.py", *EVAL, "--annotation", GOOD,
        says=[("000.png",)]),
    row("eval-class-list-is-binary", "eval.py", *EVAL,
        setup=write_file("model_data/cls_classes.txt", lambda p: p.write_bytes(b"\x89PNG\xff")),
        says=[("cls_classes.txt",)]),
    row("train-stale-line", "train.py", *FAST, "--epochs", "1", "--run-name", "new",
        setup=remove("datasets/train/blue/003.png"), exit=0,
        says=[("blue/003.png", "not found")], check=train_ran),
    row("eval-stale-line", "eval.py", *EVAL, setup=remove("datasets/test/red/001.png"), exit=0,
        says=[("red/001.png", "not found")]),
    row("eval-image-damaged-after-annotation", "eval.py", *EVAL,
        setup=damage_after_annotation("datasets/test/blue/000.png"), exit=0,
        says=[("blue/000.png", "truncated")]),
    # --- checkpoints of another backbone or class count
    # a checkpoint names its own classes: another project's class list is no reason to warn...
    row("predict-checkpoint-of-other-classes", "predict.py", GOOD, "--model", "files/five.pth",
        exit=0, check=good_image_still_predicted(GOOD)),
    # ... but a class list the user names must be the model's
    row("predict-checkpoint-of-other-classes-named", "predict.py", GOOD, "--model",
        "files/five.pth", "--classes", "model_data/cls_classes.txt",
        says=[("class names differ", "'blue'", "'a'")]),
    row("predict-checkpoint-of-other-backbone", "predict.py", GOOD, "--model", "files/v1.pth",
        "--backbone", "mobilenetv2", says=[("mobilenetv1", "mobilenetv2")]),
    row("eval-checkpoint-of-fewer-classes", "eval.py", *EVAL, "--model", "files/two.pth",
        says=[("class names differ", "'red'", "does not know")]),
    row("eval-checkpoint-mislabelled-backbone", "eval.py", *EVAL, "--model", "files/liar.pth",
        says=[("liar.pth", "do not fit mobilenetv1")]),
    row("train-resume-after-class-list-changed", "train.py", *RESUME,
        setup=write_classes("blue", "green", "red", "white"),
        says=[("cannot resume", "classes")]),
    row("train-resume-with-other-backbone", "train.py", *RESUME, "--backbone", "mobilenetv1",
        says=[("backbone", "mobilenetv1", "mobilenetv2")]),
    row("train-resume-inference-checkpoint", "train.py", "--resume", "files/five.pth",
        says=[("five.pth", "not a training checkpoint")]),
    row("train-model-path-of-other-backbone", "train.py", *FAST, "--model-path", "files/v1.pth",
        says=[("mobilenetv1", "does not fit mobilenetv2")]),
    # --- files passed as a checkpoint that are not one
    *[row(f"predict-model-{kind}", "predict.py", GOOD, "--model", "model.pth",
          setup=not_a_checkpoint(kind),
          says=[("model.pth", "not a checkpoint" if kind == "plain-tensor"
                 else "not a PyTorch checkpoint")]) for kind in NOT_CHECKPOINTS],
    row("predict-model-missing", "predict.py", GOOD, "--model", "gone.pth",
        says=[("gone.pth", "no such file")]),
    row("eval-model-random-bytes", "eval.py", *EVAL, "--model", "model.pth",
        setup=not_a_checkpoint("random-bytes"), says=[("model.pth", "not a PyTorch checkpoint")]),
    row("train-resume-plain-tensor", "train.py", "--resume", "model.pth",
        setup=not_a_checkpoint("plain-tensor"), says=[("model.pth", "not a checkpoint")]),
    # --- unknown backbones and option values, every script
    row("annotate-negative-workers", "txt_annotation.py", "--workers", "-1",
        says=[("--workers",)]),
    row("annotate-unknown-flag", "txt_annotation.py", "--cifar100",
        says=[("unrecognized", "--cifar100")]),
    row("predict-unknown-backbone", "predict.py", GOOD, "--model", "files/plain.pth",
        "--backbone", "alexnet", "--input-shape", "16", "16", says=[("alexnet",)]),
    row("predict-unknown-device", "predict.py", GOOD, "--device", "tpu", says=[("tpu",)]),
    row("predict-topk-zero", "predict.py", GOOD, "--topk", "0", says=[("--topk",)]),
    row("eval-unknown-backbone", "eval.py", *EVAL, "--model", "files/plain.pth",
        "--backbone", "alexnet", "--input-shape", "16", "16", says=[("alexnet",)]),
    row("eval-unknown-amp", "eval.py", *EVAL, "--amp", "fp8", says=[("--amp", "fp8")]),
    row("summary-unknown-backbone", "summary.py", "--backbone", "alexnet",
        says=[("alexnet",)]),
    row("summary-zero-width", "summary.py", "--backbone", "mobilenetv2", "--width-mult", "0",
        says=[("width_mult",)]),
    row("benchmark-unknown-backbone", "benchmark.py", "--backbone", "alexnet",
        says=[("alexnet",)]),
    # --- input shapes too small for any network
    row("summary-input-too-small", "summary.py", "--backbone", "resnet50",
        "--input-shape", "4", "4", says=[("4x4", "too small")]),
    row("predict-input-too-small", "predict.py", GOOD, "--model", "files/plain.pth",
        "--backbone", "mobilenetv2", "--input-shape", "4", "4", says=[("4x4", "too small")]),
]


def messages(stderr: str, kind: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{kind}:")]


def says(line: str, needles) -> bool:
    return all(needle.lower() in line.lower() for needle in needles)


@pytest.mark.parametrize("case", ROWS)
def test_bad_input(project, case: Case, record_property):
    if case.setup:
        case.setup(project)
    before = {folder: snapshot(project / folder) for folder in WATCHED}

    result = run_script(case.script, *case.args, cwd=project, env=case.env, timeout=120,
                        input=case.stdin)

    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert result.returncode == case.exit, (result.returncode, output[-3000:])
    errors, warnings = messages(result.stderr, "error"), messages(result.stderr, "warning")
    if case.exit == 2:
        assert len(errors) == 1 and len(case.says) == 1, result.stderr
        assert result.stderr.rstrip().splitlines()[-1] == errors[0], result.stderr
        assert says(errors[0], case.says[0]), (case.says[0], errors[0])
    else:
        assert not errors, result.stderr
        for needles in case.says:
            assert any(says(line, needles) for line in warnings), (needles, result.stderr)
        if not case.says:
            assert not warnings, result.stderr
    if case.check:
        case.check(project, result)

    # Nothing the user had is lost: every file is still there, byte for byte.
    for folder, files in before.items():
        after = snapshot(project / folder)
        changed = [name for name, data in files.items() if after.get(name) != data]
        assert not changed, f"{folder}/: {changed} changed or removed"
    record_property("files_verified", sum(map(len, before.values())))
