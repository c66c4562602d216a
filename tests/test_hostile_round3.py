"""The third hostile round (issue 21): nothing escapes, nothing is overwritten, every figure
is right and every refusal is one line.  One test per finding, through the real commands.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import train
import txt_annotation
from tests.helpers import (COLOURS, ROOT, assert_clean_error, make_dataset, make_image,
                           run_script, snapshot, working_directory)
from tests.test_predict import make_checkpoint
from tests.test_train import FAST
from utils.cli import UserError
from utils.evaluation.metrics import class_report
from utils.inference.bulk import write_new
from utils.model.checkpoint import load_checkpoint, save_checkpoint
from utils.model.spec import ModelSpec

CLASSES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """3 classes x 12 train / 3 test 16x16 images, annotated, and a 2-epoch run in
    logs/run/ (trained in this process: the rows pay for script start-up only)."""
    root = tmp_path_factory.mktemp("round3")
    make_dataset(root, classes=CLASSES, train=12, test=3)
    with working_directory(root):
        txt_annotation.main(["--workers", "0"])
        train.main([*FAST, "--epochs", "2", "--save-period", "1", "--run-name", "run"])
    return root


@pytest.fixture()
def project(base, tmp_path) -> Path:
    shutil.copytree(base, tmp_path / "p", symlinks=True)
    return tmp_path / "p"


# ------------------------------------------------------------------------------- security
def fake_venv(folder: Path, fail_import: bool = False) -> Path:
    """The Makefile beside a stand-in .venv whose python records each call's arguments."""
    shutil.copy(ROOT / "Makefile", folder / "Makefile")
    (folder / "requirements.txt").write_text("")
    os.utime(folder / "requirements.txt", (0, 0))
    bin_ = folder / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (folder / ".venv" / ".installed-runtime").touch()
    log = folder / "calls.json"
    (bin_ / "python").write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f: f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1:2] == ['-c']:  # the train.py launcher: print what it would run\n"
        "    os.execv = lambda path, argv: print(json.dumps(argv[1:]))\n"
        "    exec(sys.argv[2])\n"
        f"sys.exit(2 if {fail_import} and sys.argv[1:2] == ['txt_annotation.py'] else 0)\n")
    (bin_ / "python").chmod(0o755)
    return log


@pytest.mark.parametrize("data", ['x"; touch PWNED; echo "', "x`touch PWNED`", "$(touch PWNED)",
                                  "$(shell touch PWNED)", "it's a folder"])
