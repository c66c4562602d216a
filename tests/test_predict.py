"""predict.py: one image, several, a folder, piped paths, JSON, and every kind of bad input.

Most cases call ``predict.main`` in-process (fast); the ones about what a user sees on the
command line (exit codes, one-line errors, piped input) run the real script.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import nets
import predict
from tests.helpers import assert_clean_error, make_dataset, make_image, run_script, snapshot
from utils.cli import UserError
from utils.data.image import load_image
from utils.data.lists import write_classes
from utils.inference.classifier import Classifier
from utils.inference.config import latest_checkpoint
from utils.model.checkpoint import save_checkpoint

CLASSES = ["blue", "green", "red"]
SHAPE = (16, 16)


def make_checkpoint(path: Path, classes=CLASSES, backbone="mobilenetv2", width_mult=0.25,
                    input_shape=SHAPE, seed=0, temperature=None) -> torch.nn.Module:
    """Save an untrained checkpoint as train.py would (a calibrated best.pth when given a
    ``temperature``); returns its model.

    The head gets large random weights so that predictions differ from image to image
    (a freshly initialised head outputs near-uniform probabilities).
    """
    torch.manual_seed(seed)
    model = nets.get_model(backbone, len(classes), input_shape=input_shape,
                           width_mult=width_mult)
    for module in model.classifier.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=3.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "backbone": backbone,
                     "num_classes": len(classes), "classes": list(classes),
                     "input_shape": list(input_shape), "width_mult": width_mult,
                     "in_channels": 3, "mean": list(nets.IMAGENET_MEAN),
                     "std": list(nets.IMAGENET_STD),
                     "epoch": 3, "top1": 0.5,
                     **({} if temperature is None else {"temperature": temperature})}, path)
    return model.eval()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder: 3 x 3 test images (not square), class list, one trained run."""
    root = tmp_path_factory.mktemp("project")
    make_dataset(root, classes=CLASSES, train=0, test=3, size=(20, 28))
    write_classes(root / "model_data" / "cls_classes.txt", CLASSES)
    make_checkpoint(root / "logs" / "run1" / "best.pth")
    return root


@pytest.fixture()
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    return project


