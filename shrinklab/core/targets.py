"""Shrinkage targets, the multi-target family and its quadratic form.

The estimator family of :mod:`shrinklab` is

    Σ̂(w) = S + Σ_k w_k (T_k − S),   w ≥ 0,  Σ_k w_k ≤ 1,

with ``S`` the sample covariance (divisor ``n`` after demeaning, as in
scikit-learn and in Ledoit & Wolf's covCor / covMarket code) and the targets,
in the fixed order :data:`TARGET_NAMES`:

``identity``
    scaled identity ``(tr S / p) I`` (Ledoit & Wolf 2004, "A well-conditioned
    estimator for large-dimensional covariance matrices", JMVA 88).
``diagonal``
    ``diag(S)``.
``constant_correlation``
    sample variances with the average sample correlation off the diagonal
    (Ledoit & Wolf 2004, "Honey, I shrunk the sample covariance matrix",
    JPM 30; their ``covCor`` code).
``single_factor``
    single-index model on the equal-weighted market, with the sample variances
    on the diagonal (Ledoit & Wolf 2003, "Improved estimation of the covariance
    matrix of stock returns with an application to portfolio selection", JEF 10;
    their ``covMarket`` code).
``qis``
    quadratic-inverse shrinkage (Ledoit & Wolf 2022, "Quadratic shrinkage for
    large covariance matrices", Bernoulli 28(3)); as in the authors' code it
    uses the divisor ``n − 1`` and handles ``p > n``.

Constant columns (zero variance) keep zero variance and covariance in every
target (see :mod:`shrinklab.core.validation`).

The QIS target lives in :mod:`shrinklab.core.qis` and the batched matrix products
the targets share in :mod:`shrinklab.core.linalg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from shrinklab.core.linalg import row_times, symmetrize
from shrinklab.core.qis import qis_estimate
from shrinklab.core.validation import as_returns, center, unbatch
from shrinklab.core.xp import ops

__all__ = [
    "TARGET_NAMES",
    "shrinkage_targets",
    "stack_targets",
    "combine",
    "quadratic_form",
    "quadratic_form_from_stack",
    "quadratic_form_from_differences",
    "identity_target",
    "diagonal_target",
    "constant_correlation_target",
    "single_factor_target",
    "market_parts",
    "market_parts_from_cov",
    "single_factor_from_parts",
    "target_rayleigh_quotients",
]


TARGET_NAMES: tuple[str, ...] = (
    "identity",
    "diagonal",
    "constant_correlation",
    "single_factor",
    "qis",
)


def _diag_embed_like(S: torch.Tensor) -> torch.Tensor:
    xp = ops(S)
    return xp.diag_embed(xp.diagonal(S))


def _set_diagonal(T: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """Replace the diagonal of the freshly built ``T`` by ``diag`` (in place) and return it."""
    ops(T).set_diagonal_(T, diag)
    return T


def identity_target(S: torch.Tensor) -> torch.Tensor:
    """Scaled identity ``(tr S / p) I`` for ``S (B, p, p)`` (Ledoit & Wolf 2004, JMVA)."""
    xp = ops(S)
    p = S.shape[-1]
    mu = xp.diagonal(S).sum(-1) / p
    eye = xp.eye(p, S)
    return mu[:, None, None] * eye


def diagonal_target(S: torch.Tensor) -> torch.Tensor:
    """Diagonal target ``diag(S)`` for ``S (B, p, p)``."""
    return _diag_embed_like(S)


def constant_correlation_target(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant-correlation target of Ledoit & Wolf (2004, "Honey, I shrunk ...").

    ``F_ij = r̄ √(s_ii s_jj)`` off the diagonal, ``F_ii = s_ii``, where ``r̄`` is
    the average off-diagonal sample correlation (as in the authors' ``covCor``).
    Zero-variance assets are left out of the average (their correlations are
    0/0) and get zero rows/columns.  Returns ``(F, r̄)`` with ``r̄ (B,)``;
    ``r̄ = 0`` when fewer than two assets vary.
    """
    xp = ops(S)
    var = xp.diagonal(S)
    sd = xp.sqrt(xp.clamp_min(var, 0))
    pos = sd > 0
    inv_sd = xp.where(pos, 1.0 / xp.where(pos, sd, xp.ones_like(sd)), xp.zeros_like(sd))
    R = S * inv_sd[:, :, None] * inv_sd[:, None, :]
    k = xp.to(pos.sum(-1), S)
    off_sum = R.sum((-2, -1)) - xp.diagonal(R).sum(-1)
    pairs = k * (k - 1)
    rbar = xp.where(pairs > 0, off_sum / xp.clamp_min(pairs, 1), xp.zeros_like(off_sum))
    F = (rbar[:, None] * sd)[:, :, None] * sd[:, None, :]
    return _set_diagonal(F, var), rbar


