"""Tiny shrinkage networks whose output is forced to known values (for tests).

With the head weights set to zero a network's heads output their biases, whatever
the features: ``α = sigmoid(b_α)``, ``π = softmax(b_π)``, ``log_var = b_v``.  A bias
of ``±1e4`` gives ``α`` (or a weight) of exactly 0 or 1 in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.experts import FamilyGate, GatedExpertModel
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


def randomise_norms(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial batch-norm running statistics (a fresh network has mean 0, var 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def gated_model(features: np.ndarray | torch.Tensor) -> GatedExpertModel:
    """A gated family-expert model of the kind the pipeline trains (a two-member ensemble
    as the general model, one expert, a random gate standardised on ``features`` at
    threshold 0.5, so that a varied batch sends some rows to each), whatever model is
    bundled."""
    members = [randomise_norms(random_network(seed=s), s) for s in (11, 12)]
    general = EnsembleModel(members, combine="intensities").eval()
    expert = randomise_norms(random_network(seed=13), 13).eval()
    torch.manual_seed(5)
    gate = FamilyGate(len(FEATURE_NAMES), ["factor", "sp500"], hidden_dims=(16,))
    x = torch.as_tensor(features, dtype=torch.float64)
    with torch.no_grad():
        gate.feature_mean.copy_(x.mean(0))
        gate.feature_scale.copy_(x.std(0).clamp_min(1e-6))
    return GatedExpertModel(general, {"factor": expert}, gate, threshold=0.5).eval()
