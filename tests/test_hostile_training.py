"""Hostile inputs, races and faults around training, checkpoints and outputs (issue 14).

Each test names the failure it guards against; each failed on the code before the fix.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from tests.helpers import ROOT, assert_clean_error, make_dataset, run_script, snapshot
from tests.test_predict import make_checkpoint
from tests.test_train import FAST
from utils.cli import UserError
from utils.data import batches as data
from utils.data import cache
from utils.model import checkpoint
from utils.model.checkpoint import load_checkpoint, save_checkpoint
from utils.train import loop as trainer


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """3 classes x 10 train / 2 test 16x16 images, annotated; the working directory."""
    make_dataset(tmp_path, classes=("blue", "green", "red"), train=10, test=2)
    assert run_script("txt_annotation.py", "--workers", "0", cwd=tmp_path).returncode == 0
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_two_runs_started_together_with_one_name_never_share_a_folder(project):
    """Both used to exit 0, the second overwriting the first's last.pth and metrics.csv."""
    command = [sys.executable, str(ROOT / "train.py"), *FAST, "--epochs", "2",
               "--run-name", "same"]
    procs = [subprocess.Popen(command, cwd=project, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "already holds a run" in loser or "just claimed by another run" in loser
    rows = (project / "logs/same/metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # a header and this run's two epochs, nobody else's


def test_default_names_in_the_same_second_get_folders_of_their_own(project, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    for _ in range(2):
        assert train.main([*FAST, "--epochs", "1"]) == 0
    assert sorted(p.name for p in (project / "logs").iterdir()) == [
        "mobilenetv2-20260101-000000", "mobilenetv2-20260101-000000-2"]


def test_a_periodic_checkpoint_torn_by_a_kill_is_written_on_resume(project, monkeypatch):
    """last.pth used to be saved first: a run killed while writing epoch_002.pth resumed
    after epoch 2 and never wrote that checkpoint."""
    real_save = trainer.save_checkpoint

    def killed_at_epoch_2(ckpt, path):
        if Path(path).name == "epoch_002.pth":
            raise SystemExit(137)  # the process dies mid-write: nothing after it runs
        real_save(ckpt, path)

    monkeypatch.setattr(trainer, "save_checkpoint", killed_at_epoch_2)
    with pytest.raises(SystemExit):
        train.main([*FAST, "--epochs", "3", "--save-period", "1", "--run-name", "torn"])
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert train.main(["--resume", "logs/torn/last.pth"]) == 0
    assert [load_checkpoint(f"logs/torn/epoch_{e:03d}.pth")["epoch"] for e in (1, 2, 3)] == \
        [1, 2, 3]


def test_resume_from_a_folder_that_is_not_a_run_is_refused_and_nothing_is_deleted(project):
    assert train.main([*FAST, "--epochs", "1", "--run-name", "r"]) == 0
    elsewhere = project / "downloads"
    elsewhere.mkdir()
    shutil.copy(project / "logs/r/last.pth", elsewhere / "last.pth")
    (elsewhere / ".draft.tmp").write_text("an unsaved note")
    before = snapshot(elsewhere)
    result = run_script("train.py", "--resume", elsewhere / "last.pth", cwd=project)
    assert_clean_error(result, "not a run folder", "--model-path")
    assert snapshot(elsewhere) == before


def spoil(field, value):
    def change(ckpt):
        ckpt[field] = value
    return change


@pytest.mark.parametrize("change, needle", [
    (spoil("mean", [0.5, 0.5]), "mean must be three numbers"),
    (spoil("model", torch.zeros(3)), "missing its weights"),
    (spoil("width_mult", "0.25"), "width_mult must be a number"),
    (spoil("classes", "rgb"), "classes must be a list of class names"),
    (spoil("classes", ["a", "a", "b"]), "distinct"),
    (spoil("input_shape", [16, 0]), "input_shape must be two whole numbers"),
    (spoil("version", 99), "version 99 is newer"),
    (spoil("backbone", "alexnet"), "unknown backbone 'alexnet'"),
], ids=["mean-2", "model-tensor", "width-string", "classes-string", "classes-twice",
        "shape-zero", "version-99", "backbone"])
def test_malformed_checkpoint_fields_are_one_line_errors(tmp_path, change, needle):
    make_checkpoint(tmp_path / "model.pth")
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / "model.pth")  # not save_checkpoint: that would fix the version
    image = make_dataset(tmp_path, train=1, test=0) / "train/cat/000.png"
    assert_clean_error(run_script("predict.py", image, "--model", "model.pth", cwd=tmp_path),
                       needle)


def test_eval_output_onto_a_file_or_into_the_dataset_is_refused_before_any_work(project):
    assert train.main([*FAST, "--epochs", "1", "--run-name", "r"]) == 0
    (project / "report.txt").write_text("keep me")
    before = snapshot(project / "datasets")
    for out, needle in [("report.txt", "is a file"),
                        ("datasets/train/red", "never go inside datasets/")]:
        result = run_script("eval.py", "--out", out, "--workers", "0", cwd=project)
        assert_clean_error(result, needle)
        assert "evaluating" not in result.stderr
    assert (project / "report.txt").read_text() == "keep me"
    assert snapshot(project / "datasets") == before


def test_a_full_disk_during_a_checkpoint_write_is_one_line(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError, which used to escape as a traceback."""
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(UserError, match="could not write checkpoint .*file write failed"):
        save_checkpoint({"epoch": 1}, tmp_path / "last.pth")
    assert list(tmp_path.iterdir()) == []


def test_a_decode_cache_that_cannot_be_written_leaves_nothing_and_data_still_flows(
        project, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.np, "save", full)
    samples = [(0, str(p)) for p in sorted((project / "datasets/train/red").iterdir())]
    batches = data.make_batches(samples, data.Geometry((16, 16)), 4, train=False,
                                source="red.txt", loading=data.Loading(cache_dir=project / "c"))
    assert sum(len(labels) for _, labels, _ in batches) == 10
    assert "decode cache not saved" in capsys.readouterr().err
    assert [p.name for p in (project / "c/decoded").iterdir()] == []


def test_two_processes_building_one_cold_cache_both_succeed(project):
    assert train.main([*FAST, "--epochs", "1", "--run-name", "r", "--no-cache"]) == 0
    command = [sys.executable, str(ROOT / "eval.py"), "--workers", "0", "--annotation",
               "cls_train.txt"]
    procs = [subprocess.Popen([*command, "--out", f"out{i}"], cwd=project,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    names = sorted(p.name for p in (project / ".cache/decoded").iterdir())
    assert len(names) == 2 and not [n for n in names if n.endswith(".tmp")]


def test_metrics_csv_resaved_with_a_bom_still_resumes(project):
    assert train.main([*FAST, "--epochs", "2", "--save-period", "1", "--run-name", "r"]) == 0
    shutil.copy("logs/r/epoch_001.pth", "logs/r/last.pth")
    csv = project / "logs/r/metrics.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # as a spreadsheet saves it
    assert train.main(["--resume", "logs/r/last.pth"]) == 0
    assert [r.split(",")[0] for r in csv.read_text().splitlines()[1:]] == ["1", "2"]


def test_logs_being_a_file_is_one_line(project):
    (project / "logs").write_text("not a folder")
    assert_clean_error(run_script("train.py", *FAST, "--epochs", "1", cwd=project),
                       "cannot create run folder")


def test_a_batch_of_one_image_is_refused_before_anything_runs(project):
    assert_clean_error(run_script("train.py", *FAST, "--batch-size", "1", "--input-shape", "8",
                                  "8", "--epochs", "1", cwd=project), "at least 2")
    assert not (project / "logs").exists()


def test_a_config_edited_by_hand_into_nonsense_is_refused_not_truncated(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"epochs": 1.5, "seed": 1e20}))
    assert_clean_error(run_script("train.py", "--config", tmp_path / "run.json",
                                  cwd=tmp_path), "epochs = 1.5 is not a valid int")
    (tmp_path / "run.json").write_text(json.dumps({"seed": 1e20}))
    assert_clean_error(run_script("train.py", "--config", tmp_path / "run.json",
                                  cwd=tmp_path), "--seed must be at most 4294967295")
