"""ONNX: self-describing exports, the ONNX Runtime path of predict.py / eval.py, the cached
export of ``--runtime onnxruntime``, int8, and every way an ONNX file can be wrong."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import eval as eval_script  # the top-level eval.py, not the builtin
import predict
from tests.helpers import ROOT, assert_clean_error, listed, make_dataset, run_script
from tests.test_predict import CLASSES, make_checkpoint, run_json
from utils.cli import UserError
from utils.data.lists import write_classes
from utils.data.preprocess import normalize, normalize_array
from utils.inference import onnx_cache, onnx_export
from utils.inference.classifier import Classifier, RunOptions, choose_runtime
from utils.inference.onnx_runtime import QUANTIZATION_KEY, SOURCE_KEY, SPEC_KEY
from utils.model.checkpoint import load_checkpoint, save_checkpoint
from utils.model.spec import ModelSpec

CKPT = "logs/run/best.pth"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real train.py run (MobileNetV1 α 0.25, the quickest network to export, 3 colour
    classes at 16x16) and its export, written by predict.py as a user would."""
    root = tmp_path_factory.mktemp("onnx")
    # Trained enough that its int8 copy agrees well above the export's 90% floor (12 images
    # a class for 2 epochs sat at 81-92%, depending on the pictures' noise).
    make_dataset(root, classes=CLASSES, train=40, test=4)
    for script, *args in (
            ("txt_annotation.py", "--workers", "0"),
            ("train.py", "--backbone", "mobilenetv1", "--width-mult", "0.25", "--input-shape",
             "16", "16", "--epochs", "3", "--batch-size", "8", "--eval-batch-size", "8",
             "--workers", "0", "--device", "cpu", "--run-name", "run"),
            ("predict.py", "--model", CKPT, "--export-onnx", "model.onnx")):
        result = run_script(script, *args, cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "top-1 agreement 100.0%" in result.stderr and result.stdout == ""  # export only
    return root


@pytest.fixture()
def in_trained(trained, monkeypatch):
    monkeypatch.chdir(trained)
    return trained


def metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# ------------------------------------------------------------------------------- the export
def test_an_exported_model_carries_its_description_and_origin(trained):
    ckpt = load_checkpoint(trained / CKPT)
    meta = metadata(trained / "model.onnx")
    spec = ModelSpec.from_dict(json.loads(meta[SPEC_KEY]))
    assert spec == ModelSpec.from_dict(ckpt) and spec.classes == tuple(CLASSES)
    assert json.loads(meta[SPEC_KEY]) == spec.to_dict()  # the whole description, as written
    assert json.loads(meta[SOURCE_KEY]) == {"checkpoint": CKPT, "epoch": ckpt["epoch"],
                                            "val_top1": ckpt["val_top1"]}
    (graph_input,) = onnx.load(str(trained / "model.onnx")).graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "input" and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [3, 16, 16]


def test_export_matches_pytorch_for_any_batch_size(trained):
    model = Classifier.load(trained / CKPT, RunOptions(runtime="torch")).runtime.model
    session = ort.InferenceSession(str(trained / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16)
        (onnx_logits,) = session.run(["logits"], {"input": x.numpy()})
        with torch.inference_mode():
            expected = model(x).numpy()
        assert onnx_logits.shape == (batch, len(CLASSES))
        assert np.abs(onnx_logits - expected).max() <= 1e-4


def test_a_diverging_export_is_an_error(trained):
    model = Classifier.load(trained / CKPT, RunOptions(runtime="torch")).runtime.model
    with torch.no_grad():
        model.classifier.bias += 1e-3  # PyTorch side no longer matches the file
    with pytest.raises(UserError, match="differ from PyTorch"):
        onnx_export.check_onnx(model, trained / "model.onnx", (16, 16))


def test_torchscript_exporter_is_the_fallback(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_export, "_export_dynamo", broken)
    make_checkpoint(tmp_path / "model.pth", backbone="mobilenetv1")
    classifier = Classifier.load(tmp_path / "model.pth", RunOptions(runtime="torch"))
    diff = onnx_export.export_checked(classifier.spec, classifier.runtime.model,
                                      tmp_path / "model.onnx")
    assert "unsupported operator" in capsys.readouterr().err
    assert diff <= 1e-4 and SPEC_KEY in metadata(tmp_path / "model.onnx")


def test_export_never_overwrites_without_force_nor_ever_its_checkpoint(trained, tmp_path):
    checkpoint = (trained / CKPT).read_bytes()
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"someone's file")
    result = run_script("predict.py", "--model", CKPT, "--export-onnx", taken, cwd=trained)
    assert_clean_error(result, "exists", "--force")
    assert taken.read_bytes() == b"someone's file"
    (tmp_path / "alias.onnx").symlink_to(trained / CKPT)  # the checkpoint under another name
    result = run_script("predict.py", "--model", CKPT, "--export-onnx", tmp_path / "alias.onnx",
                        "--force", cwd=trained)
    assert_clean_error(result, "model being exported")
    (tmp_path / "folder.onnx").mkdir()
    result = run_script("predict.py", "--model", CKPT, "--export-onnx",
                        tmp_path / "folder.onnx", cwd=trained)
    assert_clean_error(result, "is a folder")
    assert (trained / CKPT).read_bytes() == checkpoint
    result = run_script("predict.py", "--model", CKPT, "--export-onnx", taken, "--force",
                        cwd=trained)
    assert result.returncode == 0, result.stderr
    assert SPEC_KEY in metadata(taken)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


# ---------------------------------------------------------------- the ONNX Runtime path
def test_predict_gives_the_same_topk_from_pth_and_onnx(in_trained):
    args = ["datasets/test", "--topk", "3"]
    by_torch = run_json(*args, "--model", CKPT, "--runtime", "torch")
    for model, runtime in (("model.onnx", "auto"), (CKPT, "onnxruntime")):
        by_onnx = run_json(*args, "--model", model, "--runtime", runtime)
        assert [r["path"] for r in by_onnx] == [r["path"] for r in by_torch]
        for a, b in zip(by_torch, by_onnx):
            assert [p["class"] for p in a["predictions"]] == [p["class"] for p in b["predictions"]]
            assert [p["probability"] for p in b["predictions"]] == pytest.approx(
                [p["probability"] for p in a["predictions"]], abs=1e-4)
    assert len({r["predictions"][0]["class"] for r in by_torch}) > 1  # not a constant


def test_eval_scores_pth_and_onnx_alike(in_trained, tmp_path, capsys):
    runs = {}
    for name, model, runtime in (("torch", CKPT, "torch"), ("cached", CKPT, "onnxruntime"),
                                 ("onnx", "model.onnx", "auto")):
        out = tmp_path / name
        assert eval_script.main(["--model", model, "--runtime", runtime, "--out", str(out),
                                 "--workers", "0", "--batch-size", "5"]) == 0
        runs[name] = (json.loads((out / "metrics.json").read_text()),
                      (out / "confusion_matrix.csv").read_text())
        assert f"with {runs[name][0]['runtime']}" in capsys.readouterr().out
    reference, matrix = runs["torch"]
    assert reference["runtime"] == "torch" and reference["images"] == 12
    for metrics, csv_text in (runs["cached"], runs["onnx"]):
        assert metrics["runtime"] == "onnxruntime"
        assert csv_text == matrix
        for key in ("images", "top1", "topk", "mean_recall", "mean_precision", "per_class"):
            assert metrics[key] == reference[key], key
        assert metrics["loss"] == pytest.approx(reference["loss"], abs=1e-5)
    assert runs["onnx"][0]["model"] == "model.onnx" and runs["cached"][0]["model"] == CKPT


def test_an_onnx_prediction_never_imports_torch_or_the_networks(trained):
    code = ("import runpy, sys\n"
            f"sys.argv = ['predict.py', 'datasets/test/red/000.png', '--model', 'model.onnx']\n"
            "try:\n"
            f"    runpy.run_path({str(ROOT / 'predict.py')!r}, run_name='__main__')\n"
            "except SystemExit as exc:\n"
            # nets itself is torch-free (its input rules describe the model); the networks
            # (nets.factory, nets.common and the families) and torch must not load.
            "    print('exit', exc.code, sorted({'torch', 'nets.factory', 'nets.common'}"
            " & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=trained, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.splitlines()[-1] == "exit 0 []", result.stdout + result.stderr


def test_numpy_normalisation_equals_the_torch_one_to_the_bit():
    batch = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    assert np.array_equal(normalize_array(batch, mean, std),
                          normalize(torch.from_numpy(batch), mean, std).numpy())


# ------------------------------------------------------------ --runtime and its cache
def test_auto_runtime_is_onnxruntime_on_a_cpu_when_the_export_pays_off():
    cached, uncached = (lambda: True), (lambda: False)
    small, photo = (32, 32), (224, 224)
    assert choose_runtime("auto", "cpu", True, 10_000, photo, uncached) == "onnxruntime"
    assert choose_runtime("auto", "cpu", True, 10_000, small, uncached) == "torch"
    assert choose_runtime("auto", "cpu", True, 2_000, photo, uncached) == "torch"
    assert choose_runtime("auto", "cpu", True, None, small, cached) == "onnxruntime"
    assert choose_runtime("auto", "cpu", True, 12, photo, uncached) == "torch"
    assert choose_runtime("auto", "cuda", True, 10_000, small, cached) == "torch"
    assert choose_runtime("auto", "cpu", False, 10_000, small, cached) == "torch"  # bf16
    assert choose_runtime("onnxruntime", "cpu", True, 1, small, uncached) == "onnxruntime"


def test_the_cached_export_is_reused_until_the_checkpoint_changes(trained, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    exports = []
    real_export = onnx_cache.export_checked
    monkeypatch.setattr(onnx_cache, "export_checked",
                        lambda *args: exports.append(Path(args[2])) or real_export(*args))
    ckpt = load_checkpoint(trained / CKPT)
    save_checkpoint(ckpt, tmp_path / "m.pth")
    batch = np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
    first = Classifier.load("m.pth", RunOptions(runtime="onnxruntime")).runtime.array_logits(batch)
    again = Classifier.load("m.pth", RunOptions(runtime="auto"))  # a cached export is worth using
    assert again.runtime.name == "onnxruntime" and len(exports) == 1
    np.testing.assert_array_equal(again.runtime.array_logits(batch), first)

    ckpt["model"]["classifier.bias"] += torch.tensor([1.0, 0.0, 0.0])  # retrained in place
    save_checkpoint(ckpt, tmp_path / "m.pth")
    fresh = Classifier.load("m.pth", RunOptions(runtime="onnxruntime")).runtime.array_logits(batch)
    assert len(exports) == 2 and exports[1] != exports[0]
    assert [p.name for p in (tmp_path / ".cache" / "onnx").iterdir()] == [exports[1].name]
    by_torch = Classifier.load("m.pth", RunOptions(runtime="torch")).runtime.array_logits(batch)
    np.testing.assert_allclose(fresh, by_torch, atol=1e-4)
    np.testing.assert_allclose(fresh - first, [[1, 0, 0]] * 4, atol=1e-4)  # not the old one


# ------------------------------------------------------------------- models from elsewhere
def strip_description(source: Path, out: Path, dynamic_size: bool = False) -> Path:
    """``source`` without our metadata (as another exporter writes it); ``dynamic_size``
    also leaves its input height and width open."""
    model = onnx.load(str(source))
    del model.metadata_props[:]
    if dynamic_size:
        for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], "hw"):
            dim.dim_param = name
    onnx.save(model, str(out))
    return out


def test_an_onnx_model_without_our_metadata_needs_and_uses_classes_and_input_shape(
        in_trained, tmp_path):
    fixed = strip_description(in_trained / "model.onnx", tmp_path / "fixed.onnx")
    result = run_script("predict.py", "datasets/test/red/000.png", "--model", fixed,
                        cwd=in_trained)
    assert_clean_error(result, "no model description", "--classes")
    assert "--input-shape" not in result.stderr  # the graph says 16x16 itself
    dynamic = strip_description(in_trained / "model.onnx", tmp_path / "dynamic.onnx", True)
    result = run_script("predict.py", "datasets/test/red/000.png", "--model", dynamic,
                        cwd=in_trained)
    assert_clean_error(result, "--classes", "--input-shape")

    write_classes(tmp_path / "names.txt", CLASSES)
    # Without the description the fitted temperature is gone too: the same ranking of classes
    # for every image, the probabilities those of the plain softmax.
    def ranking(rows):
        return [(row["path"], [p["class"] for p in row["predictions"]]) for row in rows]

    ours = ranking(run_json("datasets/test", "--model", "model.onnx"))
    assert ranking(run_json("datasets/test", "--model", fixed, "--classes",
                            tmp_path / "names.txt")) == ours
    assert ranking(run_json("datasets/test", "--model", dynamic, "--classes",
                            tmp_path / "names.txt", "--input-shape", "16", "16")) == ours


def tiny_graph(path: Path, input_shape: list, output_shape: list, axes: list) -> Path:
    """A valid ONNX model averaging its input over ``axes``: the input layout is the point."""
    node = helper.make_node("ReduceMean", ["input"], ["logits"], axes=axes, keepdims=0)
    graph = helper.make_graph(
        [node], "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, output_shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("case, needle", [
    ("not onnx", "not a usable ONNX model"),
    ("truncated", "not a usable ONNX model"),
    ("channels last", "(batch, 3, H, W)"),
    ("one channel", "(batch, 3, H, W)"),
    ("torch runtime", "--runtime onnxruntime"),
    ("gpu", "on the CPU"),
])
def test_a_bad_onnx_model_is_one_line_and_exit_2(trained, tmp_path, case, needle):
    path, extra = tmp_path / "bad.onnx", []
    if case == "not onnx":
        path.write_text("these are not weights\n")
    elif case == "truncated":
        data = (trained / "model.onnx").read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif case == "channels last":
        tiny_graph(path, ["batch", 16, 16, 3], ["batch", 3], [1, 2])
    elif case == "one channel":
        tiny_graph(path, ["batch", 1, 16, 16], ["batch", 1], [2, 3])
    else:
        path = trained / "model.onnx"
        extra = ["--runtime", "torch"] if case == "torch runtime" else ["--device", "cuda"]
    result = run_script("predict.py", "datasets/test/red/000.png", "--model", path, *extra,
                        cwd=trained)
    assert_clean_error(result, needle)