def single_factor_target(Xc: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Single-index (market) target of Ledoit & Wolf (2003, JEF; their ``covMarket``).

    The market is the equal-weighted average of the demeaned returns ``Xc``;
    ``F = c cᵀ / var(m)`` off the diagonal with ``c = cov(X, m)``, and the
    sample variances on the diagonal.  If the market has zero variance the
    target is ``diag(S)``.  Returns ``(F, parts)`` where ``parts`` holds the
    market series ``m (B, n)``, ``covmkt (B, p)`` and ``varmkt (B,)``.
    """
    parts = market_parts(Xc)
    return single_factor_from_parts(S, parts), parts


def market_parts(Xc: torch.Tensor) -> dict[str, torch.Tensor]:
    """The equal-weighted market of demeaned ``Xc (B, n, p)`` (Ledoit & Wolf 2003, JEF).

    ``m = Xc 1/p`` ``(B, n)``, ``covmkt = Xcᵀm / n`` ``(B, p)`` and ``varmkt = mᵀm / n``
    ``(B,)``: the pieces of :func:`single_factor_target` that need the returns
    (O(np)); the target itself then costs O(p²) (:func:`single_factor_from_parts`).
    """
    n = Xc.shape[-2]
    m = ops(Xc).mean(Xc, -1)
    covmkt = row_times(m, Xc) / n
    varmkt = (m * m).sum(-1) / n
    return {"m": m, "covmkt": covmkt, "varmkt": varmkt}


def market_parts_from_cov(S: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`market_parts` from ``S = XcᵀXc / n`` ``(B, p, p)`` and the market ``m = Xc 1/p``.

    ``covmkt = Xcᵀm / n = S 1/p`` (the row means of ``S``: O(p²) instead of a pass over
    the returns) and ``varmkt = mᵀm / n``; the same values up to round-off (Ledoit &
    Wolf 2003, JEF).  For a caller that forms ``m`` with other products of ``Xc``.
    """
    n = m.shape[-1]
    return {"m": m, "covmkt": ops(S).mean(S, -1), "varmkt": (m * m).sum(-1) / n}


def single_factor_from_parts(S: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Single-index target (Ledoit & Wolf 2003, JEF) from ``S`` and :func:`market_parts`."""
    xp = ops(S)
    covmkt, varmkt = parts["covmkt"], parts["varmkt"]
    ok = varmkt > 0
    inv_var = xp.where(ok, 1.0 / xp.where(ok, varmkt, xp.ones_like(varmkt)), 0.0)
    F = covmkt[:, :, None] * covmkt[:, None, :] * inv_var[:, None, None]
    var = xp.diagonal(S)
    return _set_diagonal(F, var)


def target_rayleigh_quotients(
    S: torch.Tensor, U: torch.Tensor, rbar: torch.Tensor, parts: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``uᵢᵀ T_k uᵢ`` ``(B, 4, p)`` for the identity, diagonal, constant-correlation and
    single-factor targets of ``S (B, p, p)`` and the columns ``uᵢ`` of ``U (B, p, p)``.

    Each of these targets is a diagonal plus at most rank one, so this costs ``O(p²)``
    (one pass over ``U∘U`` and two vector products) instead of ``diag(UᵀT_kU)`` in
    ``O(p³)``: identity ``tr S / p``; diagonal ``Σ_j s_jj u_ji²``; constant correlation
    (Ledoit & Wolf 2004) ``r̄ (σᵀuᵢ)² + Σ_j (s_jj − r̄ σ_j²) u_ji²``; single factor
    (Ledoit & Wolf 2003) ``(cᵀuᵢ)²/v + Σ_j (s_jj − c_j²/v) u_ji²`` with the market
    parts ``c = covmkt``, ``v = varmkt`` (:func:`market_parts`; ``1/v = 0`` if ``v = 0``).
    ``rbar`` is :func:`constant_correlation_target`'s ``r̄``.
    """
    p = S.shape[-1]
    var = torch.diagonal(S, dim1=-2, dim2=-1)
    sd = var.clamp_min(0).sqrt()
    c, v = parts["covmkt"], parts["varmkt"]
    ok = v > 0
    inv_v = torch.where(ok, 1.0 / torch.where(ok, v, torch.ones_like(v)), 0.0)
    U2 = U * U
    rb, iv = rbar.unsqueeze(-1), inv_v.unsqueeze(-1)
    diags = torch.stack([var, var - rb * sd * sd, var - iv * c * c], dim=1)  # (B, 3, p)
    quad = diags @ U2  # (B, 3, p): Σ_j diag_j u_ji²
    proj = torch.stack([sd, c], dim=1) @ U  # (B, 2, p): σᵀuᵢ, cᵀuᵢ
    mu = (var.sum(-1, keepdim=True) / p).expand(-1, p)
    return torch.stack(
        [mu, quad[:, 0], quad[:, 1] + rb * proj[:, 0] ** 2, quad[:, 2] + iv * proj[:, 1] ** 2],
        dim=1,
    )


_BUILDERS = {
    "identity": lambda Xc, S: identity_target(S),
    "diagonal": lambda Xc, S: diagonal_target(S),
    "constant_correlation": lambda Xc, S: constant_correlation_target(S)[0],
    "single_factor": lambda Xc, S: single_factor_target(Xc, S)[0],
    "qis": lambda Xc, S: qis_estimate(Xc, S),
}


def shrinkage_targets(X: Any, names: Sequence[str] = TARGET_NAMES) -> torch.Tensor:
    """Stack the shrinkage targets of returns ``X``: ``(B, K, p, p)`` (or ``(K, p, p)``).

    ``X`` is ``(n, p)`` or ``(B, n, p)`` (numpy, torch or pandas); targets are in
    the order of ``names`` (default :data:`TARGET_NAMES`, K = 5), computed in
    float64 on the device of ``X``.  See the module docstring for definitions.
    """
    names = tuple(names)
    unknown = [k for k in names if k not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown target name(s) {unknown}; choose from {TARGET_NAMES}")
    if not names:
        raise ValueError("names must contain at least one target")
    Xt, batched = as_returns(X)
    Xc, S = center(Xt)
    return unbatch(stack_targets(Xc, S, names), batched)


def stack_targets(
    Xc: torch.Tensor, S: torch.Tensor, names: Sequence[str] = TARGET_NAMES
) -> torch.Tensor:
    """Targets ``(B, K, p, p)`` from already validated ``Xc, S`` (see :func:`shrinklab.core.validation.center`)."""
    return torch.stack([_BUILDERS[k](Xc, S) for k in names], dim=1)


def combine(S: torch.Tensor, T: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The family member ``Σ̂(w) = S + Σ_k w_k (T_k − S)``.

    Shapes: ``S (B, p, p)``, ``T (B, K, p, p)``, ``w (B, K)`` -> ``(B, p, p)``;
    or unbatched ``(p, p)``, ``(K, p, p)``, ``(K,)`` -> ``(p, p)``.  Differentiable
    in ``w`` (used by training losses).
    """
    if S.ndim == 2:
        return combine(S.unsqueeze(0), T.unsqueeze(0), w.unsqueeze(0))[0]
    if S.ndim != 3 or T.ndim != 4 or w.ndim != 2:
        raise ValueError(
            "combine expects S (B,p,p), T (B,K,p,p), w (B,K); got "
            f"{tuple(S.shape)}, {tuple(T.shape)}, {tuple(w.shape)}"
        )
    if T.shape[:2] != w.shape or T.shape[0] != S.shape[0] or T.shape[-2:] != S.shape[-2:]:
        raise ValueError(
            f"inconsistent shapes S {tuple(S.shape)}, T {tuple(T.shape)}, w {tuple(w.shape)}"
        )
    w = w.to(S.dtype)
    return S + torch.einsum("bk,bkij->bij", w, T - S.unsqueeze(1))


def quadratic_form(
    S: torch.Tensor, T: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frobenius loss of the family as a quadratic in ``w``.

    With ``A_k = vec(T_k − S)`` and ``b = vec(Σ − S)``: ``G = AᵀA (B, K, K)``,
    ``c = Aᵀb (B, K)``, ``d = bᵀb (B,)`` so that
    ``‖Σ̂(w) − Σ‖²_F = wᵀGw − 2cᵀw + d`` (``d`` is the loss of ``S``).
    Unbatched input ``(p,p), (K,p,p), (p,p)`` gives ``(K,K), (K,), ()``.
    """
    if S.ndim == 2:
        G, c, d = quadratic_form(S.unsqueeze(0), T.unsqueeze(0), sigma.unsqueeze(0))
        return G[0], c[0], d[0]
    if S.ndim != 3 or T.ndim != 4 or sigma.shape != S.shape or T.shape[0] != S.shape[0]:
        raise ValueError(
            "quadratic_form expects S (B,p,p), T (B,K,p,p), sigma (B,p,p); got "
            f"{tuple(S.shape)}, {tuple(T.shape)}, {tuple(sigma.shape)}"
        )
    return quadratic_form_from_stack(S, torch.cat([T, sigma.to(S.dtype).unsqueeze(1)], dim=1))


def quadratic_form_from_stack(
    S: torch.Tensor, stack: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`quadratic_form` from ``stack = [T_1, …, T_K, Σ]`` ``(B, K + 1, p, p)``.

    ``stack`` is overwritten with ``stack − S`` (no temporary of its size); then one
    ``(K + 1) × (K + 1)`` Gram matrix of the flattened differences holds ``G``
    (its leading block), ``c`` (its last column) and ``d`` (its corner).
    """
    return quadratic_form_from_differences(stack.sub_(S.unsqueeze(1)))


def quadratic_form_from_differences(
    D: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``G, c, d`` from ``D = [T_1 − S, …, T_K − S, Σ − S]`` ``(B, K + 1, p, p)`` (one Gram)."""
    B, K1 = D.shape[:2]
    M = D.reshape(B, K1, -1)
    full = symmetrize(M @ M.transpose(-1, -2))
    K = K1 - 1
    return full[:, :K, :K].contiguous(), full[:, :K, K].contiguous(), full[:, K, K].contiguous()
