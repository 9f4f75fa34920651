"""Models by name, each with its own config. Every built model takes [0,1] inputs (a Normalize module sits in
front); residual networks take a normalisation-layer factory (``model.norm_layer``); :class:`FeatureTaps`
reads intermediate features of any built model without editing its architecture."""
from __future__ import annotations

from robustlab.models.normalize import DCTLowPass, Normalize
from robustlab.models.registry import MODELS, NORM_LAYERS, ModelConfig, build_model, norm_factory
from robustlab.models.resnets import PreActResNet18, ResNet18, WideResNet
from robustlab.models.small import SmallCNN, WongMNISTNet
from robustlab.models.split_bn import SplitBatchNorm2d, bn_branch, has_split_bn, to_single_bn
from robustlab.models.taps import FeatureTaps

__all__ = ["MODELS", "NORM_LAYERS", "DCTLowPass", "FeatureTaps", "ModelConfig", "Normalize", "PreActResNet18",
           "ResNet18", "SmallCNN", "SplitBatchNorm2d", "WideResNet", "WongMNISTNet", "bn_branch", "build_model",
           "has_split_bn", "norm_factory", "to_single_bn"]
