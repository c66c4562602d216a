"""``txt_annotation.py --apply relabel.csv`` and ``--undo`` (issue 23): files move, never get
deleted, every row is checked before anything moves, and apply then undo leaves datasets/
byte for byte as it was."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.helpers import (COLOURS, assert_clean_error, listed, make_dataset, make_image,
                           run_script, snapshot)
from utils.cli import UserError
from utils.data import relabel


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> SHA-256 of its bytes ('dir')."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root)] = "dir"
        for f in files:
            path = os.path.join(folder, f)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@pytest.fixture
def project(tmp_path):
    """datasets/{train,test}/{cat,dog}/ (and a nested folder), annotated."""
    make_dataset(tmp_path, classes=("cat", "dog"), train=4, test=2)
    make_image(tmp_path / "datasets/train/dog/sub/9.png", COLOURS[1], seed=9)
    assert run_script("txt_annotation.py", "--workers", "0", cwd=tmp_path).returncode == 0
    return tmp_path


def write_csv(path: Path, rows, header="path,class") -> Path:
    path.write_text(header + "\n" + "".join(f"{p},{c}\n" for p, c in rows), encoding="utf-8")
    return path


def annotate(project: Path, *args):
    return run_script("txt_annotation.py", "--workers", "0", *args, cwd=project)


def test_apply_moves_reannotates_and_undo_restores_every_byte(project):
    before = tree(project / "datasets")
    write_csv(project / "relabel.csv", [
        ("datasets/train/cat/000.png", "dog"),       # the name is taken in dog/: renamed
        ("datasets/train/cat/001.png", "_removed"),
        ("datasets/test/dog/001.png", "cat"),
        ("datasets/train/dog/sub/9.png", "cat"),     # its sub-folder kept (created)
    ])
    result = annotate(project, "--apply", "relabel.csv")
    assert result.returncode == 0, result.stderr
    assert "moved 4 image(s)" in result.stdout
    after = tree(project / "datasets")
    assert after["train/dog/000~cat.png"] == before["train/cat/000.png"]
    assert after["_removed/train/cat/001.png"] == before["train/cat/001.png"]
    assert after["test/cat/001~dog.png"] == before["test/dog/001.png"]
    assert after["train/cat/sub/9.png"] == before["train/dog/sub/9.png"]
    files = lambda t: sorted(v for v in t.values() if v != "dir")  # noqa: E731
    assert files(after) == files(before)  # nothing deleted, nothing copied
    # Re-annotated: the lists follow the move, the removed image is in none.
    lines = listed(project, "train", "val", "test")
    assert "1;datasets/train/dog/000~cat.png" in lines and "0;datasets/train/cat/sub/9.png" in lines
    assert not [l for l in lines if "001.png" in l and "train/cat" in l]
    result = annotate(project, "--undo")
    assert result.returncode == 0 and "moved 4 image(s) back" in result.stdout
    assert tree(project / "datasets") == before
    assert "datasets/train/cat/001.png" in " ".join(listed(project, "train", "val", "test"))
    assert "nothing to undo" in annotate(project, "--undo").stdout  # twice: harmless
    assert tree(project / "datasets") == before


def test_applying_the_same_file_twice_is_harmless(project):
    write_csv(project / "relabel.csv", [("datasets/train/cat/000.png", "dog"),
                                        ("datasets/train/cat/002.png", "cat")])  # already
    assert "moved 1 image(s)" in annotate(project, "--apply", "relabel.csv").stdout
    once = tree(project / "datasets")
    again = annotate(project, "--apply", "relabel.csv")
    assert again.returncode == 0 and "nothing to move" in again.stdout
    assert tree(project / "datasets") == once


@pytest.mark.parametrize("row, message", [
    (("../outside.png", "dog"), "outside datasets/: refused"),
    (("/etc/hostname", "dog"), "outside datasets/: refused"),
    (("datasets/train/cat/../../../outside.png", "dog"), "outside datasets/: refused"),
    (("datasets/train/cat/missing.png", "dog"), "no such file"),
    (("datasets/train/cat/002.png", "horse"), "unknown class 'horse'"),
    (("datasets/train/cat", "dog"), "not an image in a class folder"),
    (("datasets/train/dog/sub", "cat"), "is a folder"),
    (("datasets/loose.png", "dog"), "not an image in a class folder"),
    (("", "dog"), "no path"),
])
def test_a_bad_row_is_one_line_and_changes_nothing(project, row, message):
    (project / "outside.png").write_bytes(b"x")
    (project / "datasets" / "loose.png").write_bytes(b"x")
    # A good row first: it must not move either, since every row is checked first.
    write_csv(project / "relabel.csv", [("datasets/train/cat/000.png", "dog"), row])
    before = snapshot(project)
    result = annotate(project, "--apply", "relabel.csv")
    assert_clean_error(result, message, "relabel.csv:3")
    assert snapshot(project) == before


def test_a_link_out_of_datasets_a_bad_header_and_two_classes_for_one_image(project):
    (project / "elsewhere").mkdir()
    (project / "elsewhere" / "x.png").write_bytes(b"x")
    os.symlink(project / "elsewhere", project / "datasets/train/cat/linked")
    before = snapshot(project / "datasets")
    for rows, header, message in [
            ([("datasets/train/cat/linked/x.png", "dog")], "path,class", "outside"),
            ([("datasets/train/cat/000.png", "dog")], "file,label", "must name the columns"),
            ([("datasets/train/cat/000.png", "dog"), ("datasets/train/cat/000.png", "_removed")],
             "path,class", "listed twice")]:
        write_csv(project / "r.csv", rows, header)
        assert_clean_error(annotate(project, "--apply", "r.csv"), message)
    assert_clean_error(annotate(project, "--apply", "nope.csv"), "no such file")
    assert snapshot(project / "datasets") == before


def test_a_spreadsheet_saved_file_is_read_as_meant(project):
    """Excel adds a BOM and may keep extra columns; a cell the project's CSV writers
    prefixed with ' (a class named like a formula) means the class."""
    os.rename(project / "datasets/train/dog", project / "datasets/train/=dog")
    os.rename(project / "datasets/test/dog", project / "datasets/test/=dog")
    text = '\ufeffpath,class,given\n"datasets/train/cat/000.png","\'=dog","cat"\n'
    (project / "r.csv").write_text(text, encoding="utf-8")
    result = annotate(project, "--apply", "r.csv")
    assert result.returncode == 0, result.stderr
    assert (project / "datasets/train/=dog/000~cat.png").exists()


