"""Three splits: validation (and test) sets held out of train/ or read from their folders."""
from __future__ import annotations

import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import COLOURS, assert_clean_error, listed, make_dataset, make_image, run_script
from utils.cli import UserError
from utils.data.lists import read_annotation, write_annotation
from utils.data.splits import carve


def annotate(root, *args):
    result = run_script("txt_annotation.py", "--workers", "0", *args, cwd=root)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def paths(root, split) -> list[str]:
    return [line.partition(";")[2] for line in listed(root, split)]


def per_class(root, split) -> Counter:
    return Counter(line.partition(";")[0] for line in listed(root, split))


@pytest.mark.parametrize("total, fractions, expected", [
    (2, {"test": 0.5, "val": 0.5}, (1, [1, 0])),  # never the last image: trained on
    (1, {"test": 0.1}, (1, [0])),                 # a class of one keeps it for training
    (3, {"test": 0.1, "val": 0.1}, (1, [1, 1])),  # at least one per set, so validated
])
def test_tiny_classes_keep_one_for_training_and_give_each_set_one(total, fractions, expected):
    paths = [f"/d/train/c/{i}.png" for i in range(total)]
    kept, held = carve(paths, fractions, 0, "/d/train")
    assert (len(kept), [len(held[s]) for s in fractions]) == expected


def test_each_set_holds_about_its_fraction_and_adding_images_moves_no_other():
    paths = [f"/d/train/c/{i:04d}.png" for i in range(2000)]
    fractions = {"test": 0.1, "val": 0.2}
    kept, held = carve(paths, fractions, 7, "/d/train")
    assert 150 <= len(held["test"]) <= 250 and 330 <= len(held["val"]) <= 470  # ~5 sigma
    more = paths + [f"/d/train/c/new{i:04d}.png" for i in range(500)]
    kept2, held2 = carve(more, fractions, 7, "/d/train")
    for name in fractions:  # every earlier image stays on its side
        assert [p for p in held2[name] if "new" not in p] == held[name]
    assert [p for p in kept2 if "new" not in p] == kept
    # the seed reshuffles; a moved dataset (another root) splits the same way
    assert carve(paths, fractions, 8, "/d/train")[1] != held
    moved = [p.replace("/d/", "/elsewhere/") for p in paths]
    assert carve(moved, fractions, 7, "/elsewhere/train")[1] == {
        n: [p.replace("/d/", "/elsewhere/") for p in v] for n, v in held.items()}


