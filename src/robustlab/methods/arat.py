r"""ARAT / AR-AT, asymmetric invariance regularisation (Waseda et al., ICLR 2025; docs/arat.md), on any model built
with the split-BatchNorm norm layer (``model.norm_layer: {name: split_batchnorm, branches: [clean, adv], deployed:
adv}``):

.. math::
    L = w_a\,\mathrm{CE}(f_{adv}(x'), y) + w_c\,\mathrm{CE}(f_{clean}(x), y)
        + \frac{\lambda}{|S|}\sum_{l\in S}\Big[1 - \frac1B\sum_i \cos\big(h_l(z'_{l,i}),\ \mathrm{sg}(z_{l,i})\big)\Big]

- x' = PGD(x) through the **adversarial** branch in train mode (``steps`` 10, step eps/4, uniform start; the
  attack's forwards update that branch's running statistics, as the reference);
- z_l, z'_l: the features of the tapped layers S (output, ReLU, global average pooling) of the clean forward (clean
  branch) and the adversarial forward (adversarial branch); h_l: a predictor per layer (Linear d -> d/4 without
  bias, BatchNorm1d, ReLU, Linear d/4 -> d), owned by the method (optimised, checkpointed); sg: stop-gradient;
- auto-balanced CE weights: w_a = acc_prev, w_c = 1 - acc_prev, with acc_prev the clean branch's accuracy (eval
  mode) on the first ``balance_points`` training images at each epoch's start.

Options that turn the paper's ablation (Table 1) into a study: ``asymmetric`` (false: the symmetric
0.5 [D(h(z'), sg z) + D(h(z), sg z')]), ``predictor``, ``stop_gradient``, ``distance`` (cos or mse); split BN on/off
is the model's ``norm_layer`` (plain batchnorm: both forwards share statistics).

The reference code's in-place aliasing (docs/arat.md: the clean branch trains on x + U[-eps, eps], not clipped, and PGD
is centred there, so ||x' - x|| can reach 2 eps) is not reproduced by default; ``reference_aliasing: true``
reproduces it so that the published numbers can be compared and the difference measured.
Default layers: ResNet-18's ``layer4.{0,1}.bn{1,2}`` (lambda 30, the default) and WRN-34-10's block-3 ReLUs and final
pooling (set ``weight: 100``), as the paper; other models name ``layers``.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.attacks.modes import attack_mode
from robustlab.attacks.threat import default_step, uniform
from robustlab.core.errors import ConfigError
from robustlab.core.schema import spec
from robustlab.data import to_float
from robustlab.methods.base import METHODS, LossOutput, Method, MethodConfig
from robustlab.models.split_bn import bn_branch
from robustlab.models.taps import FeatureTaps, relu_gap

RESNET18_LAYERS = ["1.layer4.0.bn1", "1.layer4.0.bn2", "1.layer4.1.bn1", "1.layer4.1.bn2"]
# WRN-34-10: the reference taps block3's relu1 / relu2 of its 5 blocks and the final pooling; here the ReLU of the tap
# transform applied to block3's bn1 / bn2 outputs and to the final bn is the same set of 11 features
WRN34_LAYERS = [f"1.block3.{i}.bn{j}" for i in range(5) for j in (1, 2)] + ["1.bn"]


@dataclass
class ARATConfig(MethodConfig):
    name: str = spec("arat")
    steps: int = spec(10, lo=1, doc="PGD steps of the training attack")
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="PGD step (default eps/4: 2/255 at 8/255)")
    layers: list[str] = spec(default_factory=list, doc="tapped modules (default: ResNet-18's layer4.{0,1}.bn{1,2})")
    weight: float = spec(30.0, lo=0.0, doc="lambda (ResNet-18 30, WRN-34-10 100)")
    distance: str = spec("cos", choices=["cos", "mse"])
    asymmetric: bool = spec(True, doc="false: the symmetric invariance loss (ablation)")
    predictor: bool = spec(True, doc="predictor heads on the adversarial features")
    pred_ratio: float = spec(0.25, lo=0.0, lo_open=True, doc="the predictor's hidden width / d")
    stop_gradient: bool = spec(True, doc="no gradient into the target features")
    auto_balance: bool = spec(True, doc="w_a = acc_prev, w_c = 1 - acc_prev")
    ce_weights: list[float] = spec(default_factory=lambda: [1.0, 1.0], doc="[w_a, w_c] when auto_balance is false")
    balance_points: int = spec(1024, lo=1, doc="training images for acc_prev")
    clean_branch: str = spec("clean")
    adv_branch: str = spec("adv")
    reference_aliasing: bool = spec(False, doc="reproduce the reference code's in-place aliasing (docs/arat.md)")

    def resolve(self, parent, key: str) -> None:
        self.alpha = default_step(self.eps) if self.alpha is None else self.alpha

    def check(self, key: str) -> None:
        super().check(key)
        if len(self.ce_weights) != 2:
            raise ConfigError(f"{key}ce_weights: got {self.ce_weights!r}; expected [w_adv, w_clean]")


def predictor_head(d: int, ratio: float) -> nn.Module:
    hidden = max(1, int(d * ratio))
    return nn.Sequential(nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, d))


def distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """cos: 1 - mean_i cos(a_i, b_i); mse: mean squared difference."""
    if kind == "cos":
        return 1 - F.cosine_similarity(a.float(), b.float(), dim=1).mean()
    return F.mse_loss(a.float(), b.float())


@METHODS.register("arat", ARATConfig)
class ARAT(Method):
    def __init__(self, cfg, bctx):
        super().__init__(cfg, bctx)
        self.plain = bctx.model
        names = dict(self.plain.named_modules())
        defaults = next((d for d in (RESNET18_LAYERS, WRN34_LAYERS) if all(n in names for n in d)), [])
        self.layers = list(cfg.layers) or defaults
        if not self.layers:
            raise ConfigError("method.layers: no default for this model; name the modules to tap (e.g. the last "
                              "stage's normalisation layers; robustlab's module names start with '1.')")
        dims = self._feature_dims(bctx)
        self.heads = nn.ModuleDict({str(i): predictor_head(d, cfg.pred_ratio) for i, d in enumerate(dims)}) \
            if cfg.predictor else nn.ModuleDict()
        self.attack = PGD(self.plain, cfg.eps, cfg.alpha, cfg.steps, random_start=not cfg.reference_aliasing,
                          norm=cfg.norm, mode="train", early_stop=False, generator=self.generator)
        self.balance = None
        data = getattr(bctx, "data", None)
        if cfg.auto_balance and data is not None:
            n = min(cfg.balance_points, len(data.train))
            self.balance = (data.train.x[:n], data.train.y[:n], bctx.device)
        self.acc_prev = 0.0

    def _feature_dims(self, bctx) -> list[int]:
        with FeatureTaps(self.plain, self.layers, relu_gap) as taps, attack_mode(self.plain, "eval"), torch.no_grad():
            first = next(self.plain.parameters())         # the probe in the model's own device and dtype (float64 too)
            self.plain(torch.zeros(2, *bctx.input_shape, device=first.device, dtype=first.dtype))
            return [taps.features[n].shape[1] for n in self.layers]

    def modules(self) -> dict[str, nn.Module]:
        return {"predictors": self.heads} if self.cfg.predictor else {}

    # ---- auto-balance ------------------------------------------------------------------------------------------
    def clean_accuracy(self) -> float:
        """The clean branch's accuracy in eval mode on the first ``balance_points`` training images."""
        x, y, device = self.balance
        correct = 0
        with attack_mode(self.plain, "eval"), bn_branch(self.plain, self.cfg.clean_branch), torch.no_grad():
            for i in range(0, len(y), 256):
                correct += int((self.plain(to_float(x[i:i + 256].to(device))).argmax(1) == y[i:i + 256].to(device)).sum())
        return correct / len(y)

    def on_epoch_start(self, ectx) -> None:
        super().on_epoch_start(ectx)
        if self.balance is not None:
            self.acc_prev = self.clean_accuracy()

    def ce_weights(self) -> tuple[float, float]:
        if self.cfg.auto_balance:
            return self.acc_prev, 1.0 - self.acc_prev
        return tuple(self.cfg.ce_weights)

    # ---- inputs and loss -------------------------------------------------------------------------------------
    def prepare(self, model, batch, progress):
        x = batch.x
        if self.cfg.reference_aliasing:      # x_hat = x + U[-eps, eps], not clipped; the attack is centred there
            x = x + self.cfg.eps * (2 * uniform(x.shape, x, self.generator) - 1)
        with bn_branch(self.plain, self.cfg.adv_branch):
            x_adv = self.attack.perturb(x, batch.y)   # bound to the plain model and eps at construction
        return {"x_train": x_adv, "x_clean": x, "eps": self.cfg.eps}

    def features(self, model, x, branch: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with FeatureTaps(self.plain, self.layers, relu_gap) as taps, bn_branch(self.plain, branch):
            logits = model(x)
            return logits, [taps.features[n] for n in self.layers]

    def invariance(self, z_adv: list[torch.Tensor], z_clean: list[torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg

        def term(online, target, i):
            p = self.heads[str(i)](online) if cfg.predictor else online
            t = target.detach() if cfg.stop_gradient else target
            return distance(p, t, cfg.distance)
        terms = []
        for i, (za, zc) in enumerate(zip(z_adv, z_clean)):
            t = term(za, zc, i)
            if not cfg.asymmetric:
                t = 0.5 * (t + term(zc, za, i))
            terms.append(t)
        return torch.stack(terms).mean()

    def objective(self, model, batch, ctx, logits=None):
        logits_clean, z_clean = self.features(model, ctx["x_clean"], self.cfg.clean_branch)
        logits_adv, z_adv = self.features(model, ctx["x_train"], self.cfg.adv_branch)
        ce_adv = F.cross_entropy(logits_adv.float(), batch.y)
        ce_clean = F.cross_entropy(logits_clean.float(), batch.y)
        inv = self.invariance(z_adv, z_clean)
        w_a, w_c = self.ce_weights()
        loss = w_a * ce_adv + w_c * ce_clean + self.cfg.weight * inv
        return LossOutput(loss, logits_adv, {
            "arat_invariance": inv.detach(), "arat_ce_adv": ce_adv.detach(), "arat_ce_clean": ce_clean.detach(),
            "arat_w_adv": torch.tensor(w_a, device=logits_adv.device), "train_clean_acc": (logits_clean.detach().argmax(1) == batch.y).float().mean()})
