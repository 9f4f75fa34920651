"""The model and normalisation-layer registries, each entry with its own config.

``model: {name: wide_resnet, depth: 34, widen: 10, norm_layer: {name: batchnorm}}``; a model without
normalisation layers (``wong_mnist``, ``small_cnn``) has no ``norm_layer`` key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.core.registry import Registry
from robustlab.core.schema import component, spec
from robustlab.models.normalize import DCTLowPass, Normalize
from robustlab.models.airbench import MIN_SIDE, AirbenchNet
from robustlab.models.families import VGG, MobileNetV2
from robustlab.models.split_bn import SplitBatchNorm2d
from robustlab.models.resnets import PreActResNet18, ResNet18, WideResNet
from robustlab.models.small import SmallCNN, WongMNISTNet


# ---- normalisation layers: name -> (config -> factory(channels) -> module) ------------------------------
@dataclass
class NormLayerConfig:
    name: str = spec("batchnorm")


@dataclass
class BatchNormConfig(NormLayerConfig):
    momentum: float = spec(0.1, lo=0.0, hi=1.0, doc="running-statistics momentum (torch's convention)")
    eps: float = spec(1e-5, lo=0.0, lo_open=True)


@dataclass
class GroupNormConfig(NormLayerConfig):
    groups: int = spec(32, lo=1, doc="groups (must divide every layer's channels)")


NORM_LAYERS: Registry[Callable[..., Callable[[int], nn.Module]]] = Registry("normalisation layer", NormLayerConfig)
NORM_LAYERS.register("batchnorm", BatchNormConfig)(lambda cfg: lambda c: nn.BatchNorm2d(c, cfg.eps, cfg.momentum))
def _groups(groups: int, channels: int) -> int:
    """min(groups, channels), or their gcd when that does not divide the channels (narrow MobileNet layers)."""
    g = min(groups, channels)
    return g if channels % g == 0 else math.gcd(groups, channels)


NORM_LAYERS.register("groupnorm", GroupNormConfig)(lambda cfg: lambda c: nn.GroupNorm(_groups(cfg.groups, c), c))
NORM_LAYERS.register("none")(lambda cfg: lambda c: nn.Identity())


@dataclass
class SplitBatchNormConfig(BatchNormConfig):
    branches: list[str] = spec(default_factory=lambda: ["clean", "adv"], doc="branch names")
    deployed: str = spec("adv", doc="the branch evaluation and exports use (ARAT: adv; AdvProp: clean)")

    def check(self, key: str) -> None:
        if self.deployed not in self.branches or len(set(self.branches)) != len(self.branches) or len(self.branches) < 2:
            raise ConfigError(f"{key}deployed: got {self.deployed!r}; must be one of >= 2 distinct branches "
                              f"({', '.join(self.branches)})")


NORM_LAYERS.register("split_batchnorm", SplitBatchNormConfig)(
    lambda cfg: lambda c: SplitBatchNorm2d(c, cfg.branches, cfg.deployed, cfg.eps, cfg.momentum))


def norm_factory(cfg) -> Callable[[int], nn.Module]:
    return NORM_LAYERS.build(cfg)


# ---- models: name -> builder(cfg, in_channels, num_classes, image_size) -> module --------------------------
@dataclass
class ModelConfig:
    name: str = spec("wong_mnist", doc="a registered model (robustlab list models)")
    normalize: bool = spec(True, doc="put the data set's mean/std Normalize module in front of the model")
    lowpass: int = spec(0, lo=0, doc="keep the b x b lowest 2-D DCT frequencies of the input (0: off)")


@dataclass
class ResNetConfig(ModelConfig):
    norm_layer: NormLayerConfig = component(NORM_LAYERS, "batchnorm", doc="normalisation layer factory")


@dataclass
class ResNet18Config(ResNetConfig):
    width: float = spec(1.0, lo=0.0, lo_open=True, doc="channel multiplier of the stage widths 64-128-256-512 "
                        "(CPU scale: 0.25 or 0.5)")


@dataclass
class WideResNetConfig(ResNetConfig):
    depth: int = spec(28, lo=10, doc="WideResNet depth (6n+4)")
    widen: int = spec(10, lo=1, doc="WideResNet widening factor")
    dropout: float = spec(0.0, lo=0.0, hi=1.0)

    def check(self, key: str) -> None:
        if (self.depth - 4) % 6 != 0:
            raise ConfigError(f"{key}depth: got {self.depth}; WideResNet needs depth = 6n+4 (16, 28, 34, 40)")


@dataclass
class VGGConfig(ResNetConfig):
    depth: int = spec(16, choices=[11, 13, 16, 19], doc="VGG depth")
    width: float = spec(1.0, lo=0.0, lo_open=True, doc="channel multiplier (CPU twins: 0.25)")


@dataclass
class MobileNetV2Config(ResNetConfig):
    width: float = spec(1.0, lo=0.0, lo_open=True, doc="channel multiplier (CPU twins: 0.25)")


@dataclass
class AirbenchConfig(ResNetConfig):
    width: float = spec(1.0, lo=0.0, lo_open=True, doc="channel multiplier of the widths 24-64-256-256")


def _airbench(cfg, c, k, s):
    if s < MIN_SIDE:
        raise ConfigError(f"model.name: airbench needs images of at least {MIN_SIDE} x {MIN_SIDE}; this data set's "
                          f"are {s} x {s} (use wong_mnist or small_cnn)")
    return AirbenchNet(c, k, cfg.width, norm_factory(cfg.norm_layer))


MODELS: Registry[Callable[..., nn.Module]] = Registry("model", ModelConfig)
MODELS.register("wong_mnist")(lambda cfg, c, k, s: WongMNISTNet(c, k, s))
MODELS.register("small_cnn")(lambda cfg, c, k, s: SmallCNN(c, k, s))
MODELS.register("preact_resnet18", ResNet18Config)(
    lambda cfg, c, k, s: PreActResNet18(c, k, norm_factory(cfg.norm_layer), cfg.width))
MODELS.register("resnet18", ResNet18Config)(lambda cfg, c, k, s: ResNet18(c, k, norm_factory(cfg.norm_layer), cfg.width))
MODELS.register("wide_resnet", WideResNetConfig)(
    lambda cfg, c, k, s: WideResNet(c, k, cfg.depth, cfg.widen, cfg.dropout, norm_factory(cfg.norm_layer)))
MODELS.register("vgg", VGGConfig)(lambda cfg, c, k, s: VGG(c, k, cfg.depth, cfg.width, norm_factory(cfg.norm_layer)))
MODELS.register("mobilenet_v2", MobileNetV2Config)(
    lambda cfg, c, k, s: MobileNetV2(c, k, cfg.width, norm_factory(cfg.norm_layer)))
MODELS.register("airbench", AirbenchConfig)(_airbench)


def build_model(cfg, shape: tuple[int, int, int], num_classes: int, mean=None, std=None) -> nn.Module:
    """``cfg`` is a model config; ``shape`` is (C, H, W) of the data set. Returns Sequential(Normalize, net)."""
    c, h, w = shape
    net = MODELS.build(cfg, c, num_classes, h)
    # Always the same two-module shape, so state dicts do not depend on the normalize flag.
    if not cfg.normalize or mean is None:
        mean, std = (0.0,) * c, (1.0,) * c
    lowpass = DCTLowPass(cfg.lowpass, h, w) if cfg.lowpass else None
    return nn.Sequential(Normalize(mean, std, lowpass), net)
