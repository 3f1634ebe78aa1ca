"""training.objective."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shrinklab.core.metrics import quadratic_loss
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data.dataset import classical_intensities
from shrinklab.data.synthetic import EDGE_FAMILIES
from shrinklab.training.config import LOSS_NORMALISERS

__all__ = [
    "best_classical_loss",
    "edge_family_mask",
    "loss_normaliser",
]


def tensor_field(ds: Any, name: str, required: bool = True) -> torch.Tensor | None:
    value = getattr(ds, name, None)
    if value is None:
        if required:
            raise ValueError(f"training set has no field {name!r}")
        return None
    t = value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))
    return t


def loss_normaliser(
    d: torch.Tensor,
    loss_fsopt: torch.Tensor | None,
    mode: str = "sample",
    floor: float = 0.01,
    loss_best: torch.Tensor | None = None,
    best_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ν, κ)`` so that the training loss of a sample is ``(wᵀGw − 2cᵀw + κ)/ν``.

    ``"sample"``: ``ν = d``, ``κ = d`` (the loss normalised by the sample covariance's).
    ``"fsopt_gap"``: ``ν = max(d − L_FSOPT, floor·d)``, ``κ = d − L_FSOPT``, so the loss
    is ``(L(w) − L_FSOPT)/(d − L_FSOPT) = 1 − PRIAL/100`` of the sample (negative when
    the multi-target estimate beats FSOPT); float64.
    ``"sample_and_best_classical"``: ``ν = 1/(1/d + λ/max(L_best, floor·d))``, ``κ = d``
    with ``λ = best_weight``, so the loss is ``L/d + λ·L/L_best`` (``L_best``: the best
    classical estimator's loss, :func:`best_classical_loss`).
    """
    d = d.double()
    if mode == "sample":
        return d, d
    if mode == "sample_and_best_classical":
        if loss_best is None:
            raise ValueError(
                "loss_normaliser='sample_and_best_classical' needs the best classical loss "
                "(a training set with 'intensities', see best_classical_loss)"
            )
        best = torch.maximum(loss_best.double(), floor * d)
        return 1.0 / (1.0 / d + best_weight / best), d
    if mode != "fsopt_gap":
        raise ValueError(f"loss_normaliser must be one of {LOSS_NORMALISERS}, got {mode!r}")
    if loss_fsopt is None:
        raise ValueError("loss_normaliser='fsopt_gap' needs the training set field 'loss_fsopt'")
    gap = d - loss_fsopt.double()
    if bool((gap < -1e-9 * d).any()):
        raise ValueError("loss_fsopt exceeds d = ‖S − Σ‖² for some samples (FSOPT beats S)")
    return torch.maximum(gap, floor * d), gap.clamp_min(0.0)


def edge_family_mask(ds: Any) -> torch.Tensor:
    """``(N,)`` bool: which worlds of a training set belong to an edge-case family
    (:data:`shrinklab.data.synthetic.EDGE_FAMILIES`), from its ``family`` codes and
    ``family_names``."""

    if not hasattr(ds, "family") or not hasattr(ds, "family_names"):
        raise ValueError(
            "edge_weight != 1 needs a training set with world families "
            "(fields 'family' and 'family_names')"
        )
    edge = [i for i, name in enumerate(ds.family_names) if name in EDGE_FAMILIES]
    return torch.isin(torch.as_tensor(ds.family), torch.tensor(edge, dtype=torch.int64))


def best_classical_loss(ds: Any) -> torch.Tensor:
    """Per-world Frobenius loss ``(N,)`` of the best of the classical estimators
    (Ledoit–Wolf, OAS, constant correlation, single factor, QIS) on a training set
    (:func:`shrinklab.data.dataset.classical_intensities`), float64."""

    if not all(getattr(ds, f, None) is not None for f in ("intensities", "G", "c", "d")):
        raise ValueError(
            "the best classical loss needs a TrainingSet or a set with its fields "
            "'intensities', 'G', 'c', 'd'"
        )
    names = tuple(getattr(ds, "target_names", TARGET_NAMES))
    if tuple(ds.c.shape)[-1] != len(names):
        raise ValueError(
            f"the best classical loss needs all {len(names)} targets {names}, got "
            f"K = {tuple(ds.c.shape)[-1]}"
        )
    w_all = classical_intensities(ds).values()
    losses = [quadratic_loss(w, ds.G, ds.c, ds.d) for w in w_all]
    return torch.stack(losses, 1).amin(1)
