"""``export.py``: every format carries the model description and ends with a parity check; a
failed check leaves nothing; nothing is overwritten by mistake.  (The web page itself is
driven in Chromium by ``test_web_export.py``; ``predict.py --export-onnx`` by
``test_onnx.py``.)"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import pytest

import export
from tests.helpers import ROOT, assert_clean_error, calibrated_checkpoint, run_script, snapshot
from utils.cli import UserError
from utils.inference import exporting
from utils.inference.classifier import Classifier, RunOptions
from utils.inference.export_config import FORMATS
from utils.inference.onnx_runtime import SOURCE_KEY, SPEC_KEY

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def converter(module: str):
    """The optional converter ``module``, or a skip saying it is not installed here (a
    failure under CI=true: requirements-dev.txt installs requirements-export.txt)."""
    try:
        return __import__(module)
    except ImportError:
        if CI:
            pytest.fail(f"{module} is required under CI=true (requirements-export.txt)")
        pytest.skip(f"{module} is not installed here (pip install -r requirements-export.txt)")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A CIFAR-style model (32x32, no crop) whose outputs depend on its input."""
    root = tmp_path_factory.mktemp("export")
    spec = calibrated_checkpoint(root / "model.pth")
    return root, spec


def exported(project, *args):
    """Run export.py as a user would; its result."""
    root, _ = project
    return run_script("export.py", "model.pth", *map(str, args), cwd=root)


def classifier(root) -> Classifier:
    return Classifier.load(root / "model.pth", RunOptions(device="cpu", runtime="torch"))


def test_help_lists_every_format_and_what_it_needs():
    result = run_script("export.py", "--help", cwd=ROOT)
    assert result.returncode == 0
    for name, fmt in FORMATS.items():
        assert f"  {name} " in result.stdout
    assert result.stdout.count("requirements-export.txt") >= 2  # tflite, coreml
    assert "npm" in result.stdout and "--ort-web" in result.stdout


def test_onnx_carries_the_description_and_reports_its_parity(project):
    root, spec = project
    result = exported(project, "--format", "onnx")
    assert result.returncode == 0, result.stderr
    assert "top-1 agreement 100.0% (32/32)" in result.stderr
    assert "32 generated images" in result.stderr  # no cls_val.txt beside the model here
    meta = {p.key: p.value for p in onnx.load(str(root / "model.onnx")).metadata_props}
    assert json.loads(meta[SPEC_KEY]) == spec.to_dict()  # the whole description, any field
    assert json.loads(meta[SOURCE_KEY])["checkpoint"] == "model.pth"


def test_an_existing_output_needs_force_and_the_model_is_never_replaced(project):
    root, _ = project
    taken = root / "taken.onnx"
    taken.write_bytes(b"someone's file")
    model = (root / "model.pth").read_bytes()
    assert_clean_error(exported(project, "--out", taken), "exists", "--force")
    assert taken.read_bytes() == b"someone's file"
    assert_clean_error(exported(project, "--out", "model.pth", "--force"),
                       "model being exported")
    (root / "alias.onnx").symlink_to(root / "model.pth")  # the model under another name
    assert_clean_error(exported(project, "--out", "alias.onnx", "--force"),
                       "model being exported")
    assert_clean_error(exported(project, "--format", "tflite", "--out", "m.onnx"),
                       "must end in .tflite")
    taken_file = root / "site"
    taken_file.write_text("a file")
    assert_clean_error(exported(project, "--format", "web", "--out", taken_file, "--force"),
                       "is a file")
    assert (root / "model.pth").read_bytes() == model
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("fmt", ["onnx", "web"])
def test_a_failed_parity_check_leaves_nothing_and_keeps_the_old_output(project, tmp_path,
                                                                        monkeypatch, fmt):
    """The runtime answers something else than PyTorch: an error, no output, no temporary
    file, and an output being replaced (--force) is still the old one."""
    root, _ = project
    if fmt == "web" and not _web_runtime_available():
        pytest.skip("the web export needs npm or a cached onnxruntime-web here")
    # A runtime that is sure of class 0 whatever the picture.
    monkeypatch.setattr(exporting, "onnx_runner", lambda path, spec: lambda batch:
                        np.eye(3, dtype=np.float32)[np.zeros(len(batch), int)] * 10)
    web_files = exporting.prerequisites(fmt)
    out = tmp_path / ("model.onnx" if fmt == "onnx" else "site")
    with pytest.raises(UserError, match="parity check failed.*nothing written"):
        exporting.export_model(classifier(root), fmt, out, web_files=web_files)
    assert list(tmp_path.iterdir()) == []
    (out.mkdir() if fmt == "web" else out.write_text("old"))
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="parity check failed"):
        exporting.export_model(classifier(root), fmt, out, web_files=web_files)
    assert snapshot(tmp_path) == before and sorted(tmp_path.iterdir()) == [out]


def _web_runtime_available() -> bool:
    import shutil

    from utils.inference import ort_web

    return bool(shutil.which("npm")) or (ort_web.cache_dir() / ort_web.FILES[0]).is_file()


@pytest.mark.parametrize("fmt, module, package", [("tflite", "litert_torch", "litert-torch"),
                                                  ("coreml", "coremltools", "coremltools")])
def test_a_missing_converter_is_one_line_naming_the_install(project, monkeypatch, capsys,
                                                            fmt, module, package):
    root, _ = project
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.chdir(root)
    with pytest.raises(UserError) as caught:
        export.main(["model.pth", "--format", fmt])
    message = str(caught.value)
    assert package in message and "pip install -r requirements-export.txt" in message
    assert not (root / f"model{FORMATS[fmt].suffix}").exists()


def test_tflite_matches_pytorch_in_the_litert_interpreter(project):
    converter("litert_torch")
    from utils.inference.export_tflite import interpreter_runner, read_metadata

    root, spec = project
    result = exported(project, "--format", "tflite")
    assert result.returncode == 0, result.stderr
    assert "parity, LiteRT interpreter vs PyTorch: top-1 agreement 100.0% (32/32)" \
        in result.stderr
    assert "XNNPACK" not in result.stderr  # the converter's chatter stays off the console
    path = root / "model.tflite"
    stored = read_metadata(path)
    assert json.loads(stored[SPEC_KEY]) == spec.to_dict()
    # Independently of the export's own check: other pictures, the interpreter's answers.
    rng = np.random.default_rng(7)
    batch = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    expected = classifier(root).array_logits(batch)
    np.testing.assert_allclose(interpreter_runner(path, spec)(batch), expected, atol=1e-3)


def test_coreml_converts_and_its_spec_reads_back(project):
    ct = converter("coremltools")
    root, spec = project
    result = exported(project, "--format", "coreml")
    assert result.returncode == 0, result.stderr
    if sys.platform != "darwin":
        assert "parity check skipped: Core ML runs models on macOS only" in result.stderr
    else:
        assert "top-1 agreement 100.0%" in result.stderr
    saved = ct.models.MLModel(str(root / "model.mlpackage"), skip_model_load=True).get_spec()
    (given,), (produced,) = saved.description.input, saved.description.output
    assert (given.name, list(given.type.multiArrayType.shape)) == ("input", [1, 3, 32, 32])
    assert produced.name == "logits"
    assert json.loads(saved.description.metadata.userDefined[SPEC_KEY]) == spec.to_dict()
