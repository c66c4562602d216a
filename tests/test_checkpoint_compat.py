"""Checkpoints written by earlier versions keep working: same classes, same probabilities."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_script

FIXTURE = Path(__file__).parent / "data" / "v1_checkpoint"


def test_version_1_checkpoint_predicts_what_it_predicted_when_written(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "v1")
    result = run_script("predict.py", "v1/images", "--model", "v1/v1_mobilenetv1.pth",
                        "--json", "--topk", "3", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = {Path(r["path"]).name: r["predictions"] for r in json.loads(result.stdout)}
    expected = {r["path"]: r["predictions"]
                for r in json.loads((FIXTURE / "expected.json").read_text())}
    assert got.keys() == expected.keys()
    for name, predictions in expected.items():
        assert [p["class"] for p in got[name]] == [p["class"] for p in predictions], name
        for g, e in zip(got[name], predictions):
            assert g["probability"] == pytest.approx(e["probability"], abs=1e-5), name
