"""Exact simplex-constrained quadratic programs: the multi-target oracle weights and
multi-target shrinkage intensities (Lancewicki & Aladjem 2014) of
:mod:`shrinklab.core.estimators`, for torch tensors or NumPy arrays
(:mod:`shrinklab.core.xp`)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from shrinklab.core.xp import ops

__all__ = [
    "solve_simplex_qp",
    "solve_simplex_qp_array",
    "multi_target_weights",
    "multi_target_weights_array",
]


_ACTIVE_SETS: dict[tuple[int, str, str], tuple] = {}


def _active_sets(K: int, like: Any) -> tuple:
    """The constant parts of the KKT systems of :func:`solve_simplex_qp_array`, built once
    per ``(K, device, dtype)`` in ``like``'s kind of array: ``(free (P, K), both (P, K, K),
    M0 (P, K+1, K+1), r0 (P, K+1))`` for all ``P = 2^K·2 − 1`` (free set, sum constraint
    active) patterns; ``both`` marks the entries whose row and column are free, ``M0`` and
    ``r0`` are the systems and right-hand sides without ``G`` and ``c``."""
    xp = ops(like)
    key = (K, "numpy" if xp.name == "numpy" else str(like.device), str(like.dtype))
    if key not in _ACTIVE_SETS:
        rows = [
            list(bits) + [act]
            for bits in itertools.product((0, 1), repeat=K)
            for act in (0, 1)
            if not (act == 1 and sum(bits) == 0)
        ]
        with torch.inference_mode(False):  # normal tensors even if built in inference mode
            pat = xp.tensor(rows, like)
            free, act = pat[:, :K], pat[:, K]
            fr = free[:, :, None]
            M0 = xp.zeros((len(rows), K + 1, K + 1), like)
            M0[:, :K, :K] = (1 - fr) * xp.eye(K, like)
            M0[:, :K, K] = free * act[:, None]
            M0[:, K, :K] = free * act[:, None]
            M0[:, K, K] = 1 - act
            r0 = xp.zeros((len(rows), K + 1), like)
            r0[:, K] = act
            _ACTIVE_SETS[key] = (free, fr * free[:, None, :], M0, r0)
    return _ACTIVE_SETS[key]


def _as_float(G: Any, c: Any, keep_numpy: bool) -> tuple[Any, Any]:
    """``G`` as a floating array (float64 unless already floating) and ``c`` in its dtype:
    NumPy arrays stay NumPy with ``keep_numpy``, anything else becomes a tensor."""
    if keep_numpy and isinstance(G, np.ndarray):
        Gt = G if np.issubdtype(G.dtype, np.floating) else G.astype(np.float64)
        return Gt, np.asarray(c, dtype=Gt.dtype)
    Gt = torch.as_tensor(G)
    Gt = Gt.to(torch.float64) if not Gt.is_floating_point() else Gt
    return Gt, torch.as_tensor(c, dtype=Gt.dtype, device=Gt.device)


def solve_simplex_qp(G: Any, c: Any) -> torch.Tensor:
    """Exact batched solution of ``min_w wᵀGw − 2cᵀw`` s.t. ``w ≥ 0``, ``Σw ≤ 1``.

    ``G (B, K, K)`` symmetric positive semi-definite, ``c (B, K)`` (or unbatched
    ``(K, K)``, ``(K,)``).  Active-set enumeration: for each of the
    ``2^K · 2 − 1`` patterns (free variables × sum constraint active or not) the
    KKT system is solved in one batched solve (pseudo-inverse for singular
    systems); among feasible candidates the one with least objective is
    returned.  The optimum always has a support on which its KKT system is
    non-singular, so the result is the exact global minimiser (up to round-off;
    ties among equal-objective minimisers of a singular ``G`` are broken by
    the enumeration order).  Intended for small K (cost ``O(2^K K³)`` per problem).
    Returns a tensor (:func:`solve_simplex_qp_array` keeps NumPy input NumPy).
    """
    return solve_simplex_qp_array(*_as_float(G, c, keep_numpy=False))


def solve_simplex_qp_array(G: Any, c: Any) -> Any:
    """:func:`solve_simplex_qp` in the input's kind of array: float64 NumPy arrays in,
    NumPy out (:mod:`shrinklab.core.xp`; the estimator's single fit), else tensors."""
    Gt, ct = _as_float(G, c, keep_numpy=True)
    xp = ops(Gt)
    if Gt.ndim == 2:
        return solve_simplex_qp_array(Gt[None], ct[None])[0]
    if Gt.ndim != 3 or Gt.shape[-1] != Gt.shape[-2] or ct.shape != Gt.shape[:2]:
        raise ValueError(
            f"solve_simplex_qp expects G (B,K,K) and c (B,K); got {tuple(Gt.shape)}, {tuple(ct.shape)}"
        )
    if not (bool(xp.isfinite(Gt).all()) and bool(xp.isfinite(ct).all())):
        raise ValueError("solve_simplex_qp: G and c must be finite")
    B, K = ct.shape
    # Scale to unit trace for conditioning (does not change the minimiser).
    scale = abs(xp.diagonal(Gt).sum(-1)) / K
    scale = xp.where(scale > 0, scale, xp.ones_like(scale))
    Gs = 0.5 * (Gt + xp.mT(Gt)) / scale[:, None, None]
    cs = ct / scale[:, None]
    free, both, M0, r0 = _active_sets(K, Gt)
    P = free.shape[0]
    # KKT rows: i free -> (G w)_i + μ = c_i ; i fixed -> w_i = 0 ;
    # sum active -> Σ_{free} w = 1 ; inactive -> μ = 0. The constant entries come from
    # M0, r0; adding G where row and column are free gives the same floating-point values
    # as writing every entry out (the other entries get an exact ±0 added).
    M = xp.filled((B, P, K + 1, K + 1), M0, Gt)
    M[:, :, :K, :K] += both * Gs[:, None]
    rhs = xp.filled((B, P, K + 1), r0, Gt)
    rhs[:, :, :K] = free[None] * cs[:, None, :]
    sol, bad = xp.solve_ex(M, rhs[..., None])
    sol = sol[..., 0]
    bad = bad | ~xp.isfinite(sol).all(-1)
    if bool(bad.any()):
        sol[bad] = (xp.pinv(M[bad]) @ rhs[bad][..., None])[..., 0]
    w = sol[..., :K] * free[None]  # (B, P, K)
    tol = 1e-9
    feasible = (w >= -tol).all(-1) & (w.sum(-1) <= 1 + tol)
    obj = xp.quad(w, Gs) - 2 * (w * cs[:, None, :]).sum(-1)
    obj = xp.where(feasible, obj, xp.full_like(obj, float("inf")))
    best = obj.argmin(-1)
    wb = xp.clamp_min(w[xp.arange(B, Gt), best], 0)
    total = xp.sum(wb, -1, keepdim=True)
    return xp.where(total > 1, wb / total, wb)


def multi_target_weights(G: Any, rho: Any, use: Any) -> torch.Tensor:
    """Intensities ``w (B, K)`` of multi-target shrinkage from single-target estimates.

    Multi-target shrinkage [Lancewicki & Aladjem, "Multi-target shrinkage estimation
    for covariance matrices", IEEE Trans. Signal Processing 62(24), 2014] minimises
    the Frobenius loss ``wᵀGw − 2cᵀw + ‖S − Σ‖²`` of the family
    ``S + Σ_k w_k (T_k − S)`` with ``G_kl = ⟨T_k − S, T_l − S⟩`` (known from the
    sample) and an *estimate* of the unknown ``c_k = ⟨T_k − S, Σ − S⟩``.  Here the
    estimate comes from each target's own single-target intensity: the
    single-target oracle intensity is ``c_k / G_kk``, so ``ĉ_k = ρ̂_k G_kk`` with
    ``ρ̂_k`` e.g. the Ledoit–Wolf intensity towards ``T_k``, or ``ρ̂ = 1`` for a
    nonlinear estimator (QIS) used as a target, i.e. trusting it along its own
    direction.  Then ``w = argmin wᵀGw − 2ĉᵀw`` over ``w ≥ 0, Σ_k w_k ≤ 1``
    (:func:`solve_simplex_qp`): the exact geometry ``G`` decides how the targets
    combine, which no single-target rule sees (two targets close to each other
    share the weight; one far from ``S`` in a direction the others explain gets none).

    ``G (B, K, K)`` symmetric positive semi-definite; ``rho (B, K)`` finite where
    used; ``use`` ``(K,)`` booleans, the targets that take part (the others get
    weight 0 and their ``rho`` is ignored).  Scale-invariant: ``G → s²G`` leaves
    ``w`` unchanged. Returns a tensor (:func:`multi_target_weights_array` keeps NumPy
    input NumPy).
    """
    return multi_target_weights_array(*_as_float(G, rho, keep_numpy=False), use)


def multi_target_weights_array(G: Any, rho: Any, use: Any) -> Any:
    """:func:`multi_target_weights` in the input's kind of array (NumPy in, NumPy out)."""
    Gt, r = _as_float(G, rho, keep_numpy=True)
    xp = ops(Gt)
    if xp.name == "numpy":
        mask = np.asarray(use, dtype=bool).reshape(-1)
    else:
        mask = torch.as_tensor(use, dtype=torch.bool, device=Gt.device).reshape(-1)
    if Gt.ndim != 3 or Gt.shape[-1] != Gt.shape[-2] or r.shape != Gt.shape[:2]:
        raise ValueError(
            "multi_target_weights expects G (B,K,K) and rho (B,K); got "
            f"{tuple(Gt.shape)}, {tuple(r.shape)}"
        )
    if mask.shape[0] != Gt.shape[-1] or not bool(mask.any()):
        raise ValueError(f"use must have {Gt.shape[-1]} booleans, at least one True")
    idx = np.flatnonzero(mask) if xp.name == "numpy" else mask.nonzero().squeeze(-1)
    Gu = Gt[:, idx][:, :, idx]
    cu = r[:, idx] * xp.diagonal(Gu)
    w = xp.zeros_like(r)
    w[:, idx] = solve_simplex_qp_array(Gu, cu)
    return w
