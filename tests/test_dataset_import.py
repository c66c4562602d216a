"""txt_annotation.py --from: importing folders and archives, safely and all-or-nothing."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import assert_clean_error, listed, make_dataset, run_script, snapshot


@pytest.fixture
def source(tmp_path) -> Path:
    """A user's dataset folder: ``src/flowers/{train,test}/{cat,dog}/``."""
    make_dataset(tmp_path / "src", train=2, test=1)
    (tmp_path / "src/datasets").rename(tmp_path / "src/flowers")
    return tmp_path / "src/flowers"


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "project/datasets").mkdir(parents=True)
    (tmp_path / "project/datasets/README.md").write_text("put your data here\n")
    return tmp_path / "project"


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pack(source: Path, archive: Path, wrap: bool) -> Path:
    """Archive ``source``'s train/ and test/, inside one top-level folder if ``wrap``."""
    prefix = f"{source.name}/" if wrap else ""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in files_under(source).items():
                zf.writestr(prefix + name, data)
    else:
        with tarfile.open(archive, "w:gz" if archive.name.endswith(".gz") else "w") as tar:
            for split in ("train", "test"):
                tar.add(source / split, arcname=prefix + split)
    return archive


def import_(project, *args):
    result = run_script("txt_annotation.py", "--from", *args, cwd=project)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.parametrize("kind, wrap", [("folder", True), ("zip", False), ("zip", True),
                                        ("tar", False), ("tar.gz", True)])
def test_import_copies_the_files_byte_for_byte_and_annotates(project, source, kind, wrap):
    if kind == "folder":
        src = source.parent if wrap else source
    else:
        src = pack(source, source.parent / f"data.{kind}", wrap)
    result = import_(project, src)
    assert result.returncode == 0, result.stderr
    for split in ("train", "test"):
        assert files_under(project / "datasets" / split) == files_under(source / split)
    assert (project / "datasets/README.md").exists()  # the rest of datasets/ is left alone
    hidden = [p.name for p in (project / "datasets").iterdir() if p.name.startswith(".")]
    assert hidden == [".origin.json"]  # no staging folder left; where the dataset came from
    assert len(listed(project, "train", "val")) == 4  # val: held out of train/
    assert (project / "model_data/cls_classes.txt").read_text() == "cat\ndog\n"


def test_an_existing_dataset_is_never_replaced_nor_silently_kept_without_force(
        project, source, tmp_path):
    """The same, unchanged source again: left as is.  Another dataset, or the source edited
    since: an error naming --force (the old behaviour said "left as is" and trained on the
    previous dataset)."""
    assert import_(project, source).returncode == 0
    before = snapshot(project / "datasets")
    result = import_(project, source)
    assert result.returncode == 0, result.stderr
    assert "as imported: left as is" in result.stdout
    assert "(unchanged)" in result.stdout  # annotations are still checked and refreshed
    other = make_dataset(tmp_path / "other", classes=("ant", "bee"), train=1, test=1)
    assert_clean_error(import_(project, other), "already holds another dataset", "--force",
                       f"make train DATA={other} FORCE=1")
    (source / "train" / "cat" / "000.png").rename(source / "train" / "cat" / "new.png")
    assert_clean_error(import_(project, source), "an older import", "--force")
    assert snapshot(project / "datasets") == before

    result = import_(project, other, "--force")
    assert result.returncode == 0, result.stderr
    assert files_under(project / "datasets/train") == files_under(other / "train")
    assert (project / "model_data/cls_classes.txt").read_text() == "ant\nbee\n"


# --------------------------------------------------------------------------------------------
# Hostile and broken archives: refused, nothing written anywhere, datasets/ as it was


def evil_tar(path: Path, outside: Path, how: str) -> Path:
    members = {
        "dotdot": tarfile.TarInfo("train/cat/../../../outside/evil.png"),
        "absolute": tarfile.TarInfo(str(outside / "evil.png")),
        "symlink": tarfile.TarInfo("train/cat/link.png"),
        "hardlink": tarfile.TarInfo("train/cat/hard.png"),
        "device": tarfile.TarInfo("train/cat/dev.png"),
    }
    evil = members[how]
    if how == "symlink":
        evil.type, evil.linkname = tarfile.SYMTYPE, str(outside / "evil.png")
    elif how == "hardlink":
        evil.type, evil.linkname = tarfile.LNKTYPE, "train/cat/000.png"
    elif how == "device":
        evil.type, evil.devmajor, evil.devminor = tarfile.CHRTYPE, 1, 3
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("train/cat/000.png")
        ok.size = 4
        tar.addfile(ok, io.BytesIO(b"\x89PNG"))
        if evil.isfile():
            evil.size = 4
            tar.addfile(evil, io.BytesIO(b"evil"))
        else:
            tar.addfile(evil)
    return path