def run_json(*args) -> list[dict]:
    """``predict.main`` with ``--json``; its output parsed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert predict.main([*map(str, args), "--json"]) == 0
    return json.loads(out.getvalue())


def image(cls: str, i: int) -> str:
    return f"datasets/test/{cls}/{i:03d}.png"


def test_one_image_prints_topk_classes_most_likely_first(project):
    result = run_script("predict.py", image("red", 0), "--topk", "2", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == image("red", 0)
    assert len(lines) == 3  # the path, then 2 classes
    names = [line.split()[1] for line in lines[1:]]
    percents = [float(line.split()[2].rstrip("%")) for line in lines[1:]]
    assert set(names) <= set(CLASSES) and percents == sorted(percents, reverse=True)


def test_several_images_and_a_folder_in_order_with_probabilities_summing_to_1(in_project):
    results = run_json(image("red", 2), image("blue", 0), "datasets/test/green", "--topk", "9")
    assert [r["path"] for r in results] == [image("red", 2), image("blue", 0)] + [
        os.path.join("datasets/test/green", f"{i:03d}.png") for i in range(3)]
    for r in results:
        predictions = r["predictions"]
        assert sorted(p["class"] for p in predictions) == CLASSES  # top-9 of 3 = all 3
        probabilities = [p["probability"] for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)


def test_batched_folder_predictions_equal_one_image_at_a_time(in_project):
    # A folder walked recursively, in batches of 2 (a ragged last batch), hidden and
    # non-image files ignored.
    folder = in_project / "mixed"
    shutil.copytree("datasets/test", folder, dirs_exist_ok=True)
    (folder / "notes.txt").write_text("not an image")
    make_image(folder / ".hidden.png", (0, 0, 0))
    results = run_json(folder, "--batch-size", "2", "--topk", "3")
    expected_paths = sorted(str(p) for p in folder.rglob("*.png") if not p.name.startswith("."))
    assert sorted(r["path"] for r in results) == expected_paths

    classifier = Classifier.load("logs/run1/best.pth")
    for r in results:
        alone = classifier.predict([load_image(r["path"])])[0]
        for p in r["predictions"]:
            assert p["probability"] == pytest.approx(
                alone[CLASSES.index(p["class"])].item(), abs=1e-5)
    assert len({r["predictions"][0]["probability"] for r in results}) > 1  # not a constant


def test_paths_piped_to_the_prompt(project):
    typed = f"{image('blue', 1)}\n\n'{image('green', 2)}'\ndatasets/test/red\n"
    result = run_script("predict.py", "--json", cwd=project, input=typed)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)  # no prompt text mixed into the JSON
    assert [r["path"] for r in results] == [image("blue", 1), image("green", 2)] + [
        os.path.join("datasets/test/red", f"{i:03d}.png") for i in range(3)]


def test_bad_paths_are_reported_and_the_others_still_predicted(in_project, capsys):
    Path("fake.png").write_text("hello")
    Path("empty").mkdir(exist_ok=True)
    assert predict.main([image("red", 0), "missing.jpg", "fake.png", "empty", image("blue", 0)]) == 0
    out, err = capsys.readouterr()
    assert image("red", 0) in out and image("blue", 0) in out
    warnings = err.splitlines()
    assert any("missing.jpg" in w and "no such file" in w for w in warnings)
    assert any("fake.png" in w and "not an image" in w for w in warnings)
    assert any("empty" in w and "no image files" in w for w in warnings)
    assert "fake.png" not in out


def test_nothing_predictable_is_a_clean_error(project):
    result = run_script("predict.py", "missing.jpg", cwd=project)
    assert_clean_error(result, "no image could be classified")
    assert "warning: missing.jpg: no such file" in result.stderr


def test_empty_folder_and_empty_prompt_are_errors(in_project, monkeypatch):
    Path("empty").mkdir(exist_ok=True)
    with pytest.raises(UserError, match="no image could be classified"):
        predict.main(["empty"])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(UserError, match="no image paths given"):
        predict.main([])


def test_model_that_is_not_a_checkpoint(in_project):
    Path("notes.pth").write_text("these are not weights\n")
    with pytest.raises(UserError, match="notes.pth: not a PyTorch checkpoint"):
        predict.main([image("red", 0), "--model", "notes.pth"])
    torch.save({"epochs": 3, "note": "no tensors"}, "settings.pth")
    with pytest.raises(UserError, match="settings.pth: holds no model weights"):
        predict.main([image("red", 0), "--model", "settings.pth", "--backbone", "mobilenetv2",
                      "--input-shape", "16", "16"])


def test_plain_state_dict_needs_and_uses_a_description(in_project, tmp_path):
    weights = tmp_path / "weights.pth"
    model = make_checkpoint(tmp_path / "ckpt.pth", seed=1)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, weights)  # DDP names
    with pytest.raises(UserError, match="--backbone"):
        predict.main([image("red", 0), "--model", str(weights)])
    with pytest.raises(UserError, match="do not fit resnet18"):  # weights of another network
        predict.main([image("red", 0), "--model", str(weights), "--backbone", "resnet18",
                      "--input-shape", "16", "16"])
    described = run_json(image("red", 0), "--model", weights, "--backbone", "mobilenetv2",
                         "--input-shape", "16", "16", "--width-mult", "0.25", "--topk", "3")
    from_ckpt = run_json(image("red", 0), "--model", tmp_path / "ckpt.pth", "--topk", "3")
    assert described[0]["predictions"] == from_ckpt[0]["predictions"]


def test_checkpoint_contradicting_the_flags_is_refused(in_project):
    with pytest.raises(UserError, match="backbone mobilenetv2, not resnet18"):
        predict.main([image("red", 0), "--model", "logs/run1/best.pth", "--backbone", "resnet18"])
    with pytest.raises(UserError, match=r"input_shape \[16, 16\], not \[32, 32\]"):
        predict.main([image("red", 0), "--input-shape", "32", "32"])


def test_a_checkpoint_names_its_own_classes_and_a_given_class_list_must_match(
        project, tmp_path, monkeypatch, capsys):
    """The old behaviour warned when model_data/cls_classes.txt differed; the names printed
    always come from the model, so another project's class list is no reason to warn, but a
    --classes file the user gives is a claim about the model, checked by name."""
    monkeypatch.chdir(tmp_path)
    write_classes(tmp_path / "model_data" / "cls_classes.txt", ["cat", "dog", "frog"])
    results = run_json(project / image("red", 0), "--model", project / "logs/run1/best.pth")
    assert {p["class"] for p in results[0]["predictions"]} == set(CLASSES)
    # No warning about the class list (this test checkpoint has no fitted temperature,
    # which is said once per process: not the point here).
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "no fitted temperature" not in line] == []
    write_classes(tmp_path / "same.txt", ["red", "blue", "green"])  # the same names, reordered
    assert run_json(project / image("red", 0), "--model", project / "logs/run1/best.pth",
                    "--classes", "same.txt") == results
    with pytest.raises(UserError, match=r"class names differ: .*'cat'.*'blue'"):
        run_json(project / image("red", 0), "--model", project / "logs/run1/best.pth",
                 "--classes", "model_data/cls_classes.txt")


def test_default_model_is_best_of_the_most_recent_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no trained model in logs/: train one with train.py"):
        latest_checkpoint()
    for i, name in enumerate(["b_newest", "a_older", "c_oldest"]):
        Path("logs", name).mkdir(parents=True)
        Path("logs", name, "best.pth").write_bytes(b"x")
        os.utime(Path("logs", name), (1e9 - i * 1000, 1e9 - i * 1000))
    Path("logs", "d_no_best").mkdir()  # a run that has not saved a best yet
    assert latest_checkpoint() == Path("logs", "b_newest", "best.pth")


def test_sort_into_copies_each_image_into_its_predicted_class_and_never_overwrites(
        in_project, tmp_path, capsys):
    source = tmp_path / "incoming"
    for cls in ("red", "blue"):
        shutil.copytree(f"datasets/test/{cls}", source / cls)  # 6 images, two share names
    before = snapshot(source)
    predicted = {r["path"]: r["predictions"][0]["class"] for r in run_json(source)}
    out = tmp_path / "sorted"
    for run in (1, 2):
        assert predict.main([str(source), "--sort-into", str(out)]) == 0
    assert snapshot(source) == before  # copied, never moved or touched
    class_of = {Path(path).read_bytes(): cls for path, cls in predicted.items()}
    assert len(class_of) == 6  # six different images
    copies = list(out.rglob("*.png"))
    assert len(copies) == 6  # two share a name (one became name-2); the re-run added none
    assert all(class_of[copy.read_bytes()] == copy.parent.name for copy in copies)
    contents = [copy.read_bytes() for copy in copies]
    assert all(contents.count(image) == 1 for image in class_of)
    assert "copied 6 images into" in capsys.readouterr().err


def test_min_confidence_sends_uncertain_images_aside(in_project, tmp_path):
    results = run_json("datasets/test")
    threshold = sorted(r["predictions"][0]["probability"] for r in results)[4]
    out = tmp_path / "sorted"
    assert predict.main(["datasets/test", "--sort-into", str(out),
                         "--min-confidence", str(threshold)]) == 0
    assert len(list((out / "_uncertain").iterdir())) == 4  # the four least confident
    assert sum(len(list(d.iterdir())) for d in out.iterdir()) == 9


def test_csv_holds_the_printed_predictions_row_by_row(in_project, tmp_path):
    results = run_json("datasets/test", "--topk", "2")
    assert predict.main(["datasets/test", "--topk", "2", "--csv", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    assert [r[0] for r in rows[1:]] == [r["path"] for r in results]
    for row, result in zip(rows[1:], results):
        assert row[1::2] == [p["class"] for p in result["predictions"]]
        assert [float(v) for v in row[2::2]] == pytest.approx(
            [p["probability"] for p in result["predictions"]], abs=1e-6)


def test_cam_writes_a_map_per_image_at_a_readable_size(in_project, tmp_path):
    assert predict.main([image("red", 0), image("blue", 0), "datasets/test/green",
                         "--cam", str(tmp_path / "maps")]) == 0
    maps = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert maps == ["000_cam-2.png", "000_cam-3.png", "000_cam.png", "001_cam.png",
                    "002_cam.png"]  # three images named 000.png: none overwritten
    with Image.open(tmp_path / "maps" / "000_cam.png") as png:
        assert min(png.size) >= 224 and png.mode == "RGB"


@pytest.mark.parametrize("args, needle", [
    (["--sort-into", "datasets/sorted"], "inside datasets/"),
    (["--sort-into", "datasets/test/red/out"], "inside datasets/"),
    (["--min-confidence", "1.5", "--sort-into", "s"], "--min-confidence must be at most 1"),
    (["--min-confidence", "0.5"], "goes with --sort-into"),
    (["--cam", "maps", "--model", "model.onnx"], "ONNX model"),
    (["--csv", "logs/run1/best.pth", "--model", "logs/run1/best.pth"], "input"),
    (["--csv", "existing.csv"], "exists"),
])
def test_bulk_outputs_refuse_unsafe_targets(project, args, needle):
    (project / "existing.csv").write_text("keep me\n")
    (project / "model.onnx").write_bytes(b"")
    before = snapshot(project)
    result = run_script("predict.py", image("red", 0), *args, cwd=project)
    assert_clean_error(result, needle)
    assert snapshot(project) == before


def test_an_output_folder_inside_the_folder_being_classified_is_refused(in_project, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree("datasets/test/red", photos)
    with pytest.raises(UserError, match="inside"):
        predict.main([str(photos), "--sort-into", str(photos / "sorted")])
    assert not (photos / "sorted").exists()
