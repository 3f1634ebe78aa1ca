"""Tiny shrinkage networks whose output is forced to known values (for tests).

With the head weights set to zero a network's heads output their biases, whatever
the features: ``α = sigmoid(b_α)``, ``π = softmax(b_π)``, ``log_var = b_v``.  A bias
of ``±1e4`` gives ``α`` (or a weight) of exactly 0 or 1 in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.models.registry import save_model

BIG = 1e4


def logit(a: float) -> float:
    if a <= 0.0:
        return -BIG
    if a >= 1.0:
        return BIG
    return math.log(a / (1.0 - a))


def forced_network(
    alpha: float, weights: Sequence[float] | None = None, log_var: float = math.log(0.01)
) -> MLShrinkageNetwork:
    """Network outputting ``α = alpha`` and ``π = weights`` (uniform if None) on any input.

    A weight of exactly 0 gets logit ``−1e4`` (softmax gives an exact 0 in float32).
    """
    torch.manual_seed(0)
    # no anchors: the free head alone must decide the output
    net = MLShrinkageNetwork(
        len(FEATURE_NAMES), len(TARGET_NAMES), hidden_dims=(8, 4), anchors=None
    )
    w = [1.0 / len(TARGET_NAMES)] * len(TARGET_NAMES) if weights is None else list(weights)
    logits = [math.log(v) if v > 0 else -BIG for v in w]
    with torch.no_grad():
        for head in (net.alpha_head, net.weights_head, net.log_var_head):
            head.weight.zero_()
        net.alpha_head.bias.fill_(logit(alpha))
        net.weights_head.bias.copy_(torch.tensor(logits, dtype=torch.float32))
        net.log_var_head.bias.fill_(float(log_var))
    return net.eval()


def random_network(seed: int = 0) -> MLShrinkageNetwork:
    """A small randomly initialised network (its output depends on the features)."""
    torch.manual_seed(seed)
    return MLShrinkageNetwork(len(FEATURE_NAMES), len(TARGET_NAMES), hidden_dims=(16, 8)).eval()


def save(
    net: torch.nn.Module, path: str | Path, feature_names: Sequence[str] = FEATURE_NAMES
) -> str:
    save_model(path, net, feature_names, TARGET_NAMES)
    return str(path)