def evil_zip(path: Path, outside: Path, how: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/cat/000.png", b"\x89PNG")
        if how == "symlink":
            info = zipfile.ZipInfo("train/cat/link.png")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, str(outside / "evil.png"))
        else:
            name = {"dotdot": "../outside/evil.png", "absolute": str(outside / "evil.png"),
                    "backslash": "..\\outside\\evil.png"}[how]
            zf.writestr(zipfile.ZipInfo(name), b"evil")
    return path


@pytest.mark.parametrize("fmt, how", [
    ("tar", "dotdot"), ("tar", "absolute"), ("tar", "symlink"), ("tar", "hardlink"),
    ("tar", "device"), ("zip", "dotdot"), ("zip", "absolute"), ("zip", "symlink"),
    ("zip", "backslash"),
])
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path, project, fmt, how):
    make_dataset(project, train=1, test=1)  # even --force must not lose the current dataset
    outside = tmp_path / "outside"
    make = evil_tar if fmt == "tar" else evil_zip
    archive = make(tmp_path / f"evil.{fmt}", outside, how)
    before = snapshot(tmp_path)
    assert_clean_error(import_(project, archive, "--force"), "refused", str(archive))
    assert snapshot(tmp_path) == before
    assert not outside.exists()


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(b""), "not a folder or a .zip"),
    (lambda p: p.write_text("hello"), "not a folder or a .zip"),
    (lambda p: p.write_bytes(pack(p.parent.parent / "src/flowers", p.parent / "ok.tar.gz",
                                  False).read_bytes()[:3000]), "cannot read archive"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("photos/a.png", b"x"),
     "holds one class folder (photos): a classifier needs at least two classes"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("a.png", b"x"),
     "must hold train/<class>/ (with optional val/ and test/), or just one folder per class"),
], ids=["empty-file", "text-file", "truncated-tar.gz", "one-class", "wrong-layout"])
def test_broken_archives_are_clean_errors_and_leave_datasets_alone(tmp_path, project, source,
                                                                   make, needle):
    # `source` provides src/flowers for the truncated archive.
    (tmp_path / "in").mkdir()
    archive = tmp_path / "in/data.bin"
    make(archive)
    before = snapshot(project)
    assert_clean_error(import_(project, archive), needle)
    assert snapshot(project) == before


def test_a_missing_source_is_a_clean_error(project):
    assert_clean_error(import_(project, "no/such/place.zip"), "no such file")


def test_importing_datasets_into_itself_is_refused(project, source):
    assert import_(project, source).returncode == 0
    assert_clean_error(import_(project, "datasets", "--force"), "overlaps")
    assert len(files_under(project / "datasets/train")) == 4


@pytest.mark.parametrize("name, kind", [("validation", "folder"), ("valid", "folder"),
                                        ("validation", "tar"), ("valid", "zip")])
def test_a_validation_or_valid_folder_is_the_validation_set(project, source, name, kind):
    """Keras and Kaggle sets (cats_and_dogs_filtered: train/ and validation/) import with
    their validation images as val/, instead of carving one out of train/."""
    (source / "test").rename(source / name)
    src = source if kind == "folder" else pack_all(source, source.parent / f"data.{kind}")
    result = import_(project, src)
    assert result.returncode == 0, result.stderr
    assert f"{name}/ is the validation set: imported as val/" in result.stdout
    assert files_under(project / "datasets/val") == files_under(source / name)
    assert not (project / "datasets" / name).exists()
    assert len(listed(project, "train")) + len(listed(project, "test")) == 4  # test: carved
    assert sorted(Path(line.split(";", 1)[1]).parent.parent.name
                  for line in listed(project, "val")) == ["val", "val"]


def test_two_validation_folders_are_refused_and_nothing_is_written(project, source):
    for name in ("val", "validation"):
        make_dataset(source / "_tmp", train=1, test=0)
        (source / "_tmp/datasets/train").rename(source / name)
    (source / "_tmp").rename(source.parent / "elsewhere")
    before = snapshot(project)
    assert_clean_error(import_(project, source), "both val/ and validation/",
                       "merge them into one")
    assert snapshot(project) == before


def test_a_validation_folder_put_in_datasets_by_hand_is_read_as_val(project, source):
    """Without an import: datasets/validation/ is the validation set too."""
    for split in ("train", "test"):
        (source / split).rename(project / "datasets" / split)
    make_dataset(project / "more", train=1, test=0, seed=1)  # other pictures than train/
    (project / "more/datasets/train").rename(project / "datasets/validation")
    result = run_script("txt_annotation.py", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "datasets/validation/" in result.stdout
    assert sorted(line.split(";", 1)[1] for line in listed(project, "val")) == [
        "datasets/validation/cat/000.png", "datasets/validation/dog/000.png"]


def pack_all(source: Path, archive: Path) -> Path:
    """Archive every split folder of ``source`` (whatever their names), unwrapped."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in files_under(source).items():
                zf.writestr(name, data)
    else:
        with tarfile.open(archive, "w") as tar:
            for split in sorted(p.name for p in source.iterdir()):
                tar.add(source / split, arcname=split)
    return archive
