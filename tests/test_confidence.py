"""Issue 22 through the real commands: intervals beside every figure, a calibrated model,
an "unknown" answer, and a run that says which held-out figure to trust.

One shapes model (3 classes, 32x32, MobileNetV2 x0.25, 6 epochs on CPU) serves most tests;
the out-of-distribution folder is random noise and solid colours, as the issue asks.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import SHAPES, assert_clean_error, make_dataset, make_shapes_dataset, \
    run_script
from utils.model.checkpoint import load_checkpoint

SHAPES_RUN = ["--backbone", "mobilenetv2", "--width-mult", "0.25", "--input-shape", "32", "32",
              "--batch-size", "16", "--eval-batch-size", "64", "--workers", "0",
              "--device", "cpu", "--epochs", "6", "--run-name", "s"]


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A trained shapes project with an ``ood/`` folder of noise and solid colours."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root)
    rng = np.random.default_rng(7)
    for i in range(15):
        noise = rng.integers(0, 256, (32, 32, 3))
        solid = np.full((32, 32, 3), rng.integers(0, 256, 3))
        for name, pixels in ((f"noise{i}", noise), (f"solid{i}", solid)):
            (root / "ood").mkdir(exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "ood" / f"{name}.png")
    assert run_script("txt_annotation.py", "--workers", "0", cwd=root).returncode == 0
    result = run_script("train.py", *SHAPES_RUN, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result.stdout


def test_the_run_stores_a_calibration_and_says_its_figures_with_intervals(shapes):
    root, out = shapes
    results = json.loads((root / "logs" / "s" / "results.json").read_text())
    ci = results["test"]["top1_ci"]
    assert (ci["count"], ci["successes"]) == (60, round(results["test"]["top1"] * 60))
    assert (ci["low"], ci["high"]) == pytest.approx(wilson_by_hand(ci["successes"], 60))
    assert results["validation"]["top1_ci"]["count"] == results["validation"]["images"] > 0
    assert "test (60 images in cls_test.txt, scored once with best.pth): top-1 " in out
    assert f"(95% CI {100 * ci['low']:.1f}–{100 * ci['high']:.1f}%, 60 images)" in out
    best = load_checkpoint(root / "logs" / "s" / "best.pth")
    assert best["temperature"] == pytest.approx(results["calibration"]["temperature"])
    assert best["rejection"]["score"] == "typicality" and "typicality" in best
    # Earlier checkpoints keep none: only best.pth was calibrated.
    assert load_checkpoint(root / "logs" / "s" / "last.pth").get("temperature") is None
    page = (root / "logs" / "s" / "report.html").read_text()
    for section in ("What next", "Held-out figures", "Calibration", "Unknown images"):
        assert section in page, section
    assert page.index("What next") < page.index("Plan and settings")


def test_eval_prints_the_interval_and_calibrates(shapes, tmp_path):
    root, _ = shapes
    result = run_script("eval.py", "--model", "logs/s/best.pth", "--out", tmp_path / "m",
                        cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    k = metrics["top1_ci"]["successes"]
    low, high = wilson_by_hand(k, 60)
    top1 = next(line for line in result.stdout.splitlines() if line.startswith("top-1"))
    assert top1.split()[1:] == [f"{100 * k / 60:.2f}%", "(95%", "CI",
                                f"{100 * low:.1f}–{100 * high:.1f}%,", "60", "images)"]
    for row in metrics["per_class"]:  # recall out of the class's images
        hits = round(row["recall"] * row["support"])
        assert row["recall_ci"] == pytest.approx(list(wilson_by_hand(hits, row["support"])))
    calibration = metrics["calibration"]
    assert calibration["images"] == 60 and calibration["ece"] <= calibration["ece_at_1"]
    assert (tmp_path / "m" / "reliability.png").stat().st_size > 0


def test_unknown_images_are_told_apart_and_answered_unknown(shapes, tmp_path):
    root, _ = shapes
    result = run_script("eval.py", "--model", "logs/s/best.pth", "--ood", "ood",
                        "--out", tmp_path / "m", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    ood = json.loads((tmp_path / "m" / "metrics.json").read_text())["ood"]
    assert ood["score"] == "typicality" and ood["unknown_images"] == 30
    assert ood["auroc"] >= 0.9 and ood["rejected_unknown"] >= 0.9 and ood["kept_right"] >= 0.9
    assert "unknown images  AUROC" in result.stdout

    answers = predict_json(root, "--reject", "auto", "ood")
    assert sum(a["unknown"] for a in answers) >= 0.8 * len(answers) == 24
    known = predict_json(root, "--reject", "auto", "datasets/test")
    right = [a for a in known if a["predictions"][0]["class"] == Path(a["path"]).parent.name]
    assert len(right) >= 0.8 * len(known)
    assert sum(not a["unknown"] for a in right) >= 0.9 * len(right)
    # --sort-into puts the unknown ones apart.
    sorted_out = tmp_path / "sorted"
    result = run_script("predict.py", "--model", "logs/s/best.pth", "--reject", "auto",
                        "--sort-into", sorted_out, "ood", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((sorted_out / "_unknown").iterdir())) >= 24


def predict_json(root: Path, *args) -> list[dict]:
    result = run_script("predict.py", "--model", "logs/s/best.pth", "--json", *args, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_onnx_export_carries_temperature_and_rejection(shapes, tmp_path):
    root, _ = shapes
    onnx = tmp_path / "m.onnx"
    result = run_script("predict.py", "--model", "logs/s/best.pth", "--export-onnx", onnx,
                        cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "and 'typicality' [batch]" in result.stderr
    from_torch = predict_json(root, "--reject", "auto", "ood/noise0.png", "datasets/test")
    result = run_script("predict.py", "--model", onnx, "--json", "--reject", "auto",
                        "ood/noise0.png", "datasets/test", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    from_onnx = json.loads(result.stdout)
    assert [a["unknown"] for a in from_onnx] == [a["unknown"] for a in from_torch]
    assert from_onnx[0]["unknown"]
    for a, b in zip(from_onnx, from_torch):  # calibrated the same way
        assert a["predictions"][0]["probability"] == pytest.approx(
            b["predictions"][0]["probability"], abs=1e-3)


def test_an_old_checkpoint_keeps_working_at_temperature_one(shapes, tmp_path):
    root, _ = shapes
    ckpt = load_checkpoint(root / "logs" / "s" / "best.pth")
    logits_t = ckpt["temperature"]
    for key in ("temperature", "rejection", "typicality"):
        ckpt.pop(key)
    old = tmp_path / "old.pth"
    torch.save(ckpt, old)
    image = f"datasets/test/{SHAPES[0]}/000.png"
    result = run_script("predict.py", "--model", old, "--json", image, image, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("no fitted temperature") == 1
    plain = json.loads(result.stdout)[0]["predictions"]
    calibrated = predict_json(root, image)[0]["predictions"]
    assert plain[0]["class"] == calibrated[0]["class"]  # the arg-max does not move
    if logits_t < 1:  # a sharper calibrated model: its top probability is higher
        assert calibrated[0]["probability"] >= plain[0]["probability"]
    # --reject auto needs a threshold: refused before anything is written.
    result = run_script("predict.py", "--model", old, "--reject", "auto", "--csv",
                        tmp_path / "p.csv", image, cwd=root)
    assert_clean_error(result, "no rejection threshold")
    assert not (tmp_path / "p.csv").exists()
    result = run_script("eval.py", "--model", old, "--ood", "ood", "--out", tmp_path / "m",
                        cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    ood = json.loads((tmp_path / "m" / "metrics.json").read_text())["ood"]
    assert ood["score"] == "msp" and ood["threshold"] is None


@pytest.mark.parametrize("args,needle", [
    (["predict.py", "--reject", "maybe", "x.png"], "--reject"),
    (["predict.py", "--reject", "", "x.png"], "--reject"),
    (["eval.py", "--ood", "missing"], "--ood missing: no such folder"),
    (["eval.py", "--ood", "empty"], "--ood empty: no image files"),
])
def test_bad_confidence_flags_are_refused(tmp_path, args, needle):
    make_dataset(tmp_path, classes=("cat", "dog"), train=2, test=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.pth").write_bytes(b"not read: the flags are refused first")
    script, *rest = args
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_script(script, "--model", "model.pth", "--out" if script == "eval.py"
                        else "--csv", "out", *rest, cwd=tmp_path)
    assert_clean_error(result, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_train_and_val_layout_shows_both_held_out_figures(tmp_path):
    """No test/: a small test set is carved from train/; the user's larger val/ stands
    beside it, both with counts and intervals, and the small one is called so."""
    make_dataset(tmp_path, classes=("red", "green", "blue"), train=40, test=10)
    shutil.move(tmp_path / "datasets" / "test", tmp_path / "datasets" / "val")
    assert run_script("txt_annotation.py", "--workers", "0", cwd=tmp_path).returncode == 0
    result = run_script("train.py", "--backbone", "mobilenetv2", "--width-mult", "0.25",
                        "--input-shape", "16", "16", "--batch-size", "8", "--workers", "0",
                        "--device", "cpu", "--epochs", "1", "--run-name", "r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    test = next(line for line in lines if line.startswith("test ("))
    val = next(line for line in lines if line.startswith("validation ("))
    assert "10 images in cls_test.txt" in test and "too few to measure" in test
    assert "30 images in cls_val.txt" in val and "95% CI" in val
    assert any(line.startswith("held-out  ") for line in lines)  # the plan says it first
    page = (tmp_path / "logs" / "r" / "report.html").read_text()
    table = page[page.index("Held-out figures"):]
    assert "cls_test.txt" in table and "cls_val.txt" in table and "too few to measure" in table