def test_make_train_data_is_a_path_never_shell_code(tmp_path, data):
    log = fake_venv(tmp_path)
    result = subprocess.run(["make", "-s", "train", f"DATA={data}",
                             "ARGS=--epochs 2 `touch PWNED2`; touch PWNED3"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.glob("PWNED*"))
    first = json.loads(log.read_text().splitlines()[0])
    assert first == ["txt_annotation.py", "--from", data]
    assert '"--epochs", "2", "`touch", "PWNED2`;", "touch", "PWNED3"' in result.stdout


def test_make_train_stops_when_the_import_fails(tmp_path):
    log = fake_venv(tmp_path, fail_import=True)
    result = subprocess.run(["make", "-s", "train", "DATA=missing"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert [json.loads(line)[0] for line in log.read_text().splitlines()] == \
        ["txt_annotation.py"]  # train.py never ran on the old data


@pytest.mark.parametrize("name", ["..", "x/../../escaped", "/tmp/abs", ".hidden", " pad"])
def test_a_model_with_a_class_name_that_is_no_folder_name_is_refused(project, name):
    make_checkpoint(project / "evil.pth", classes=["blue", name, "red"], input_shape=(16, 16))
    before = snapshot(project.parent)
    result = run_script("predict.py", "datasets/test", "--model", "evil.pth",
                        "--sort-into", "sorted", cwd=project)
    assert_clean_error(result, "evil.pth", "class name")
    assert snapshot(project.parent) == before
    with pytest.raises(UserError, match="class name"):  # .onnx metadata: the same reader
        ModelSpec.from_dict({"backbone": "onnx", "classes": ["a", name], "input_shape": [8, 8]})


def test_csv_files_never_hold_a_spreadsheet_formula(project):
    classes = ["=HYPERLINK(1)", "+cmd", "@sum"]
    for old, new in zip(CLASSES, classes):
        for split in ("train", "test"):
            os.rename(project / "datasets" / split / old, project / "datasets" / split / new)
    make_image(project / "datasets/test/+cmd/-evil.png", COLOURS[1])
    assert run_script("txt_annotation.py", "--workers", "0", cwd=project).returncode == 0
    make_checkpoint(project / "m.pth", classes=sorted(classes), input_shape=(16, 16))
    result = run_script("eval.py", "--model", "m.pth", "--workers", "0", cwd=project)
    assert result.returncode == 0, result.stderr
    result = run_script("predict.py", "datasets/test", "--model", "m.pth", "--csv", "p.csv",
                        cwd=project)
    assert result.returncode == 0, result.stderr
    for path in ("metrics_out/errors.csv", "metrics_out/confusion_matrix.csv", "p.csv"):
        with open(project / path, newline="") as f:
            cells = [cell for row in csv.reader(f) for cell in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "-") and not _number(c)], path
        assert any(c.startswith("'") for c in cells), path


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------ data loss / integrity
def test_resuming_a_checkpoint_copied_into_another_run_is_refused(project):
    train_ = run_script("train.py", *FAST, "--epochs", "2", "--run-name", "other", cwd=project)
    assert train_.returncode == 0, train_.stderr
    shutil.copy(project / "logs/run/last.pth", project / "logs/other/copied.pth")
    before = snapshot(project / "logs")
    result = run_script("train.py", "--resume", "logs/other/copied.pth", "--epochs", "3",
                        cwd=project)
    assert_clean_error(result, "belongs to another run")
    assert snapshot(project / "logs") == before


def test_eval_never_writes_into_a_training_run(project):
    before = snapshot(project / "logs")
    result = run_script("eval.py", "--out", "logs/run", "--workers", "0", cwd=project)
    assert_clean_error(result, "training run's folder")
    assert snapshot(project / "logs") == before


def test_sorting_writes_via_a_temporary_file_and_never_twice(project, tmp_path):
    def half_then_die(f):
        f.write(b"half an image")
        raise KeyboardInterrupt  # as a kill mid-copy would

    with pytest.raises(KeyboardInterrupt):
        write_new(tmp_path / "out", "a.png", half_then_die, what="copy")
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # no torn file, no litter
    (tmp_path / "out/.b.png.999999999.x.partial").write_bytes(b"left by a killed run")
    write_new(tmp_path / "out", "b.png", lambda f: f.write(b"b"), what="copy")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.png"]
    # The same image given twice, and a re-run over the same folder, add no copies.
    image = "datasets/test/red/000.png"
    for _ in range(2):
        result = run_script("predict.py", image, image, "--sort-into", "sorted", cwd=project)
        assert result.returncode == 0, result.stderr
    assert len(list((project / "sorted").rglob("*.png"))) == 1


def test_outputs_inside_a_folder_typed_at_the_prompt_are_refused(project):
    shutil.copytree(project / "datasets/test", project / "photos")
    result = run_script("predict.py", "--sort-into", "photos/sorted", cwd=project,
                        input="photos\ndatasets/test/red/000.png\n")
    assert result.returncode == 0, result.stderr
    assert "skipped photos: --sort-into photos/sorted and photos overlap" in result.stderr
    assert sorted(p.name for p in (project / "photos").iterdir()) == ["blue", "green", "red",
                                                                     "sorted"]
    assert len(list((project / "photos/sorted").rglob("*.png"))) == 1  # the typed file only


def test_a_full_disk_at_the_report_is_one_line_and_the_run_is_kept(project, monkeypatch):
    from utils.evaluation import report

    def full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.Report, "write", full)
    with working_directory(project), pytest.raises(UserError) as error:
        train.main([*FAST, "--epochs", "1", "--run-name", "full"])
    assert "No space left on device" in str(error.value)
    assert "checkpoints and results.json are complete" in str(error.value)
    assert load_checkpoint(project / "logs/full/best.pth")["epoch"] == 1
    assert json.loads((project / "logs/full/results.json").read_text())["test"]["images"] == 9


# -------------------------------------------------------------- wrong labels / wrong figures
def test_a_class_missing_from_the_test_set_does_not_lower_a_perfect_score():
    matrix = torch.tensor([[5, 0, 0], [0, 4, 0], [0, 0, 0]])  # class 2: no image, no guess
    report = class_report(matrix)
    assert report.mean_recall == 1.0 and report.mean_precision == 1.0
    wrong = class_report(torch.tensor([[5, 0, 1], [0, 4, 0], [0, 0, 0]]))
    assert wrong.mean_precision == pytest.approx(2 / 3)  # predicted, never right: counts 0


def test_a_real_class_named_uncertain_is_never_mixed_with_the_uncertain(project):
    make_checkpoint(project / "m.pth", classes=["_uncertain", "green", "red"],
                    input_shape=(16, 16))
    result = run_script("predict.py", "datasets/test", "--model", "m.pth", "--sort-into",
                        "sorted", "--min-confidence", "1", cwd=project)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (project / "sorted").iterdir()] == ["__uncertain"]


def test_resuming_after_the_training_images_changed_is_refused(project):
    for path in sorted((project / "datasets/train/red").iterdir())[:4]:
        path.unlink()
    assert run_script("txt_annotation.py", "--workers", "0", cwd=project).returncode == 0
    before = snapshot(project / "logs")
    result = run_script("train.py", "--resume", "logs/run/epoch_001.pth", cwd=project)
    assert_clean_error(result, "changed since the run started", "images then")
    assert snapshot(project / "logs") == before


@pytest.mark.parametrize("crop", [1e-9, 0.0, 1.5, float("nan")])
def test_a_crop_fraction_that_would_blow_up_the_resize_is_refused(project, crop):
    ckpt = load_checkpoint(project / "logs/run/best.pth")
    save_checkpoint({**ckpt, "crop_fraction": crop}, project / "crop.pth")
    result = run_script("predict.py", "datasets/test/red/000.png", "--model", "crop.pth",
                        cwd=project)
    assert_clean_error(result, "crop_fraction")


def test_summary_refuses_an_input_no_machine_could_allocate(project):
    result = run_script("summary.py", "--backbone", "mobilenetv2", "--latency",
                        "--input-shape", "20000", "20000", cwd=project)
    assert_clean_error(result, "too large", "4096")
