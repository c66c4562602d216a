"""eval.py: exact metrics on a crafted case, agreement with training, and bad input."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_script  # the top-level eval.py, not the builtin
import nets
from tests import test_metrics as case
from tests.helpers import assert_clean_error, make_dataset, run_script
from tests.test_predict import make_checkpoint
from utils.cli import UserError
from utils.data.lists import write_annotation, write_classes
from utils.model.checkpoint import load_checkpoint, save_checkpoint
from utils.model.execution import Execution

STUB_CLASSES = [f"class{i}" for i in range(case.NUM_CLASSES)]


@pytest.fixture()
def stub_project(tmp_path, monkeypatch):
    """A project whose "model" outputs the logits of tests/test_metrics.py's crafted case.

    Image *i* is a flat grey of value *i*; with an identity normalisation the stub reads
    the index back from the pixels, so the whole eval.py path runs with known logits.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nets, "get_model", lambda *args, **kwargs: case.StubNet())
    monkeypatch.setattr(nets, "get_entry",
                        lambda name: nets.registry.ModelEntry(name, None, nets.PretrainedCfg(None)))
    samples = []
    for i, label in enumerate(case.LABELS):
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), i, dtype=np.uint8)).save(path)
        samples.append((label, str(path)))
    write_annotation(tmp_path / "cls_test.txt", samples)
    write_classes(tmp_path / "model_data" / "cls_classes.txt", STUB_CLASSES)
    save_checkpoint({"model": {}, "backbone": "stub", "num_classes": case.NUM_CLASSES,
                     "classes": STUB_CLASSES, "input_shape": [16, 16], "width_mult": 1.0,
                     "in_channels": 3, "mean": list(case.IDENTITY_MEAN),
                     "std": list(case.IDENTITY_STD), "epoch": 1}, tmp_path / "stub.pth")
    return tmp_path


