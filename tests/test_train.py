"""train.py end to end on CPU: tiny learnable images, tiny networks, a few epochs."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, assert_clean_error, make_dataset, run_script
from tests.test_report import Page, check_self_contained
from utils.model.checkpoint import load_checkpoint

# A small, fast network and settings shared by most tests (16x16 inputs, 3 colour classes).
FAST = ["--backbone", "mobilenetv2", "--width-mult", "0.25", "--input-shape", "16", "16",
        "--batch-size", "8", "--freeze-batch-size", "8", "--eval-batch-size", "16", "--workers", "0", "--device", "cpu",
        "--lr", "0.4", "--warmup-epochs", "0.5"]


@pytest.fixture()
def project(tmp_path):
    """A project folder with 3 classes x 32 train / 4 test images, annotated."""
    make_dataset(tmp_path, classes=("red", "green", "blue"), train=32, test=4)
    result = run_script("txt_annotation.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def train(project, *args, timeout=300):
    result = run_script("train.py", *FAST, *args, cwd=project, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_short_run_learns_and_writes_every_output(project):
    # ResNet-18: its BatchNorm statistics settle within these few steps (MobileNetV2's lag).
    train(project, "--epochs", "5", "--run-name", "r", "--save-period", "2",
          "--backbone", "resnet18", "--width-mult", "1", "--batch-size", "16")
    run_dir = project / "logs" / "r"
    rows = read_metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert max(float(r["val_top1"]) for r in rows) >= 0.9  # chance is 1/3
    for name in ("best.pth", "last.pth", "epoch_002.pth", "epoch_004.pth", "config.json",
                 "loss.png", "accuracy.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert list(run_dir.glob("events.out.tfevents.*"))
    best, last = load_checkpoint(run_dir / "best.pth"), load_checkpoint(run_dir / "last.pth")
    val = [float(r["val_top1"]) for r in rows]
    assert best["val_top1"] == pytest.approx(max(val), abs=1e-6)
    assert best["epoch"] == val.index(max(val)) + 1
    assert last["epoch"] == 5 and last["classes"] == ["blue", "green", "red"]
    assert last["backbone"] == "resnet18" and last["input_shape"] == [16, 16]


def test_resume_replays_exactly_the_remaining_epochs(project):
    train(project, "--epochs", "4", "--run-name", "whole", "--save-period", "2")
    whole = project / "logs" / "whole"
    resumed = project / "logs" / "resumed"
    resumed.mkdir()
    shutil.copy(whole / "epoch_002.pth", resumed / "last.pth")  # the state after 2 epochs
    result = run_script("train.py", "--resume", resumed / "last.pth", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    expected, got = read_metrics(whole)[2:], read_metrics(resumed)
    assert [r["epoch"] for r in got] == ["3", "4"]
    for e, g in zip(expected, got):
        for key in ("lr", "train_loss", "train_top1", "val_loss", "val_top1"):
            assert float(g[key]) == pytest.approx(float(e[key]), rel=1e-4, abs=1e-6), key
    assert load_checkpoint(resumed / "last.pth")["epoch"] == 4


def test_killed_run_leaves_a_loadable_checkpoint_and_resumes(project):
    make_dataset(project, classes=("red", "green", "blue"), train=120, test=4)
    assert run_script("txt_annotation.py", "--force", cwd=project).returncode == 0
    run_dir = project / "logs" / "k"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *FAST, "--epochs", "3",
                             "--run-name", "k"], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run_dir / "last.pth").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # well inside epoch 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = load_checkpoint(run_dir / "last.pth")
    assert 1 <= ckpt["epoch"] < 3
    result = run_script("train.py", "--resume", run_dir / "last.pth", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(run_dir / "last.pth")["epoch"] == 3
    assert [int(r["epoch"]) for r in read_metrics(run_dir)] == [1, 2, 3]
    assert not list(run_dir.glob("*.tmp"))


def test_freeze_phase_keeps_backbone_fixed_then_trains_it(project):
    train(project, "--epochs", "1", "--run-name", "init")
    init = project / "logs" / "init" / "last.pth"
    train(project, "--epochs", "2", "--freeze-epochs", "1", "--model-path", init,
          "--run-name", "ft", "--save-period", "1")
    before = load_checkpoint(init)["model"]
    frozen = load_checkpoint(project / "logs" / "ft" / "epoch_001.pth")["model"]
    after = load_checkpoint(project / "logs" / "ft" / "epoch_002.pth")["model"]
    backbone = [k for k in before if k.startswith("features.")]
    head = [k for k in before if k.startswith("classifier.") and k.endswith("weight")]
    assert backbone and head
    assert all(torch.equal(before[k], frozen[k]) for k in backbone)  # BN statistics included
    assert any(not torch.equal(before[k], frozen[k]) for k in head)
    assert any(not torch.equal(frozen[k], after[k]) for k in backbone)


def test_torchrun_two_processes_match_single_process_eval(project):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", str(ROOT / "train.py"), *FAST, "--epochs", "1",
         "--run-name", "ddp"], cwd=project, capture_output=True, text=True, timeout=300,
        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (project / "logs").iterdir()] == ["ddp"]
    row = read_metrics(project / "logs" / "ddp")[0]

    from utils.data.batches import Loading, make_batches
    from utils.data.lists import read_annotation
    from utils.evaluation.scoring import evaluate
    from utils.model.checkpoint import build_model, check_checkpoint
    from utils.model.execution import Execution

    ckpt = load_checkpoint(project / "logs" / "ddp" / "last.pth")
    spec = check_checkpoint(ckpt, "last.pth")
    annotation = project / "cls_val.txt"  # what every epoch is scored on
    batches = make_batches(read_annotation(annotation, spec.classes), spec.geometry, 16,
                           train=False, source=annotation, loading=Loading(cache_dir=None))
    execution = Execution.create(spec, torch.device("cpu"))  # channels-last, as trained
    model = execution.prepare(build_model(spec, ckpt["model"]))
    result = evaluate(model, batches, execution, 3)
    assert result.count == len(read_annotation(annotation, spec.classes)) >= 3  # all of it
    assert float(row["val_top1"]) == pytest.approx(result.top1, abs=1e-6)
    # Two shards run convolutions at other batch sizes: float sums differ in the 4th digit.
    assert float(row["val_loss"]) == pytest.approx(result.loss, abs=1e-3)


@pytest.mark.parametrize("args, needle", [
    (["--optimizer", "lion"], "invalid choice"),
    (["--backbone", "alexnet"], "invalid choice"),
    (["--batch-size", "1000"], "larger than"),
    (["--device", "cuda"], "no cuda"),
    (["--resume", "cls_train.txt"], "not a pytorch checkpoint"),
    (["--train-annotation", "missing.txt"], "txt_annotation.py"),
    (["--input-shape", "2", "2"], "small"),
    (["--epochs", "0"], "at least 1"),
    (["--cutout", "1.5"], "--cutout"),
])
def test_bad_input_is_one_line_and_writes_nothing(project, args, needle):
    result = run_script("train.py", *FAST, "--epochs", "1", *args, cwd=project)
    assert_clean_error(result, needle)
    assert not (project / "logs").exists() or not any((project / "logs").iterdir())


def test_class_count_mismatch_is_reported(project):
    (project / "model_data" / "cls_classes.txt").write_text("blue\ngreen\n")
    assert_clean_error(run_script("train.py", *FAST, "--epochs", "1", cwd=project),
                       "written for another class list")


def test_existing_run_is_never_overwritten(project):
    train(project, "--epochs", "1", "--run-name", "keep")
    before = (project / "logs" / "keep" / "last.pth").read_bytes()
    result = run_script("train.py", *FAST, "--epochs", "1", "--run-name", "keep", cwd=project)
    assert_clean_error(result, "already holds a run")
    assert (project / "logs" / "keep" / "last.pth").read_bytes() == before


def test_missing_image_is_skipped_with_a_warning(project):
    next((project / "datasets" / "train" / "red").iterdir()).unlink()  # stale annotation line
    result = train(project, "--epochs", "1", "--no-cache", "--run-name", "stale")
    assert "skipped" in result.stderr


def test_backbone_defaults_apply_unless_given():
    import train as train_script
    from utils.train import recipe

    cifar = recipe.Survey(tuple("abcdefghij"), (5000,) * 10, 0, 10000, (32, 32))
    gpu = torch.device("cuda")

    def lr(*argv):
        cfg, explicit = train_script.parse(train_script.TrainConfig, list(argv), config_file=True)
        return recipe.choose(cfg, explicit, cifar, gpu).cfg.lr

    assert lr("--backbone", "vgg16") == 0.01
    assert lr("--backbone", "vgg16", "--lr", "0.05") == 0.05
    assert lr() == 0.2


def test_config_file_round_trips_and_flags_override_it(tmp_path):
    import json

    import train as train_script
    from utils.settings import to_dict

    cfg, _ = train_script.parse(train_script.TrainConfig, ["--epochs", "7", "--input-shape",
                                                           "64", "48"], config_file=True)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(to_dict(cfg)))
    loaded, _ = train_script.parse(train_script.TrainConfig, ["--config", str(path),
                                                              "--batch-size", "32"], config_file=True)
    assert loaded.epochs == 7 and loaded.input_shape == (64, 48) and loaded.batch_size == 32
    path.write_text(json.dumps({"optimizer": "lion"}))
    with pytest.raises(Exception, match="choose from"):
        train_script.parse(train_script.TrainConfig, ["--config", str(path)], config_file=True)


def test_best_is_chosen_on_val_and_the_test_set_is_scored_once_at_the_end(project):
    result = train(project, "--epochs", "3", "--run-name", "honest")
    run_dir = project / "logs" / "honest"
    rows = read_metrics(run_dir)
    assert {"val_top1", "val_topk", "val_mean_recall"} <= set(rows[0]) and "val_top5" not in rows[0]
    val = [float(r["val_top1"]) for r in rows]
    best = load_checkpoint(run_dir / "best.pth")
    assert best["epoch"] == val.index(max(val)) + 1
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best_epoch"] == best["epoch"] and results["test"]["images"] == 12
    # eval.py on best.pth and the test list gives the very figure the run reported.
    evaluated = run_script("eval.py", "--model", run_dir / "best.pth", "--workers", "0",
                           "--device", "cpu", cwd=project)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((project / "metrics_out" / "metrics.json").read_text())
    assert metrics["top1"] == results["test"]["top1"]
    assert metrics["topk"] == results["test"]["topk"]
    # Every line says which set it is about; top-k, 100% when k covers all 3 classes, is
    # left out of the console (the files keep it).
    output = result.stdout + result.stderr
    assert "val top-1" in output and "top-3" not in output and "top-5" not in output
    assert re.search(r"test \(12 images in cls_test.txt, scored once with best.pth\): "
                     r"top-1 [\d.]+% \(95% CI [\d.]+–[\d.]+%", output)
    # The run's report.html: opens from disk, references only files that exist, and shows
    # the test figures; errors.csv lists every misclassified test image, worst first.
    page = Page(run_dir / "report.html")
    assert check_self_contained(run_dir / "report.html", page) == 3  # curves, reliability
    assert f"{results['test']['top1']:.2%}" in page.all_text
    errors = (run_dir / "errors.csv").read_text().splitlines()[1:]
    assert len(errors) == round(12 * (1 - results["test"]["top1"]))
    losses = [float(row.rsplit(",", 1)[1]) for row in errors]
    assert losses == sorted(losses, reverse=True)


def test_without_a_validation_set_best_is_the_last_epoch_and_that_is_said(project):
    assert run_script("txt_annotation.py", "--val-fraction", "0", cwd=project).returncode == 0
    result = train(project, "--epochs", "2", "--run-name", "noval", "--class-weights", "auto")
    run_dir = project / "logs" / "noval"
    assert [r["val_top1"] for r in read_metrics(run_dir)] == ["", ""]
    assert load_checkpoint(run_dir / "best.pth")["epoch"] == 2
    results = json.loads((run_dir / "results.json").read_text())
    assert "last epoch" in results["selected_by"] and results["test"]["images"] == 12
    assert "best.pth is epoch 2, the last epoch (no validation set" in result.stdout


def test_class_weights_auto_are_inverse_frequencies_with_mean_one():
    from utils.train.prepare import class_weights

    weights = class_weights([(0, "a")] * 6 + [(1, "b")] * 2 + [(2, "c")] * 4, 4)
    assert weights[:3].mean().item() == pytest.approx(1.0)
    assert weights[1].item() == pytest.approx(3 * weights[0].item())  # 3x fewer images
    assert weights[3].item() == 0  # no images: no weight