def test_the_flags_are_alternatives(project):
    assert_clean_error(annotate(project, "--apply", "x.csv", "--undo"), "alternatives")
    assert_clean_error(annotate(project, "--undo", "--from", "photos"), "without --from")


def test_an_interrupted_batch_is_undone_and_a_retaken_place_stops_the_undo(project,
                                                                          monkeypatch):
    monkeypatch.chdir(project)
    before = tree(project / "datasets")
    write_csv(project / "relabel.csv", [("datasets/train/cat/000.png", "dog"),
                                        ("datasets/train/cat/001.png", "dog")])
    real_rename, calls = os.rename, []

    def dies_on_the_second(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed half-way
        real_rename(a, b)

    monkeypatch.setattr(relabel.os, "rename", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        relabel.apply("relabel.csv", "datasets", ["cat", "dog"])
    monkeypatch.setattr(relabel.os, "rename", real_rename)
    assert tree(project / "datasets") != before
    assert len(relabel.undo("datasets")) == 1
    assert tree(project / "datasets") == before
    # A place taken again since the move: the undo refuses, nothing moves.
    relabel.apply("relabel.csv", "datasets", ["cat", "dog"])
    make_image(project / "datasets/train/cat/000.png", COLOURS[2], seed=5)
    moved = tree(project / "datasets")
    with pytest.raises(UserError, match="exists again"):
        relabel.undo("datasets")
    assert tree(project / "datasets") == moved
