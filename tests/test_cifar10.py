"""txt_annotation.py --cifar10: exporting the official python archive as PNG class folders."""
from __future__ import annotations

import functools
import http.server
import io
import pickle
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import (assert_clean_error, listed, make_cifar10_archive, make_dataset,
                           run_script, snapshot)

#: No test may reach the network: downloads go to a closed local port and fail at once.
OFFLINE = {"CIFAR10_URL": "http://127.0.0.1:9/cifar-10-python.tar.gz", "CIFAR10_ARCHIVE": ""}


def cifar(cwd, *args, env=None):
    result = run_script("txt_annotation.py", *args, cwd=cwd, env={**OFFLINE, **(env or {})})
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_export_writes_lossless_pngs_in_class_folders(tmp_path):
    classes = ("frog", "cat", "dog")  # archive order; the class list is sorted
    archive = make_cifar10_archive(tmp_path / "cifar.tar.gz", classes, per_batch=4, test=3)
    result = cifar(tmp_path, "--cifar10", "--cifar10-archive", archive)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model_data/cls_classes.txt").read_text() == "cat\ndog\nfrog\n"
    train = sorted(p.relative_to(tmp_path / "datasets/train").as_posix()
                   for p in (tmp_path / "datasets/train").rglob("*.png"))
    assert len(train) == 20 and train[:2] == ["cat/00001.png", "cat/00004.png"]
    assert len(list((tmp_path / "datasets/test").rglob("*.png"))) == 3
    assert len(listed(tmp_path, "train", "val")) == 20  # val: held out of train/

    # Image 6 is row 2 of data_batch_2, label 6 % 3 = frog; its pixels survive exactly.
    with tarfile.open(archive) as tar:
        batch = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_2"))
    expected = batch[b"data"][2].reshape(3, 32, 32).transpose(1, 2, 0)
    png = Image.open(tmp_path / "datasets/train/frog/00006.png")
    assert png.size == (32, 32) and np.array_equal(np.asarray(png.convert("RGB")), expected)


def test_the_archive_can_come_from_the_environment(tmp_path):
    archive = make_cifar10_archive(tmp_path / "cifar.tar.gz")
    result = cifar(tmp_path, "--cifar10", env={"CIFAR10_ARCHIVE": str(archive)})
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "datasets/test").rglob("*.png"))) == 3


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _archive_with(path, member, obj):
    make_cifar10_archive(path.with_suffix(".base"))
    with tarfile.open(path.with_suffix(".base")) as src, tarfile.open(path, "w:gz") as dst:
        for info in src.getmembers():
            if info.name.endswith("/" + member):
                data = pickle.dumps(obj)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
            else:
                dst.addfile(info, src.extractfile(info))
    return path


@pytest.mark.parametrize("case, needle", [
    ("missing", "missing cifar-10-batches-py/data_batch_3, cifar-10-batches-py/test_batch"),
    ("code", "refusing to load io.open"),
    ("label", "unusable class name '../escape'"),
    ("shape", "malformed"),
    ("not-tar", "cannot read CIFAR-10 archive"),
])
def test_a_bad_archive_is_refused_before_anything_is_written(tmp_path, case, needle):
    archive = tmp_path / "in/cifar.tar.gz"
    marker = tmp_path / "code-ran"
    if case == "missing":
        make_cifar10_archive(archive, members={"data_batch_1", "data_batch_2", "data_batch_4",
                                               "data_batch_5", "batches.meta"})
    elif case == "code":
        _archive_with(archive, "data_batch_1", {b"data": _Payload(marker), b"labels": []})
    elif case == "label":
        _archive_with(archive, "batches.meta", {b"label_names": [b"cat", b"../escape"]})
    elif case == "shape":
        _archive_with(archive, "test_batch", {b"data": np.zeros((2, 100), np.uint8),
                                              b"labels": [0, 1]})
    else:
        archive.parent.mkdir(parents=True)
        archive.write_text("not an archive")
    make_dataset(tmp_path, train=1, test=1)
    before = snapshot(tmp_path)
    assert_clean_error(cifar(tmp_path, "--cifar10-archive", archive, "--force"), needle)
    assert snapshot(tmp_path) == before and not marker.exists()


def test_offline_without_an_archive_is_one_line_naming_both_ways_out(tmp_path):
    start = time.monotonic()
    result = cifar(tmp_path, "--cifar10")
    assert_clean_error(result, "cannot download CIFAR-10", "--cifar10-archive PATH",
                       "CIFAR10_ARCHIVE", "--from PATH")
    assert time.monotonic() - start < 60
    assert not (tmp_path / "datasets").exists()
    assert list((tmp_path / "model_data").iterdir()) == []  # no partial download left


def test_a_download_with_the_wrong_checksum_is_refused(tmp_path):
    # A local web server stands in for the real one: the tiny archive is not the official file.
    make_cifar10_archive(tmp_path / "www/cifar-10-python.tar.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tmp_path / "www")
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
        result = cifar(tmp_path, "--cifar10", env={"CIFAR10_URL": url})
        server.shutdown()
    assert_clean_error(result, "checksum", "--cifar10-archive PATH", "--from PATH")
    assert list((tmp_path / "model_data").iterdir()) == []
    assert not (tmp_path / "datasets").exists()


def test_an_existing_dataset_is_kept_without_force_and_nothing_is_downloaded(tmp_path):
    make_dataset(tmp_path, train=1, test=1)
    before = snapshot(tmp_path / "datasets")
    result = cifar(tmp_path, "--cifar10")  # offline: would fail if it tried to download
    assert_clean_error(result, "already holds another dataset", "--force")
    assert snapshot(tmp_path / "datasets") == before
