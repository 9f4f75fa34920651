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


@pytest.mark.parametrize("name", ["preact_resnet18", "resnet18", "wide_resnet"])
def test_norm_layer_factory_swaps_every_normalisation_layer(name):
    extra = {"depth": 10, "widen": 1} if name == "wide_resnet" else {}
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
