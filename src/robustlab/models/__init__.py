"""Models by name. Every built model takes [0,1] inputs (a Normalize module sits in front)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from robustlab.models.normalize import DCTLowPass, Normalize
from robustlab.models.resnets import PreActResNet18, ResNet18, WideResNet
from robustlab.models.small import SmallCNN, WongMNISTNet
from robustlab.registry import Registry

# name -> builder(in_channels, num_classes, image_size, cfg.model) -> nn.Module
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.register("wong_mnist")(lambda c, k, s, cfg: WongMNISTNet(c, k, s))
MODELS.register("small_cnn")(lambda c, k, s, cfg: SmallCNN(c, k, s))
MODELS.register("preact_resnet18")(lambda c, k, s, cfg: PreActResNet18(c, k))
MODELS.register("resnet18")(lambda c, k, s, cfg: ResNet18(c, k))
MODELS.register("wide_resnet")(lambda c, k, s, cfg: WideResNet(c, k, cfg.depth, cfg.widen, cfg.dropout))


def build_model(cfg, shape: tuple[int, int, int], num_classes: int, mean=None, std=None) -> nn.Module:
    """``cfg`` is a ModelConfig; ``shape`` is (C, H, W) of the data set."""
    c, h, w = shape
    net = MODELS.get(cfg.name)(c, num_classes, h, cfg)
    # Always the same two-module shape, so state dicts do not depend on the normalize flag.
    if not cfg.normalize or mean is None:
        mean, std = (0.0,) * c, (1.0,) * c
    lowpass = DCTLowPass(cfg.lowpass, h, w) if getattr(cfg, "lowpass", 0) else None
    return nn.Sequential(Normalize(mean, std, lowpass), net)


__all__ = ["MODELS", "DCTLowPass", "Normalize", "PreActResNet18", "ResNet18", "SmallCNN", "WideResNet", "WongMNISTNet", "build_model"]
