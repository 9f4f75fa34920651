"""Split BatchNorm as a module (issue 12): branch isolation, the scoped context, conversion to a plain model."""
import pytest
import torch
from torch import nn

from robustlab.config import ConfigError, config_from_dict
from robustlab.models import SplitBatchNorm2d, bn_branch, build_model, to_single_bn


def split_resnet():
    cfg = config_from_dict({"model": {"name": "resnet18", "norm_layer": {"name": "split_batchnorm"}}}).model
    torch.manual_seed(0)
    return build_model(cfg, (3, 32, 32), 10)


def test_a_branch_forward_leaves_the_other_branch_untouched():
    layer = SplitBatchNorm2d(4)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    with bn_branch(layer, "clean"):
        layer.train()(x)
    assert int(layer.clean.num_batches_tracked) == 1 and int(layer.adv.num_batches_tracked) == 0
    assert torch.equal(layer.adv.running_mean, torch.zeros(4)) and not torch.equal(layer.clean.running_mean, torch.zeros(4))
    layer(x)                                          # outside the context: the deployed branch (adv)
    assert int(layer.adv.num_batches_tracked) == 1 and int(layer.clean.num_batches_tracked) == 1


def test_the_context_restores_after_an_exception_and_names_bad_branches():
    model = split_resnet()
    with pytest.raises(RuntimeError):
        with bn_branch(model, "clean"):
            assert all(m.active == "clean" for m in model.modules() if isinstance(m, SplitBatchNorm2d))
            raise RuntimeError("boom")
    assert all(m.active == "adv" for m in model.modules() if isinstance(m, SplitBatchNorm2d))
    with pytest.raises(ValueError, match="no branch 'natural'"):
        with bn_branch(model, "natural"):
            pass
    with pytest.raises(ConfigError, match="deployed: got 'main'"):
        config_from_dict({"model": {"name": "resnet18", "norm_layer": {"name": "split_batchnorm", "deployed": "main"}}})


@pytest.mark.parametrize("branch", ["adv", "clean"])
def test_conversion_to_one_branch_keeps_its_outputs_exactly(branch):
    model = split_resnet()
    x = torch.rand(4, 3, 32, 32)
    model.train()
    with bn_branch(model, "clean"):
        model(x)                                      # give the branches different statistics
    model(x * 0.5)
    model.eval()
    with torch.no_grad(), bn_branch(model, branch):
        expected = model(x)
    plain = to_single_bn(model, branch).eval()
    assert not any(isinstance(m, SplitBatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == 20
    with torch.no_grad():
        assert torch.equal(plain(x), expected)
