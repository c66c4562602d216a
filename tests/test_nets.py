"""The networks: torchvision compatibility, the papers' sizes, shapes, training, freezing."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import nets
from nets.profile import count_macs, count_parameters

#: Our name -> torchvision's constructor name, for the networks that must match it.
TORCHVISION_NAMES = {"vgg16": "vgg16", "vgg16_bn": "vgg16_bn", "mobilenetv2": "mobilenet_v2",
                     "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50",
                     "resnet101": "resnet101", "resnet152": "resnet152"}
FAMILIES = ("vgg16_bn", "mobilenetv1", "mobilenetv2", "resnet18")
#: The cheap members of the three backbone layouts (``features`` a Sequential, or a view).
SMALL_MODELS = ("mobilenetv1", "mobilenetv2", "resnet18")


def meta_model(name, num_classes=1000, **kwargs):
    """A weightless model: sizes and shapes for free, even for VGG16."""
    with torch.device("meta"):
        return nets.get_model(name, num_classes, **kwargs)


def test_registry_has_the_required_networks():
    assert set(TORCHVISION_NAMES) | {"mobilenetv1"} <= set(nets.available())


@pytest.mark.parametrize("input_shape", [(224, 224), (32, 32)])
@pytest.mark.parametrize("name", sorted(TORCHVISION_NAMES))
def test_parameter_names_and_shapes_equal_torchvision(name, input_shape):
    ours = meta_model(name, input_shape=input_shape)
    with torch.device("meta"):
        reference = getattr(torchvision.models, TORCHVISION_NAMES[name])()
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ours_shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    ours.load_state_dict(reference.state_dict(), strict=True)


@pytest.mark.parametrize("name", sorted(TORCHVISION_NAMES))
def test_official_weights_are_torchvisions_imagenet1k_v1(name):
    weights = torchvision.models.get_model_weights(TORCHVISION_NAMES[name])
    assert meta_model(name).pretrained_cfg.url == weights.IMAGENET1K_V1.url


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_torchvision_weights_give_torchvisions_outputs(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, TORCHVISION_NAMES[name])().eval()
    ours = nets.get_model(name, 1000, input_shape=(96, 96)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("name, width_mult, params_m, macs_m", [
    ("mobilenetv1", 1.0, "4.2", 569),      # Howard et al. 2017, Tables 6 and 7
    ("mobilenetv1", 0.5, "1.3", 149),
    ("mobilenetv2", 1.0, "3.5", 300),      # Sandler et al. 2018, Table 4
    ("resnet50", 1.0, "25.6", 4100),
    ("vgg16", 1.0, "138", 15500),
])
def test_size_and_cost_match_the_papers(name, width_mult, params_m, macs_m):
    model = meta_model(name, **({"width_mult": width_mult} if name.startswith("mobilenet")
                                else {}))
    # Parameters as precisely as the paper gives them; MACs within 2%.
    decimals = len(params_m.partition(".")[2])
    assert f"{count_parameters(model) / 1e6:.{decimals}f}" == params_m
    assert count_macs(model, (224, 224)) / 1e6 == pytest.approx(macs_m, rel=0.02)


@pytest.mark.parametrize("name", nets.available())
def test_every_model_classifies_small_large_and_grey_inputs(name):
    # Shapes only, so weightless meta tensors; real arithmetic is in the SGD-step test.
    for shape in ((224, 224), (32, 32)):
        for channels in (3, 1):
            model = meta_model(name, 7, input_shape=shape, in_channels=channels)
            assert model(torch.empty(2, channels, *shape, device="meta")).shape == (2, 7)


@pytest.mark.parametrize("name", FAMILIES)
def test_small_input_stem_keeps_a_4x4_map_with_the_same_parameters(name):
    small = meta_model(name, input_shape=(32, 32))
    large = meta_model(name, input_shape=(224, 224))
    assert small.forward_features(torch.empty(1, 3, 32, 32, device="meta")).shape[-2:] == (4, 4)
    assert large.forward_features(torch.empty(1, 3, 224, 224, device="meta")).shape[-2:] == (7, 7)
    assert ({k: v.shape for k, v in small.state_dict().items()}
            == {k: v.shape for k, v in large.state_dict().items()})


@pytest.mark.parametrize("name", FAMILIES)
def test_one_dropped_stride_halves_the_small_map_with_the_same_parameters(name):
    """``small_input_drops=1`` (the CPU recipe's): 32 px reaches the head as 2x2, every
    parameter as before; large inputs are not affected."""
    one = meta_model(name, input_shape=(32, 32), small_input_drops=1)
    two = meta_model(name, input_shape=(32, 32))
    assert one.forward_features(torch.empty(1, 3, 32, 32, device="meta")).shape[-2:] == (2, 2)
    assert ({k: v.shape for k, v in one.state_dict().items()}
            == {k: v.shape for k, v in two.state_dict().items()})
    large = meta_model(name, input_shape=(224, 224), small_input_drops=1)
    assert large.forward_features(torch.empty(1, 3, 224, 224, device="meta")).shape[-2:] == (7, 7)


@pytest.mark.parametrize("name", FAMILIES)
def test_in_channels_changes_only_the_first_conv(name):
    rgb = {k: v.shape for k, v in meta_model(name).state_dict().items()}
    grey = {k: v.shape for k, v in meta_model(name, in_channels=1).state_dict().items()}
    assert [k for k in rgb if rgb[k] != grey[k]] == [next(iter(rgb))]


@pytest.mark.parametrize("name", nets.available())
def test_one_sgd_step_reduces_the_loss(name):
    torch.manual_seed(0)
    model = nets.get_model(name, 4, input_shape=(16, 16)).train()
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 3])

    def loss():
        torch.manual_seed(1)  # the same dropout masks for both evaluations
        return nn.functional.cross_entropy(model(x), y)

    before = loss()
    before.backward()
    # Gradient scales differ by orders of magnitude between networks at initialisation, so
    # take the step whose first-order prediction cuts the loss by 1%: it must reduce it.
    grad_sq = sum(p.grad.square().sum() for p in model.parameters()).item()
    torch.optim.SGD(model.parameters(), lr=0.01 * before.item() / grad_sq).step()
    with torch.no_grad():
        assert loss() < before


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(name):
    model = nets.get_model(name, 3, input_shape=(32, 32))
    model.freeze_backbone()
    model.train()
    assert all(not p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    backbone_state = {k: v.clone() for k, v in model.features.state_dict().items()}

    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert all(not m.training for m in model.features.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(p.grad is None for p in model.features.parameters())
    for key, value in model.features.state_dict().items():
        assert torch.equal(value, backbone_state[key]), key

    model.unfreeze_backbone()
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_channels_last_autocast_and_compile_trace():
    model = nets.get_model("mobilenetv2", 5, input_shape=(32, 32))
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16
    # fullgraph: dynamo must trace every model's forward without a graph break.
    compiled = torch.compile(nets.get_model("resnet18", 5, input_shape=(32, 32)),
                             backend="eager", fullgraph=True)
    assert compiled(x).shape == (2, 5)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(name="resnet51"), "available: mobilenetv1, mobilenetv2, resnet101"),
    (dict(name="mobilenetv1", width_mult=0), "width_mult must be > 0"),
    (dict(name="mobilenetv2", width_mult=-1.0), "width_mult must be > 0"),
    (dict(name="resnet50", width_mult=0.5), "resnet50 has no argument width_mult"),
    (dict(name="vgg16", input_shape=(7, 64)), "too small for vgg16: the minimum is 8x8"),
    (dict(name="resnet18", input_shape=(32,)), "two integers"),
    (dict(name="resnet18", num_classes=0), "num_classes must be a positive integer"),
    (dict(name="mobilenetv1", pretrained=True), "mobilenetv1 has no official ImageNet weights"),
    (dict(name="mobilenetv1", input_shape=(32, 32), small_input_drops=3),
     "small_input_drops must be 1 or 2, got 3"),
    (dict(name="resnet18", input_shape=(32, 32), small_input_drops=True),
     "small_input_drops must be 1 or 2, got True"),
])
def test_bad_arguments_are_one_line_value_or_key_errors(kwargs, needle):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises((ValueError, KeyError), match=needle) as excinfo:
        nets.get_model(**kwargs)
    assert "\n" not in str(excinfo.value)


def test_nets_is_a_leaf_package_that_imports_nothing_of_the_project():
    """nets/ depends on torch alone, so it can be read, reused and tested on its own."""
    import ast
    from pathlib import Path

    for path in Path(nets.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "utils" or n.startswith("utils.") for n in names), path.name
