"""summary.py and nets.profile: measured depthwise-separable savings against the paper."""
from __future__ import annotations

import re
import subprocess

import pytest
import torch

import nets
import summary
from nets.profile import measure_latency, separable_costs
from tests.helpers import assert_clean_error, run_script
from utils.cli import run


def meta_model(name, **kwargs):
    with torch.device("meta"):
        return nets.get_model(name, 1000, **kwargs)


@pytest.mark.parametrize("width_mult, input_shape", [(1.0, (224, 224)), (0.5, (32, 32))])
def test_mobilenetv1_separable_layers_cost_what_the_paper_says(width_mult, input_shape):
    model = meta_model("mobilenetv1", width_mult=width_mult, input_shape=input_shape)
    costs = separable_costs(model, input_shape)
    assert len(costs) == 13
    for cost in costs:
        assert cost.kernel == 3
        assert cost.ratio == pytest.approx(cost.formula, rel=0.01), cost.name
    assert costs[-1].out_channels == int(1024 * width_mult)


def test_mobilenetv2_pairs_each_depthwise_conv_with_its_projection():
    costs = separable_costs(meta_model("mobilenetv2"), (224, 224))
    assert len(costs) == 17  # one per inverted residual block
    assert [c.output_size for c in costs[:2]] == [(112, 112), (56, 56)]
    assert (costs[1].in_channels, costs[1].out_channels) == (96, 24)  # 16 * t=6 -> 24


def test_networks_without_depthwise_convs_have_none():
    assert separable_costs(meta_model("resnet18"), (64, 64)) == []


def test_latency_is_a_positive_median():
    model = nets.get_model("mobilenetv1", 10, input_shape=(32, 32), width_mult=0.25)
    assert 0 < measure_latency(model, (32, 32), runs=3, warmup=1) < 5


def test_summary_script_reports_size_cost_ratios_and_latency(tmp_path):
    result = run_script("summary.py", "--backbone", "mobilenetv1", "--input-shape", 224, 224,
                        "--latency", "--runs", 2, "--threads", 1, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "parameters  4,231,976 (4.23 M)" in out
    assert "MACs        568,740,352 (568.74 M" in out
    assert re.search(r"^latency +[0-9.]+ ms \(CPU, 1 image, median of 2, 1 thread\)$", out, re.M)
    rows = [line.split() for line in out.splitlines() if line.startswith("features.")]
    assert len(rows) == 13
    for row in rows:
        ratio, formula, n, dk = float(row[-2]), float(row[-1]), int(row[3]), int(row[1])
        assert ratio == pytest.approx(1 / n + 1 / dk ** 2, rel=0.01)
        assert formula == pytest.approx(1 / n + 1 / dk ** 2, abs=1e-4)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    result = run_script("summary.py", "--backbone", "mobilenetv3", cwd=tmp_path)
    assert_clean_error(result, "unknown backbone", "mobilenetv1, mobilenetv2")


@pytest.mark.parametrize("args, needles", [
    (["--backbone", "mobilenetv1", "--width-mult", "0"], ["width_mult must be > 0"]),
    (["--backbone", "resnet50", "--input-shape", "4", "4"], ["too small", "8x8"]),
    (["--backbone", "resnet50", "--input-shape", "32"], ["--input-shape"]),
    (["--backbone", "vgg16", "--runs", "0"], ["--runs must be at least 1"]),
    (["--backbone", "vgg16", "--threads", "0"], ["--threads must be at least 1"]),
])
def test_more_bad_input_in_process(capsys, args, needles):
    # The same path as the script (utils.cli.run), without paying a Python start-up each.
    with pytest.raises(SystemExit) as exit_info:
        run(summary.main, args)
    out, err = capsys.readouterr()
    assert_clean_error(subprocess.CompletedProcess(args, exit_info.value.code, out, err), *needles)
