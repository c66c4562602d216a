"""Pretrained transfer: the torch.hub download path, name-and-shape matching, bad sources."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

import nets
from nets.pretrained import load_pretrained
from tests.helpers import ROOT
from utils.cli import UserError
from utils.model.checkpoint import save_checkpoint, transfer_from_file


@pytest.fixture(scope="module")
def torchvision_mobilenetv2():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().state_dict()


@pytest.fixture
def official_file(tmp_path, torchvision_mobilenetv2):
    """torchvision-format ImageNet weights, served from a file:// URL."""
    path = tmp_path / "mirror" / "mobilenet_v2-test.pth"
    path.parent.mkdir()
    torch.save(torchvision_mobilenetv2, path)
    return path


def test_file_url_downloads_once_into_model_data_and_skips_the_head(
        tmp_path, monkeypatch, capsys, official_file, torchvision_mobilenetv2):
    monkeypatch.chdir(tmp_path)
    url = official_file.as_uri()
    model = nets.get_model("mobilenetv2", 10, pretrained=True, input_shape=(32, 32),
                           pretrained_url=url)

    assert (tmp_path / "model_data" / official_file.name).is_file()
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"loaded 260/262 tensors from {url}; skipped head classifier.1.weight, "
        "classifier.1.bias (1000 -> 10 classes)")
    state = model.state_dict()
    for key, value in torchvision_mobilenetv2.items():
        if not key.startswith("classifier."):
            assert torch.equal(state[key], value), key

    official_file.unlink()  # the cached copy in model_data/ is used from now on
    nets.get_model("mobilenetv2", 10, pretrained=True, input_shape=(32, 32), pretrained_url=url)
    assert "loaded 260/262" in capsys.readouterr().out


def test_grey_input_sums_the_rgb_filters(official_file, torchvision_mobilenetv2):
    model = nets.get_model("mobilenetv2", 1000, in_channels=1)
    report = transfer_from_file(model, official_file)
    assert report.adapted == ["features.0.0.weight"]
    assert report.skipped_head == [] and report.skipped_backbone == []
    torch.testing.assert_close(model.features[0][0].weight,
                               torchvision_mobilenetv2["features.0.0.weight"].sum(1, keepdim=True))


def test_extra_input_channels_repeat_the_rgb_filters(official_file, torchvision_mobilenetv2):
    model = nets.get_model("mobilenetv2", 1000, in_channels=4)
    assert transfer_from_file(model, official_file).adapted == ["features.0.0.weight"]
    rgb = torchvision_mobilenetv2["features.0.0.weight"]
    # Scaled by 3/4 so that four channels add up to what three did.
    torch.testing.assert_close(model.features[0][0].weight, torch.cat([rgb, rgb[:, :1]], 1) * 0.75)


def test_our_checkpoint_from_ddp_and_compile_loads_completely(tmp_path):
    source = nets.get_model("mobilenetv1", 5, input_shape=(32, 32), width_mult=0.25)
    path = tmp_path / "best.pth"
    save_checkpoint({"backbone": "mobilenetv1", "num_classes": 5,
                     "model": {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()}},
                    path)
    model = nets.get_model("mobilenetv1", 5, input_shape=(32, 32), width_mult=0.25)
    report = transfer_from_file(model, path)
    assert report.skipped_head == [] and report.skipped_backbone == []
    assert len(report.loaded) == report.total
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_partial_backbone_match_is_loaded_and_warned(tmp_path, capsys):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    report = transfer_from_file(nets.get_model("resnet34", 1000), path)
    # resnet34 has the same stem and head, and more blocks per stage.
    assert "conv1.weight" in report.loaded and "fc.weight" in report.loaded
    assert "layer1.2.conv1.weight" in report.skipped_backbone
    assert "backbone tensors of resnet34 did not match" in capsys.readouterr().err


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(UserError, match=r"no backbone weights match mobilenetv2: is it a "
                                        r"checkpoint of another architecture\?"):
        transfer_from_file(nets.get_model("mobilenetv2", 10), path)


def test_checkpoint_of_another_backbone_names_both(tmp_path):
    path = tmp_path / "best.pth"
    save_checkpoint({"backbone": "resnet18",
                     "model": nets.get_model("mobilenetv2", 3).state_dict()}, path)
    with pytest.raises(UserError, match="is a resnet18 checkpoint; it does not fit mobilenetv2"):
        transfer_from_file(nets.get_model("mobilenetv2", 3), path, "mobilenetv2")


@pytest.mark.parametrize("content, needle", [
    (b"not a checkpoint at all", "weights.pth: (not a PyTorch checkpoint|refused to load)"),
    ([1, 2, 3], "not a checkpoint or state_dict"),
    ({"epoch": 3}, "not a checkpoint or state_dict"),
])
def test_a_file_that_is_not_weights_is_a_user_error(tmp_path, content, needle):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserError, match=needle):
        transfer_from_file(nets.get_model("mobilenetv1", 3, width_mult=0.25), path)


def test_unreachable_url_says_how_to_work_offline(tmp_path):
    url = (tmp_path / "missing.pth").as_uri()
    with pytest.raises(OSError, match=r"could not download .*missing\.pth.*model_data/"):
        load_pretrained(nets.get_model("mobilenetv2", 3), url, model_dir=tmp_path / "model_data")


def test_importing_checkpoint_before_nets_works():
    subprocess.run([sys.executable, "-c", "import utils.model.checkpoint"], cwd=ROOT, check=True)
