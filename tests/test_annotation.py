"""txt_annotation.py on a user's folders, and the annotation files it writes."""
from __future__ import annotations

import os

import pytest

from tests.helpers import (COLOURS, assert_clean_error, make_dataset, make_image, run_script,
                           snapshot)
from utils.cli import UserError
from utils.data.lists import read_annotation, read_classes, write_annotation


def annotate(cwd, *args):
    result = run_script("txt_annotation.py", *args, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def lines(path):
    """A file's lines, without an annotation file's fingerprint line."""
    return [l for l in path.read_text().splitlines() if not l.startswith("# classes:")]


def warnings(result):
    return [l for l in result.stderr.splitlines() if l.startswith("warning:")]


def test_classes_are_the_sorted_train_folders_and_lines_point_at_every_image(tmp_path):
    make_dataset(tmp_path, classes=("zebra", "Ant", "cat"), train=3, test=2)
    make_image(tmp_path / "datasets/train/cat/nested/deeper.png", COLOURS[0])  # sub-folders count
    result = annotate(tmp_path, "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    assert warnings(result) == []
    assert lines(tmp_path / "model_data/cls_classes.txt") == ["Ant", "cat", "zebra"]
    train = lines(tmp_path / "cls_train.txt")
    assert train[:3] == [f"0;datasets/train/Ant/{i:03d}.png" for i in range(3)]
    assert "1;datasets/train/cat/nested/deeper.png" in train
    assert len(train) == 10 and len(lines(tmp_path / "cls_test.txt")) == 6
    # The table gives the per-class counts.
    assert any(l.split() == ["cat", "4", "0", "2", "0", "0"] for l in result.stdout.splitlines())
    # Relative paths resolve against the annotation file's folder, from any working directory.
    samples = read_annotation(tmp_path / "cls_train.txt", ["Ant", "cat", "zebra"])
    assert samples[0] == (0, os.path.join(tmp_path, "datasets/train/Ant/000.png"))
    assert all(os.path.isfile(p) for _, p in samples)


def test_a_rerun_changes_nothing_and_says_so(tmp_path):
    make_dataset(tmp_path, train=2, test=1)
    assert annotate(tmp_path).returncode == 0
    outputs = [tmp_path / "cls_train.txt", tmp_path / "cls_val.txt", tmp_path / "cls_test.txt",
               tmp_path / "model_data/cls_classes.txt"]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    result = annotate(tmp_path)
    assert result.returncode == 0
    assert result.stdout.count("(unchanged)") == 4
    assert {p: p.stat().st_mtime_ns for p in outputs} == before


def test_a_file_damaged_after_a_run_is_caught_on_the_next(tmp_path):
    make_dataset(tmp_path, train=2, test=1)
    assert annotate(tmp_path).returncode == 0  # verdicts are now cached
    victim = tmp_path / "datasets/train/cat/001.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    result = annotate(tmp_path)
    assert result.returncode == 0
    assert any("datasets/train/cat/001.png" in w and "truncated" in w for w in warnings(result))
    assert "0;datasets/train/cat/001.png" not in lines(tmp_path / "cls_train.txt")


def test_a_test_class_missing_from_train_is_an_error_naming_it(tmp_path):
    make_dataset(tmp_path)
    make_image(tmp_path / "datasets/test/wolf/0.png", COLOURS[2])
    assert_clean_error(annotate(tmp_path), "wolf")
    assert not (tmp_path / "cls_train.txt").exists()


def test_hidden_files_and_folders_are_ignored(tmp_path):
    make_dataset(tmp_path, train=2, test=1)
    make_image(tmp_path / "datasets/train/.trash/0.png", COLOURS[0])  # hidden class folder
    make_image(tmp_path / "datasets/train/cat/.ipynb_checkpoints/0.png", COLOURS[0])
    (tmp_path / "datasets/train/cat/._000.png").write_bytes(b"AppleDouble junk")
    (tmp_path / "datasets/train/cat/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    result = annotate(tmp_path)
    assert result.returncode == 0 and warnings(result) == []
    assert lines(tmp_path / "model_data/cls_classes.txt") == ["cat", "dog"]
    assert not any("/." in l for l in lines(tmp_path / "cls_train.txt"))


def test_extensions_match_in_any_case_and_other_files_are_reported(tmp_path):
    make_dataset(tmp_path, train=1, test=1)
    for name, fmt in [("a.JPG", "JPEG"), ("b.Png", "PNG"), ("c.JpEg", "JPEG"), ("d.TIFF", "TIFF")]:
        make_image(tmp_path / "datasets/train/cat" / name, COLOURS[0], fmt=fmt)
    (tmp_path / "datasets/train/cat/notes.txt").write_text("where these came from")
    result = annotate(tmp_path)
    assert result.returncode == 0
    train = lines(tmp_path / "cls_train.txt")
    for name in ["a.JPG", "b.Png", "c.JpEg", "d.TIFF"]:
        assert f"0;datasets/train/cat/{name}" in train
    assert any("ignored 1 file" in w and "notes.txt" in w for w in warnings(result))


def test_unusable_images_are_skipped_and_listed_with_a_reason(tmp_path):
    make_dataset(tmp_path, train=2, test=1)
    bad = tmp_path / "datasets/train/dog"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.png").write_text("not a picture")
    good = (bad / "000.png").read_bytes()
    (bad / "cut.png").write_bytes(good[: len(good) // 2])
    result = annotate(tmp_path, "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    skipped = {w.split()[2].rstrip(":"): w for w in warnings(result) if "skipped" in w}
    assert set(skipped) == {f"datasets/train/dog/{n}" for n in ["empty.jpg", "text.png", "cut.png"]}
    assert "empty file" in skipped["datasets/train/dog/empty.jpg"]
    assert "not an image" in skipped["datasets/train/dog/text.png"]
    assert "truncated" in skipped["datasets/train/dog/cut.png"]
    assert lines(tmp_path / "cls_train.txt") == [
        "0;datasets/train/cat/000.png", "0;datasets/train/cat/001.png",
        "1;datasets/train/dog/000.png", "1;datasets/train/dog/001.png"]
    assert any(l.split() == ["dog", "2", "0", "1", "3", "0"] for l in result.stdout.splitlines())
    assert any(l.split() == ["total", "4", "0", "2", "3", "0"] for l in result.stdout.splitlines())


def test_an_empty_class_warns_and_keeps_its_class_id(tmp_path):
    make_dataset(tmp_path, classes=("cat", "dog"), train=2, test=1)
    (tmp_path / "datasets/train/bird").mkdir()
    result = annotate(tmp_path)
    assert result.returncode == 0
    assert any("'bird'" in w and "datasets/train/bird" in w for w in warnings(result))
    assert any("'bird'" in w and "datasets/test/bird" in w for w in warnings(result))
    assert lines(tmp_path / "model_data/cls_classes.txt") == ["bird", "cat", "dog"]
    assert lines(tmp_path / "cls_train.txt")[0].startswith("1;datasets/train/cat/")


def _only_empty_files(root):
    make_dataset(root, train=1, test=1)
    for path in (root / "datasets/train").rglob("*.png"):
        path.write_bytes(b"")


@pytest.mark.parametrize("setup, needle", [
    (lambda root: None, "datasets/train"),
    (lambda root: (root / "datasets/train").mkdir(parents=True), "no class folders"),
    (lambda root: [(root / "datasets" / s).mkdir(parents=True) for s in ("train", "test")],
     "no class folders"),
    (_only_empty_files, "no usable"),
], ids=["no-datasets", "train-only-and-empty", "no-classes", "nothing-usable"])
def test_a_missing_or_empty_dataset_is_a_clean_error(tmp_path, setup, needle):
    setup(tmp_path)
    (tmp_path / "model_data").mkdir(exist_ok=True)
    before = snapshot(tmp_path)
    assert_clean_error(annotate(tmp_path), needle)
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(".cache")}
    assert after == before


def test_one_class_is_not_a_classifier_and_the_error_says_so(tmp_path):
    make_dataset(tmp_path, classes=["cat"], train=3, test=1)
    assert_clean_error(annotate(tmp_path), "one class folder (cat)", "at least two classes")
    photos = tmp_path / "photos" / "cat"  # an import of a folder holding one class
    make_image(photos / "a.png", COLOURS[0])
    result = run_script("txt_annotation.py", "--from", tmp_path / "photos", "--force",
                        cwd=tmp_path)
    assert_clean_error(result, "one class folder (cat)", "at least two classes")


def test_annotations_can_be_written_elsewhere(tmp_path):
    make_dataset(tmp_path, train=1, test=1)
    result = annotate(tmp_path, "--out-dir", "lists", "--classes", "lists/classes.txt",
                      "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert read_classes(tmp_path / "lists/classes.txt") == ["cat", "dog"]
    samples = read_annotation(tmp_path / "lists/cls_test.txt")
    assert [os.path.isfile(p) for _, p in samples] == [True, True]


# --------------------------------------------------------------------------------------------
# Reading annotation files


def test_missing_files_tell_the_user_what_to_run(tmp_path):
    with pytest.raises(UserError, match="python txt_annotation.py"):
        read_annotation(tmp_path / "cls_train.txt")
    with pytest.raises(UserError, match="python txt_annotation.py"):
        read_classes(tmp_path / "cls_classes.txt")


@pytest.mark.parametrize("bad", ["datasets/a.png", "x;datasets/a.png", "-1;a.png", "3;", "1 a.png"])
def test_a_malformed_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "cls_train.txt"
    path.write_text(f"0;datasets/ok.png\n{bad}\n")
    with pytest.raises(UserError, match=r"cls_train.txt:2: malformed"):
        read_annotation(path)


def test_a_label_out_of_range_is_reported(tmp_path):
    path = tmp_path / "cls_test.txt"
    path.write_text("0;a.png\n5;b.png\n")
    with pytest.raises(UserError, match=r"cls_test.txt:2: class id 5 is out of range for 2"):
        read_annotation(path, ["a", "b"])


def test_written_paths_are_relative_inside_the_folder_and_absolute_outside(tmp_path):
    inside, outside = tmp_path / "proj/datasets/x;y.png", tmp_path / "elsewhere/z.png"
    write_annotation(tmp_path / "proj/cls_train.txt", [(0, inside), (1, outside)])
    assert lines(tmp_path / "proj/cls_train.txt") == [
        "0;datasets/x;y.png", f"1;{outside.as_posix()}"]
    assert read_annotation(tmp_path / "proj/cls_train.txt") == [(0, str(inside)),
                                                                (1, str(outside))]