@pytest.mark.parametrize("mode", [[], ["--no-cache"], ["--one-by-one"]])
def test_reports_equal_hand_computed_values(stub_project, mode, capsys):
    assert eval_script.main(["--model", "stub.pth", "--batch-size", "4", "--workers", "0",
                             *mode]) == 0
    out = stub_project / "metrics_out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == len(case.LABELS)
    assert metrics["top1"] == pytest.approx(case.EXPECTED_TOP1)
    assert metrics["topk"] == pytest.approx(case.EXPECTED_TOP5) and metrics["k"] == 5
    assert metrics["mean_recall"] == pytest.approx(case.EXPECTED_MEAN_RECALL)
    assert metrics["mean_precision"] == pytest.approx(case.EXPECTED_MEAN_PRECISION)
    per_class = metrics["per_class"]
    assert [c["class"] for c in per_class] == STUB_CLASSES
    assert [c["recall"] for c in per_class] == pytest.approx(case.EXPECTED_RECALL)
    assert [c["precision"] for c in per_class] == pytest.approx(case.EXPECTED_PRECISION)

    with open(out / "confusion_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == STUB_CLASSES
    assert [r[0] for r in rows[1:]] == STUB_CLASSES
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == case.EXPECTED_MATRIX
    for name in ("confusion_matrix.png", "recall.png", "precision.png"):
        with Image.open(out / name) as png:
            assert png.format == "PNG"

    printed = capsys.readouterr().out
    assert "top-1           66.67%" in printed and "top-5           77.78%" in printed
    assert "mean recall     72.22%" in printed and "mean precision  58.33%" in printed


def test_missing_annotation_file(stub_project):
    with pytest.raises(UserError, match="annotation file nope.txt not found"):
        eval_script.main(["--model", "stub.pth", "--annotation", "nope.txt"])


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory):
    """A real train.py run: 2 epochs of a tiny MobileNetV2 on 3 colour classes."""
    root = tmp_path_factory.mktemp("trained")
    make_dataset(root, classes=["blue", "green", "red"], train=16, test=5)
    result = run_script("txt_annotation.py", "--workers", "0", cwd=root)
    assert result.returncode == 0, result.stderr
    result = run_script("train.py", "--backbone", "mobilenetv2", "--width-mult", "0.25",
                        "--input-shape", "16", "16", "--epochs", "2", "--batch-size", "8",
                        "--eval-batch-size", "4", "--workers", "0", "--device", "cpu",
                        "--run-name", "run", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_top1_equals_the_top1_recorded_by_training(trained_project, monkeypatch):
    monkeypatch.chdir(trained_project)
    best = load_checkpoint("logs/run/best.pth")
    with open("logs/run/metrics.csv", newline="") as f:
        logged = {int(r["epoch"]): r for r in csv.DictReader(f)}[best["epoch"]]
    # Default --model: the best checkpoint of the latest run.  A batch size other than
    # training's must not matter.
    assert eval_script.main(["--annotation", "cls_val.txt", "--batch-size", "7",
                             "--workers", "0"]) == 0
    metrics = json.loads(Path("metrics_out/metrics.json").read_text())
    assert metrics["model"] == str(Path("logs/run/best.pth"))
    assert metrics["images"] == len(Path("cls_val.txt").read_text().splitlines()) - 1  # all
    assert metrics["top1"] == best["val_top1"]
    # The CSV keeps 6 significant digits.  The loss moves with any change of pixels, so it
    # agreeing too shows both ran the same preprocessing, not just the same argmax.
    assert metrics["top1"] == pytest.approx(float(logged["val_top1"]), rel=1e-5)
    assert metrics["loss"] == pytest.approx(float(logged["val_loss"]), rel=1e-5)
    assert metrics["k"] == 3 and metrics["topk"] == 1.0


def test_labels_out_of_range_is_a_clean_error(trained_project, tmp_path):
    bad = tmp_path / "bad.txt"
    image = next((trained_project / "datasets" / "test" / "red").iterdir())
    bad.write_text(f"0;{image}\n7;{image}\n")
    result = run_script("eval.py", "--annotation", bad, "--workers", "0", cwd=trained_project)
    assert_clean_error(result, "out of range", "3 classes")


def test_checkpoint_of_another_class_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_checkpoint(tmp_path / "five.pth", classes=["a", "b", "c", "d", "e"])
    ckpt = torch.load(tmp_path / "five.pth", weights_only=True)
    ckpt["num_classes"] = 3  # weights for 5 classes described as 3
    ckpt["classes"] = ["a", "b", "c"]
    save_checkpoint(ckpt, tmp_path / "five.pth")
    # eval.py reads its class and image lists first (cheap, and --runtime auto weighs them)
    write_classes(tmp_path / "model_data" / "cls_classes.txt", ["a", "b", "c"])
    write_annotation(tmp_path / "cls_test.txt", [(0, "a.png")])
    with pytest.raises(UserError, match="weights do not fit mobilenetv2 with 3 classes"):
        eval_script.main(["--model", str(tmp_path / "five.pth")])


class PassRecorder(torch.nn.Module):
    """A BatchNorm network that notes how many images each forward pass holds."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.passes: list[int] = []

    def forward(self, x):
        self.passes.append(len(x))
        return self.net(x)


@pytest.mark.parametrize("side, per_pass", [(32, 32), (224, 5)])
def test_cpu_forward_runs_cache_sized_passes_with_unchanged_logits(side, per_pass):
    """Big batches run as small passes on a CPU (faster); the logits must not notice."""
    model = PassRecorder()
    model.net[1].running_mean.uniform_()  # eval-mode BatchNorm with non-trivial statistics
    model.eval()
    x = torch.randint(0, 256, (2 * per_pass + 1, 3, side, side), dtype=torch.uint8)
    identity = Execution(torch.device("cpu"), (0.0,) * 3, (1 / 255,) * 3)  # x / 255 * 255 = x
    with torch.inference_mode():
        reference = model.net(x.float())
        logits = identity.logits(model, x)
    assert model.passes == [per_pass, per_pass, 1]
    torch.testing.assert_close(logits, reference)


def test_a_model_of_other_class_names_is_exit_2_and_writes_nothing(trained_project, tmp_path):
    make_checkpoint(tmp_path / "five.pth", classes=["a", "b", "c", "d", "e"])
    result = run_script("eval.py", "--model", tmp_path / "five.pth", "--out", tmp_path / "out",
                        "--workers", "0", cwd=trained_project)
    assert_clean_error(result, "class names differ", "'blue'", "'a'")
    assert not (tmp_path / "out").exists()


def test_the_same_names_in_another_order_are_matched_by_name(trained_project, tmp_path):
    ckpt = load_checkpoint(trained_project / "logs/run/best.pth")
    order = [2, 0, 1]  # the model's outputs become red, blue, green
    reordered = {**ckpt, "classes": [ckpt["classes"][i] for i in order]}
    reordered["model"] = {k: (v[order] if k.startswith("classifier.") else v)
                          for k, v in ckpt["model"].items()}
    save_checkpoint(reordered, tmp_path / "reordered.pth")
    scores = []
    for model in (trained_project / "logs/run/best.pth", tmp_path / "reordered.pth"):
        out = tmp_path / model.stem
        result = run_script("eval.py", "--model", model, "--out", out, "--workers", "0",
                            cwd=trained_project)
        assert result.returncode == 0, result.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        scores.append((metrics["top1"], round(metrics["loss"], 5),
                       {c["class"]: c["recall"] for c in metrics["per_class"]}))
    assert scores[0] == scores[1]


def test_a_folder_of_class_folders_scores_as_its_annotation_does(trained_project, tmp_path):
    # eval.py DIR reads datasets/test/<class>/ itself: the figures of cls_test.txt, which
    # lists exactly those images, whatever order the folders come in.
    scores = []
    for args in (["datasets/test"], ["--annotation", "cls_test.txt"]):
        out = tmp_path / args[-1].replace("/", "_")
        result = run_script("eval.py", *args, "--out", out, "--workers", "0",
                            cwd=trained_project)
        assert result.returncode == 0, result.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        scores.append((metrics["images"], metrics["top1"], round(metrics["loss"], 5)))
    assert scores[0] == scores[1] and scores[0][0] == 15


def test_a_folder_eval_refuses_unknown_classes_and_split_folders(trained_project, tmp_path):
    make_dataset(tmp_path, classes=["red", "purple"], train=1, test=1)
    result = run_script("eval.py", tmp_path / "datasets" / "test", "--out", tmp_path / "o1",
                        "--workers", "0", cwd=trained_project)
    assert_clean_error(result, "does not know", "'purple'")
    result = run_script("eval.py", tmp_path / "datasets", "--out", tmp_path / "o2",
                        "--workers", "0", cwd=trained_project)
    assert_clean_error(result, "split folders", "datasets/train")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("name", ["mobilenetv2", "mobilenetv1", "resnet18"])
def test_inference_on_a_cpu_folds_batchnorm_without_changing_the_logits(name):
    from utils.model.execution import fold_batchnorm

    torch.manual_seed(0)
    model = nets.get_model(name, 5, input_shape=(32, 32),
                           **({"width_mult": 0.25} if name.startswith("mobilenet") else {}))
    for module in model.modules():  # statistics a trained network would have
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    model.train()
    x = torch.randn(4, 3, 32, 32)
    folded = fold_batchnorm(model)
    assert model.training  # the original is left as it was, BatchNorms and all
    with torch.no_grad():
        expected = model.eval()(x)
        assert torch.allclose(folded(x), expected, atol=1e-4, rtol=1e-4)
    remaining = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    if name.startswith("mobilenet"):
        assert remaining == 0
    else:  # a ResNet block names its layers (conv1, bn1): those stay unfolded
        assert 0 < remaining < sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
