"""Transfer attacks (issue 13): BIM, MI, DI, TI against torchattacks 3.5.1 on the same model and points."""
import pytest
import torch

from robustlab.attacks.transfer import DIConfig, TIConfig, TransferAttack, bim, gaussian_kernel

torchattacks = pytest.importorskip("torchattacks")


def cnn():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                              torch.nn.Flatten(), torch.nn.Linear(128, 10)).eval()
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = net(x).argmax(1)
    return net, x, y


def agree(a, b, tol=1e-6):
    """Equal adversarial examples: the same signs almost everywhere (a gradient exactly at 0 can flip in rounding)."""
    return ((a - b).abs() <= tol).float().mean().item()


def test_bim_is_deterministic_and_inside_the_ball():
    net, x, y = cnn()
    atk = bim(net, eps=4 / 255, steps=10)
    a, b = atk(x, y), atk(x, y)
    assert torch.equal(a, b)
    assert (a - x).abs().max() <= 4 / 255 + 1e-7 and a.min() >= 0 and a.max() <= 1
    assert repr(atk).startswith("BIM(eps=0.015686, alpha=0.0015686, steps=10")


def test_mi_fgsm_equals_torchattacks():
    net, x, y = cnn()
    ours = TransferAttack(net, 8 / 255, 2 / 255, 10, decay=1.0)(x, y)
    theirs = torchattacks.MIFGSM(net, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0)(x, y)
    assert agree(ours, theirs) > 0.999


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_di_fgsm_equals_torchattacks_with_the_same_draws(decay):
    net, x, y = cnn()
    torch.manual_seed(7)
    ours = TransferAttack(net, 8 / 255, 2 / 255, 10, decay=decay, di=DIConfig(prob=0.5, rate=0.9))(x, y)
    torch.manual_seed(7)       # DI draws from the global generator in torchattacks: same order of draws here
    theirs = torchattacks.DIFGSM(net, eps=8 / 255, alpha=2 / 255, steps=10, decay=decay, resize_rate=0.9,
                                 diversity_prob=0.5)(x, y)
    assert agree(ours, theirs) > 0.999


def test_ti_fgsm_equals_torchattacks():
    net, x, y = cnn()
    torch.manual_seed(3)
    ours = TransferAttack(net, 8 / 255, 2 / 255, 10, decay=0.0, di=DIConfig(), ti=TIConfig(15, 3.0))(x, y)
    torch.manual_seed(3)       # torchattacks' TIFGSM has DI on by default (TI-DI)
    theirs = torchattacks.TIFGSM(net, eps=8 / 255, alpha=2 / 255, steps=10)(x, y)
    assert agree(ours, theirs) > 0.999


def test_gaussian_kernel_matches_scipy_and_di_variants():
    from scipy.stats import norm
    import numpy as np
    xs = np.linspace(-3, 3, 15)
    k1 = norm.pdf(xs)
    ref = np.outer(k1, k1) / np.outer(k1, k1).sum()
    assert torch.allclose(gaussian_kernel(15, 3.0), torch.from_numpy(ref).float(), atol=1e-7)
    net, x, y = cnn()
    atk = TransferAttack(net, 8 / 255, 2 / 255, 1, di=DIConfig(prob=1.0, rate=1.1, mode="enlarge_resize", per_sample=True),
                         generator=torch.Generator().manual_seed(0))
    out = atk.transform(x)
    assert out.shape == x.shape and not torch.equal(out, x)       # enlarged, padded, resized back to 32 x 32
    never = TransferAttack(net, 8 / 255, 2 / 255, 1, di=DIConfig(prob=0.0, per_sample=True))
    assert torch.equal(never.transform(x), x)
