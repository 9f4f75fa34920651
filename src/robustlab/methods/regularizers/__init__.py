"""Regularisers: terms added to any method's loss, one class per file, registered by name.

| name | file | term |
|---|---|---|
| elle, elle_a | elle.py | squared linear-interpolation residual of the loss at random points (elle_a: on/off weight) |
| gradalign | gradalign.py | 1 - cosine of input gradients at x and at a random point |
| llr | llr.py | squared first-order Taylor residual between two random points |
| cure | cure.py | squared distance of input gradients at x and at the attack point |

Weights are schedules (weights.py): ``constant`` or ``onoff`` (ELLE-A's adaptive rule). Add a regulariser by
subclassing :class:`Regularizer` (implement ``term``) and registering it in :data:`REGULARIZERS`.
"""
from robustlab.methods.regularizers.base import REGULARIZERS, RandomPointsConfig, Regularizer, RegularizerConfig, Term
from robustlab.methods.regularizers.cure import CURE, CURE_LAMBDA_PX
from robustlab.methods.regularizers.elle import ELLE, elle_lambda
from robustlab.methods.regularizers.gradalign import GradAlign, gradalign_lambda
from robustlab.methods.regularizers.llr import LLR, LLR_LAMBDA_PX
from robustlab.methods.regularizers.weights import WEIGHT_SCHEDULES, ConstantWeight, OnOffWeight

__all__ = ["CURE", "CURE_LAMBDA_PX", "ELLE", "LLR", "LLR_LAMBDA_PX", "REGULARIZERS", "WEIGHT_SCHEDULES", "ConstantWeight",
           "GradAlign", "OnOffWeight", "RandomPointsConfig", "Regularizer", "RegularizerConfig", "Term", "elle_lambda",
           "gradalign_lambda"]