def test_export_refuses_an_onnx_source(in_trained):
    with pytest.raises(UserError, match="exports a checkpoint"):
        predict.main(["--model", "model.onnx", "--export-onnx", "again.onnx"])


# ------------------------------------------------------------------------------------ int8
def test_int8_export_prints_its_top1_beside_the_float_one_and_predicts(trained, tmp_path):
    out = tmp_path / "int8.onnx"
    result = run_script("predict.py", "--model", CKPT, "--export-onnx", out, "--int8",
                        cwd=trained)
    assert result.returncode == 0, result.stderr
    (line,) = [t for t in result.stderr.splitlines() if t.startswith("int8 top-1")]
    assert " vs float " in line and "cls_val.txt" in line and "cls_train.txt" in line
    model = onnx.load(str(out))
    assert any(n.op_type.startswith("QLinear") or n.op_type == "QuantizeLinear"
               for n in model.graph.node)
    meta = metadata(out)
    record = json.loads(meta[QUANTIZATION_KEY])
    assert record["calibration"] == {"annotation": "cls_train.txt",
                                     "images": len(listed(trained, "train"))}
    assert f"{record['top1']['int8']:.2%}" in line and f"{record['top1']['float']:.2%}" in line
    assert json.loads(meta[SPEC_KEY])["classes"] == CLASSES  # as self-describing as float
    predicted = run_script("predict.py", "datasets/test/red/000.png", "--model", out, "--json",
                           cwd=trained)
    assert predicted.returncode == 0, predicted.stderr
    assert {p["class"] for p in json.loads(predicted.stdout)[0]["predictions"]} == set(CLASSES)


def test_int8_without_calibration_images_is_one_line_and_writes_nothing(trained, tmp_path):
    project = tmp_path / "elsewhere"  # a checkpoint, but no annotation files around it
    project.mkdir()
    os.symlink(trained / CKPT, project / "best.pth")
    result = run_script("predict.py", "--model", "best.pth", "--export-onnx", "int8.onnx",
                        "--int8", cwd=project)
    assert_clean_error(result, "--int8", "cls_train.txt")
    (project / "cls_train.txt").write_text("")
    result = run_script("predict.py", "--model", "best.pth", "--export-onnx", "int8.onnx",
                        "--int8", cwd=project)
    assert_clean_error(result, "cls_train.txt", "lists none")
    assert sorted(p.name for p in project.iterdir()) == ["best.pth", "cls_train.txt"]
