"""Models: the normalisation-layer factory and feature taps."""
import pytest
import torch
from torch import nn

from robustlab.config import ConfigError, config_from_dict
from robustlab.models import FeatureTaps, build_model
from robustlab.models.taps import relu_gap


def model(**kw):
    cfg = config_from_dict({"model": kw}).model
    return build_model(cfg, (3, 32, 32), 10)


@pytest.mark.parametrize("name", ["preact_resnet18", "resnet18", "wide_resnet", "vgg", "mobilenet_v2", "airbench"])
def test_norm_layer_factory_swaps_every_normalisation_layer(name):
    extra = {"wide_resnet": {"depth": 10, "widen": 1}, "vgg": {"depth": 11, "width": 0.25},
             "mobilenet_v2": {"width": 0.25}, "airbench": {"width": 0.25}}.get(name, {})
    default = model(name=name, **extra)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in default.modules())
    assert n_bn > 0
    gn = model(name=name, norm_layer={"name": "groupnorm", "groups": 8}, **extra)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in gn.modules()) == 0
    assert sum(isinstance(m, nn.GroupNorm) for m in gn.modules()) == n_bn
    bn = model(name=name, norm_layer={"name": "batchnorm", "momentum": 0.01}, **extra)
    assert {m.momentum for m in bn.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
    assert gn(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_small_models_take_no_norm_layer():
    with pytest.raises(ConfigError, match=r"model\.norm_layer: unknown key; allowed keys here: name, normalize, lowpass"):
        config_from_dict({"model": {"name": "wong_mnist", "norm_layer": "batchnorm"}})


def test_feature_taps_read_named_layers_without_editing_the_model():
    net = model(name="resnet18").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
    names = ["1.layer4.0.bn1", "1.layer4.1.bn2"]
    with FeatureTaps(net, names, transform=relu_gap) as taps:
        with torch.no_grad():
            out = net(x)
        assert set(taps.features) == set(names) and taps.features[names[0]].shape == (2, 512)
        assert (taps.features[names[1]] >= 0).all()                # through the ReLU, then pooled
    assert torch.equal(out, ref)                                     # the taps do not change the output
    assert not any(m._forward_hooks for m in net.modules())          # removed on exit
    with pytest.raises(KeyError, match=r"no such module; did you mean .*1\.layer4\.0\.bn1"):
        FeatureTaps(net, ["1.layer4.0.bn"])


def conv_bn(cin, cout, k, groups=1):
    """Parameters of a bias-free k x k convolution followed by BatchNorm (weight and bias)."""
    return k * k * cin // groups * cout + 2 * cout


def vgg_count(depth, classes=10):
    stages = {11: [1, 1, 2, 2, 2], 16: [2, 2, 3, 3, 3]}[depth]
    total, c = 0, 3
    for n, out in zip(stages, [64, 128, 256, 512, 512]):
        for _ in range(n):
            total, c = total + conv_bn(c, out, 3), out
    return total + 512 * classes + classes


def mobilenet_v2_count(classes=10):
    total, c = conv_bn(3, 32, 3), 32
    for t, out, n, _ in [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                         (6, 320, 1, 1)]:
        for _ in range(n):
            hidden = c * t
            total += (conv_bn(c, hidden, 1) if t != 1 else 0) + conv_bn(hidden, hidden, 3, hidden) + conv_bn(hidden, out, 1)
            c = out
    return total + conv_bn(320, 1280, 1) + 1280 * classes + classes


@pytest.mark.parametrize("name,kw,count", [("vgg", {"depth": 16}, vgg_count(16)), ("vgg", {"depth": 11}, vgg_count(11)),
                                          ("mobilenet_v2", {}, mobilenet_v2_count())])
def test_new_families_have_the_layer_shapes_of_the_papers(name, kw, count):
    """Parameter counts from the layer shapes of the CIFAR variants (VGG-BN: bias-free 3x3 convolutions, one linear
    classifier on pooled 512 features; MobileNet-v2: the paper's inverted residuals, 1280 final channels)."""
    net = model(name=name, **kw)
    assert sum(p.numel() for p in net.parameters()) == count
    # independent figures: torchvision's MobileNetV2(num_classes=10) has 2,236,682 parameters; the common CIFAR VGG-16 /
    # VGG-11 (conv biases kept) have 14,728,266 / 9,231,114, less 4,224 / 2,752 conv biases here
    assert count in (14_724_042, 9_228_362, 2_236_682)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_new_families_take_small_images(shape):
    for name, kw in (("vgg", {"depth": 11, "width": 0.25}), ("mobilenet_v2", {"width": 0.25})):
        cfg = config_from_dict({"model": {"name": name, **kw}}).model
        assert build_model(cfg, shape, 10)(torch.rand(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("name", ["preact_resnet18", "resnet18"])
def test_resnet18_width(name):
    """A width multiplier scales every stage (64-128-256-512 x w); width 1 is the published network unchanged
    (11.17 M parameters for 10 classes)."""
    from robustlab.config import config_from_dict
    from robustlab.models import build_model

    def net(width):
        cfg = config_from_dict({"model": {"name": name, "width": width}}).model
        return build_model(cfg, (3, 32, 32), 10)
    full, half, quarter = net(1.0), net(0.5), net(0.25)
    count = [sum(p.numel() for p in m.parameters()) for m in (full, half, quarter)]
    assert abs(count[0] - 11.17e6) < 0.01e6
    assert 0.24 < count[1] / count[0] < 0.26 and 0.06 < count[2] / count[0] < 0.065     # ~ w^2
    assert quarter[1].linear.in_features == 128 and half(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_airbench_has_the_layer_shapes_of_the_paper():
    """airbench's eight layers: a 2x2 stem conv (24 channels, with bias) and three groups of two bias-free 3x3 convs
    (64, 256, 256), each conv followed by BatchNorm, a bias-free linear classifier; the paper reports 1.97 M
    parameters for airbench94 (whose stem has no BatchNorm: 48 fewer)."""
    count = 3 * 4 * 24 + 24 + 2 * 24
    c = 24
    for out in (64, 256, 256):
        count += conv_bn(c, out, 3) + conv_bn(out, out, 3)
        c = out
    count += 256 * 10
    net = model(name="airbench")
    assert sum(p.numel() for p in net.parameters()) == count == 1_972_840
    x = torch.rand(2, 3, 32, 32)
    assert net(x).shape == (2, 10)
    # the logits are the classifier's output / 9, on a global max-pool of the last group's 3 x 3 map
    body = net[1]
    feats = body.groups(body.stem(net[0](x)))
    assert feats.shape == (2, 256, 3, 3)
    assert torch.allclose(net(x), body.classifier(feats.amax(dim=(2, 3))) / 9, atol=1e-6)
    half = build_model(config_from_dict({"model": {"name": "airbench", "width": 0.5}}).model, (1, 28, 28), 10)
    assert half(torch.rand(2, 1, 28, 28)).shape == (2, 10) and half[1].classifier.in_features == 128
    with pytest.raises(ConfigError, match=r"model\.name: airbench needs images of at least 16 x 16; this data set's are 8 x 8"):
        build_model(config_from_dict({"model": {"name": "airbench"}}).model, (1, 8, 8), 10)
