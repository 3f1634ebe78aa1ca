"""Example worlds for the report: the replications to show, and their true, sample,
classical, learned and oracle matrices side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from shrinklab.core import estimators as classical_estimators
from shrinklab.core.features import extract_features
from shrinklab.core.targets import combine, shrinkage_targets
from shrinklab.core.validation import center
from shrinklab.core.volatility_timing import finish_covariance
from shrinklab.data.synthetic import make_scenario
from shrinklab.evaluation.feasibility import constant_oracle
from shrinklab.evaluation.scenarios import (
    ESTIMATORS,
    FSOPT,
    LEARNED,
    ORACLE,
    model_target_names,
    predict_outputs,
)

__all__ = ["example_matrices", "select_examples"]


def select_examples(
    results: Sequence[Mapping[str, Any]], names: Sequence[str] = (), max_n: int = 3
) -> list[Mapping[str, Any]]:
    """The scenarios to draw spectra and heat maps for: those named in ``names`` (in
    that order; an unknown name is a ``ValueError``), or, when ``names`` is empty,
    the first scenario of each family, at most ``max_n``."""
    by_name = {r["scenario"]: r for r in results}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"scenarios {unknown} are not in the grid ({list(by_name)})")
        return [by_name[n] for n in names]
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    first: dict[str, Mapping[str, Any]] = {}
    for r in results:
        first.setdefault(r["family"], r)
    return list(first.values())[:max_n]


def example_matrices(
    result: Mapping[str, Any],
    model: Any = None,
    estimators: Sequence[str] | None = None,
    rep: int = 0,
) -> dict[str, np.ndarray]:
    """The matrices of replication ``rep`` of an evaluated scenario, for spectra and
    heat maps: ``{"sigma": Σ, "sample": S, <estimator>: Σ̂, ...}`` as ``(p, p)`` arrays.

    The replication is regenerated from the scenario's spec and seed (the draws of
    :func:`shrinklab.data.synthetic.make_scenario` do not depend on ``n_reps``), so the
    matrices are those :func:`evaluate_scenario` scored.  ``estimators`` may name
    any of :data:`ESTIMATORS`, ``"learned"`` (needs ``model``), ``"oracle"``
    (``w*`` of that replication), ``"constant_oracle"`` (:func:`constant_oracle`)
    and ``"fsopt"``; default: Ledoit–Wolf, QIS, the learned model if given, the
    oracle.
    """
    rep = int(rep)
    if not 0 <= rep < int(result["n_reps"]):
        raise ValueError(f"rep must be in [0, {result['n_reps']}); got {rep}")
    if estimators is None:
        estimators = ["ledoit_wolf", "qis", *([LEARNED] if model is not None else []), ORACLE]
    known = {*ESTIMATORS, LEARNED, ORACLE, FSOPT, "constant_oracle"}
    unknown = [e for e in estimators if e not in known]
    if unknown:
        raise ValueError(f"unknown estimators {unknown}; choose from {sorted(known)}")
    if LEARNED in estimators and model is None:
        raise ValueError("'learned' needs a model")
    spec = {k: v for k, v in dict(result["spec"]).items() if k != "name"}
    sigma, X = make_scenario(spec, rep + 1, int(result["seed"]))
    sigma, X = sigma[rep : rep + 1], X[rep : rep + 1]
    _, S = center(X)
    T = shrinkage_targets(X)
    out = {"sigma": sigma[0].numpy(), "sample": S[0].numpy()}
    for e in estimators:
        if e in ESTIMATORS:
            M = ESTIMATORS[e](X)
        elif e == FSOPT:
            M = classical_estimators.fsopt(X, sigma)
        else:
            if e == LEARNED:
                model_target_names(model)
                alpha, weights, _ = predict_outputs(model, extract_features(X))
                w = alpha[:, None] * weights
            elif e == ORACLE:
                w = torch.as_tensor(result["oracle_weights"][rep : rep + 1], dtype=torch.float64)
            else:
                w = torch.as_tensor(constant_oracle(result)["weights"])[None]
            M = combine(S, T, w.to(S.dtype))
            if e == LEARNED:
                M = finish_covariance(model, M, X)
        out[e] = M[0].numpy()
    return out