def test_val_is_held_out_of_train_stratified_disjoint_and_the_same_on_every_run(tmp_path):
    make_dataset(tmp_path, classes=("a", "b", "c"), train=23, test=2)
    result = annotate(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "val   images: 10% of each class of datasets/train/" in result.stdout
    assert not set(paths(tmp_path, "val")) & set(paths(tmp_path, "train"))
    assert set(paths(tmp_path, "val")) | set(paths(tmp_path, "train")) == {
        f"datasets/train/{c}/{i:03d}.png" for c in "abc" for i in range(23)}
    assert all(1 <= n <= 6 for n in per_class(tmp_path, "val").values())  # about 23 x 0.1
    assert set(per_class(tmp_path, "val")) == {"0", "1", "2"}  # every class validated
    assert per_class(tmp_path, "test") == {"0": 2, "1": 2, "2": 2}  # test/ used as it is
    before = {s: (tmp_path / f"cls_{s}.txt").read_bytes() for s in ("train", "val", "test")}

    assert annotate(tmp_path).returncode == 0
    assert before == {s: (tmp_path / f"cls_{s}.txt").read_bytes() for s in before}
    # Stable per image: more images in one class leave the others' split alone.
    for i in range(23, 30):
        make_image(tmp_path / f"datasets/train/a/{i:03d}.png", COLOURS[0], seed=i)
    assert annotate(tmp_path).returncode == 0
    earlier = {s: [p.partition(";")[2] for p in before[s].decode().splitlines()[1:]]
               for s in before}
    for split in ("train", "val"):  # no earlier image changed sides, in any class
        assert [p for p in paths(tmp_path, split) if not p.endswith(
            tuple(f"/a/{i:03d}.png" for i in range(23, 30)))] == earlier[split]


def test_a_train_only_dataset_gets_test_and_val_sets_held_out(tmp_path):
    make_dataset(tmp_path, classes=("a", "b"), train=20, test=0)
    result = annotate(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test  images: 10% of each class of datasets/train/" in result.stdout
    splits = {s: set(paths(tmp_path, s)) for s in ("train", "val", "test")}
    assert sum(len(s) for s in splits.values()) == 40
    assert set(per_class(tmp_path, "val")) == set(per_class(tmp_path, "test")) == {"0", "1"}
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"]
                or splits["val"] & splits["test"])
    # A val/ folder added later takes validation over; the test set stays exactly the same.
    make_dataset(tmp_path, classes=("a", "b"), train=0, test=3)
    (tmp_path / "datasets/test").rename(tmp_path / "datasets/val")
    assert annotate(tmp_path).returncode == 0
    assert set(paths(tmp_path, "test")) == splits["test"]
    assert all(p.startswith("datasets/val/") for p in paths(tmp_path, "val"))
    assert len(paths(tmp_path, "train")) == 40 - len(splits["test"])


def test_train_val_test_folders_are_used_as_they_are(tmp_path):
    make_dataset(tmp_path, classes=("a", "b"), train=5, test=2)
    make_dataset(tmp_path / "v", classes=("a", "b"), train=0, test=3, seed=1)
    (tmp_path / "v/datasets/test").rename(tmp_path / "datasets/val")
    result = annotate(tmp_path)
    assert result.returncode == 0, result.stderr
    assert [len(paths(tmp_path, s)) for s in ("train", "val", "test")] == [10, 6, 4]
    assert "val   images: datasets/val/" in result.stdout


@pytest.mark.parametrize("layout", ["train-val", "train-val-test-zip", "class-folders"])
def test_import_takes_train_val_and_plain_class_folder_layouts(tmp_path, layout):
    source = tmp_path / "photos"
    make_dataset(source, classes=("ants", "bees"), train=10, test=3)
    dataset = source / "datasets"
    if layout == "train-val":
        (dataset / "test").rename(dataset / "val")
    elif layout == "class-folders":
        shutil.rmtree(dataset / "test")
        dataset = dataset / "train"
    else:
        make_dataset(tmp_path / "v", classes=("ants", "bees"), train=0, test=3, seed=1)
        (tmp_path / "v/datasets/test").rename(dataset / "val")  # other pictures than test/
        archive = tmp_path / "photos.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(dataset.rglob("*.png")):
                zf.write(path, Path("photos") / path.relative_to(dataset))
        dataset = archive
    project = tmp_path / "project"
    project.mkdir()
    result = annotate(project, "--from", dataset)
    assert result.returncode == 0, result.stderr
    train, val, test = (len(paths(project, s)) for s in ("train", "val", "test"))
    if layout == "train-val-test-zip":  # every folder used as it is
        assert (train, val, test) == (20, 6, 6)
    elif layout == "train-val":  # test held out of train/, val/ as it is
        assert val == 6 and train + test == 20 and test >= 2
    else:  # both held out of the class folders
        assert train + val + test == 20 and val >= 2 and test >= 2


def test_an_empty_val_class_folder_is_an_error_naming_it(tmp_path):
    make_dataset(tmp_path, classes=("a", "b"), train=5, test=2)
    make_image(tmp_path / "datasets/val/a/0.png", COLOURS[0])
    (tmp_path / "datasets/val/b").mkdir()
    assert_clean_error(annotate(tmp_path), "datasets/val/b/", "no usable images")
    assert not (tmp_path / "cls_train.txt").exists()


def test_a_class_of_one_image_is_kept_for_training_and_said_so(tmp_path):
    make_dataset(tmp_path, classes=("a", "b"), train=10, test=1)
    for extra in range(1, 10):
        (tmp_path / f"datasets/train/b/{extra:03d}.png").unlink()
    result = annotate(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "class 'b' has 1 usable training image: kept for training" in result.stderr
    assert per_class(tmp_path, "train")["1"] == 1 and per_class(tmp_path, "val")["1"] == 0


def test_imbalance_is_reported_and_class_weights_suggested(tmp_path):
    make_dataset(tmp_path, classes=("big", "small"), train=40, test=1)
    for extra in range(8, 40):
        (tmp_path / f"datasets/train/small/{extra:03d}.png").unlink()
    result = annotate(tmp_path)
    assert result.returncode == 0, result.stderr
    counts = per_class(tmp_path, "train")
    assert f"imbalance: 'big' has {counts['0'] / counts['1']:.1f}x the training images of " \
        "'small'" in result.stdout
    assert "--class-weights auto" in result.stderr


@pytest.mark.parametrize("value, bound", [("0.6", "at most 0.5"), ("-0.1", "at least 0")])
def test_a_fraction_outside_0_to_half_is_exit_2(tmp_path, value, bound):
    make_dataset(tmp_path, train=2, test=1)
    assert_clean_error(annotate(tmp_path, "--val-fraction", value),
                       f"--val-fraction must be {bound}")


def test_lists_are_read_only_against_the_class_list_they_were_written_for(tmp_path):
    write_annotation(tmp_path / "cls_train.txt", [(1, tmp_path / "x.png")], ["a", "b"])
    assert read_annotation(tmp_path / "cls_train.txt", ["a", "b"])[0][0] == 1
    with pytest.raises(UserError, match="written for another class list"):
        read_annotation(tmp_path / "cls_train.txt", ["b", "a"])  # same names, other ids
    (tmp_path / "by_hand.txt").write_text("1;x.png\n")  # no fingerprint line: still read
    assert read_annotation(tmp_path / "by_hand.txt", ["b", "a"]) == [
        (1, str(tmp_path / "x.png"))]
