"""ONNX export: predict.py --export-onnx agrees with PyTorch, batch size is dynamic."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.test_predict import CLASSES, make_checkpoint
from tests.helpers import run_script
from utils import onnx_export
from utils.classifier import Classifier
from utils.cli import UserError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A MobileNetV1 (α 0.25, the quickest network to export) written by predict.py."""
    root = tmp_path_factory.mktemp("onnx")
    make_checkpoint(root / "model.pth", backbone="mobilenetv1")
    result = run_script("predict.py", "--model", "model.pth", "--export-onnx", "model.onnx",
                        cwd=root)
    assert result.returncode == 0, result.stderr
    return root, result


def test_export_matches_pytorch_for_any_batch_size(exported):
    root, result = exported
    assert "max abs diff" in result.stderr and result.stdout == ""  # no paths: export only
    classifier = Classifier.load(root / "model.pth")
    session = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16)
        (onnx_logits,) = session.run(["logits"], {"input": x.numpy()})
        with torch.inference_mode():
            expected = classifier.model(x).numpy()
        assert onnx_logits.shape == (batch, len(CLASSES))
        assert np.abs(onnx_logits - expected).max() <= 1e-4


def test_export_describes_its_input_and_classes(exported):
    root, _ = exported
    model = onnx.load(str(root / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == CLASSES
    assert json.loads(meta["input_shape"]) == [16, 16]
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "input" and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [3, 16, 16]


def test_a_diverging_export_is_an_error(exported):
    root, _ = exported
    classifier = Classifier.load(root / "model.pth")
    with torch.no_grad():
        classifier.model.classifier.bias += 1e-3  # PyTorch side no longer matches the file
    with pytest.raises(UserError, match="differ from PyTorch"):
        onnx_export.check_onnx(classifier, root / "model.onnx")


def test_torchscript_exporter_is_the_fallback(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_export, "_export_dynamo", broken)
    make_checkpoint(tmp_path / "model.pth", backbone="mobilenetv1")
    classifier = Classifier.load(tmp_path / "model.pth")
    onnx_export.export_onnx(classifier, tmp_path / "model.onnx")
    assert "unsupported operator" in capsys.readouterr().err
    assert onnx_export.check_onnx(classifier, tmp_path / "model.onnx", batch_size=4) <= 1e-4
