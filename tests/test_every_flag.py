"""Every flag of every script refuses what it cannot take, and every script's plain
invocation runs (issue 21: a benchmark that crashed with no flags went unnoticed).

The refusal table is built from the settings dataclasses themselves, so a new flag is
covered the day it is added: each number is tried at zero, negative, NaN, infinite, huge
and not-a-number values, and must be refused exactly when its declared range excludes it
(NaN, infinities and wrong types always).  Every numeric setting must declare a finite
upper bound: a huge value is refused before it costs anything.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import shutil
import typing
from pathlib import Path

import pytest

import nets
from tests.helpers import assert_clean_error, make_dataset, run_script
from utils.cli import UserError
from utils.settings import _base, _tuple_parts, flag_of, parse

CONFIGS = {
    "train.py": ("utils.train.config", "TrainConfig"),
    "predict.py": ("utils.inference.config", "PredictConfig"),
    "eval.py": ("utils.inference.config", "EvalConfig"),
    "txt_annotation.py": ("utils.data.config", "AnnotationConfig"),
    "benchmark.py": ("utils.benchmarks.config", "BenchmarkConfig"),
    "summary.py": ("summary", "SummaryConfig"),
}
#: Sizes the networks themselves check, so that the rule lives in one place (nets/).
CHECKED_BY_NETS = {"input_shape", "width_mult"}
#: What a script needs besides the flag under test to parse at all.
REQUIRED = {"summary.py": ["--backbone", "vgg16"]}
VALUES = ["0", "-1", "nan", "inf", "-inf", "1e30", "99999999999999999999", "abc", "1.5"]


def numeric_fields():
    for script, (module, name) in CONFIGS.items():
        cls = getattr(importlib.import_module(module), name)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = _base(hints[f.name])
            parts = _tuple_parts(kind)
            element, count = parts if parts else (kind, None)
            if element in (int, float):
                yield pytest.param(script, cls, f, element, count, id=f"{script}{flag_of(f)}")


def accepted(text: str, element: type, valid) -> bool:
    """Whether ``text`` is a value of ``element`` inside ``valid``."""
    try:
        value = element(text) if element is int else float(text)
    except ValueError:
        return False
    if element is float and not math.isfinite(value):
        return False
    return valid is None or value in valid


@pytest.mark.parametrize("script, cls, f, element, count", numeric_fields())
def test_every_number_is_refused_outside_its_range(script, cls, f, element, count):
    valid = f.metadata.get("valid")
    if f.name not in CHECKED_BY_NETS:
        assert valid is not None and math.isfinite(valid.high), \
            f"{flag_of(f)} needs a range with a finite upper bound"
    for text in VALUES:
        argv = [*REQUIRED.get(script, []), flag_of(f), *[text] * (count or 1)]
        refused = False
        try:
            parse(cls, argv)
        except UserError:
            refused = True
        except SystemExit as exit_:  # argparse: a value that is no number at all
            assert exit_.code == 2
            refused = True
        if f.name in CHECKED_BY_NETS and not refused:
            continue  # the network refuses it: see the test below
        assert refused != accepted(text, element, valid), (argv, refused)


@pytest.mark.parametrize("value", [(0, 0), (-1, 8), (4, 4), (8, 4097), (20000, 20000)])
def test_the_networks_refuse_every_input_shape_they_cannot_take(value):
    with pytest.raises(ValueError, match="input shape"):
        nets.check_input_shape("mobilenetv2", value)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, 1e30, "2"])
def test_the_networks_refuse_every_width_they_cannot_take(value):
    with pytest.raises(ValueError, match="width_mult"):
        nets.get_model("mobilenetv2", 3, width_mult=value)


@pytest.mark.parametrize("script, args", [
    ("train.py", ["--batch-size", "nan"]),
    ("predict.py", ["--topk", "1e30"]),
    ("eval.py", ["--workers", "-1"]),
    ("txt_annotation.py", ["--val-fraction", "inf"]),
    ("benchmark.py", ["--repeats", "0"]),
    ("summary.py", ["--backbone", "vgg16", "--runs", "abc"]),
])
def test_a_refused_value_is_one_line_and_writes_nothing(tmp_path, script, args):
    result = run_script(script, *args, cwd=tmp_path)
    assert_clean_error(result, args[-2])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ plain invocations
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """2 classes x 8 train / 2 test 16x16 images, annotated by the plain command."""
    root = tmp_path_factory.mktemp("plain")
    make_dataset(root, classes=("cat", "dog"), train=8, test=2)
    result = run_script("txt_annotation.py", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def test_plain_train_predict_eval_run_on_tiny_data(tiny):
    result = run_script("train.py", cwd=tiny, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tiny / "logs").iterdir()
    assert (run / "best.pth").is_file() and (run / "report.html").is_file()
    result = run_script("predict.py", cwd=tiny, input="datasets/test/cat/000.png\n")
    assert result.returncode == 0 and "datasets/test/cat/000.png" in result.stdout
    result = run_script("eval.py", cwd=tiny)
    assert result.returncode == 0, result.stderr
    assert (tiny / "metrics_out" / "report.html").is_file()


def test_plain_benchmark_and_summary_run_on_tiny_data(tiny, tmp_path):
    shutil.copytree(tiny, tmp_path / "b", ignore=shutil.ignore_patterns("logs"))
    result = run_script("benchmark.py", cwd=tmp_path / "b", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("data pipeline, ours", "train step", "eval, batched"):
        assert stage in result.stdout
    result = run_script("summary.py", "--backbone", "mobilenetv2", cwd=tmp_path)
    assert result.returncode == 0 and "parameters" in result.stdout
