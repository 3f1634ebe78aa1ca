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
target (see :mod:`shrinklab._validation`).

Over 600 lines on purpose: the five targets share private batched kernels (Gram,
market moments, QIS eigenvalues) that the training-set builder calls directly; split,
those kernels would have to become public across modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from shrinklab.core.validation import as_returns, center, unbatch
from shrinklab.core.xp import ops

__all__ = [
    "TARGET_NAMES",
    "shrinkage_targets",
    "stack_targets",
    "combine",
    "quadratic_form",
    "quadratic_form_from_stack",
    "sample_cov_from_demeaned",
    "row_times",
    "matvecs",
    "identity_target",
    "diagonal_target",
    "constant_correlation_target",
    "single_factor_target",
    "market_parts",
    "market_parts_from_cov",
    "single_factor_from_parts",
    "gram",
    "qis_estimate",
    "qis_from_eig",
    "qis_from_gram_eigh",
    "qis_eigenvalues",
    "target_rayleigh_quotients",
    "qis_from_returns",
    "qis_from_cov",
    "qis_from_demeaned",
]


TARGET_NAMES: tuple[str, ...] = (
    "identity",
    "diagonal",
    "constant_correlation",
    "single_factor",
    "qis",
)


# Elements of one (chunk, m, m) temporary in QIS (~64 MB in float64).
_QIS_CHUNK_ELEMENTS = 1 << 23


# Elements of p × (p + n) per QIS chunk of samples (8 MB in float64): measured fastest
# on a 2-core CPU with 1 MB L2 per core (cache-resident temporaries, no page faults).
_QIS_STEP_ELEMENTS = 1 << 20


# From this p on, symmetric products AᵀA are formed block-lower-triangular (fewer flops).
_BLOCK_GRAM_MIN_P = 256


# --------------------------------------------------------------------------- helpers
def symmetrize(S: torch.Tensor) -> torch.Tensor:
    """``(S + Sᵀ) / 2`` over the last two axes (torch or NumPy)."""
    return 0.5 * (S + ops(S).mT(S))


def sample_cov_from_demeaned(Xc: torch.Tensor, divisor: int | None = None) -> torch.Tensor:
    """``XcᵀXc / divisor`` for demeaned ``Xc (B, n, p)`` (divisor ``n`` by default), symmetrised."""
    n = Xc.shape[-2]
    return symmetrize(Xc.transpose(-1, -2) @ Xc / (n if divisor is None else divisor))


def gram(A: torch.Tensor) -> torch.Tensor:
    """``AᵀA`` ``(B, p, p)`` for ``A (B, n, p)``, exactly symmetric.

    On CPU (float32/float64, no autograd) this is one BLAS ``syrk`` per matrix
    (numpy's ``matmul`` recognises ``aᵀa`` and calls ``syrk``, then mirrors the
    triangle): half the flops of the GEMM ``A.mT @ A``, measured 1.45 ms
    against 2.5 ms per ``1350 × 200`` matrix on the project's 2-core AMD CPU.
    Each matrix is computed on its own, so the result does not depend on the
    batch it is in.  Elsewhere (other devices, dtypes, or when a gradient is
    needed) it is ``A.mT @ A``.
    """
    if isinstance(A, np.ndarray):
        return np.matmul(A.swapaxes(-1, -2), A)
    if (
        A.device.type != "cpu"
        or A.dtype not in (torch.float32, torch.float64)
        or (A.requires_grad and torch.is_grad_enabled())
    ):
        return A.transpose(-1, -2) @ A
    a = A.detach().contiguous().numpy()
    return torch.from_numpy(np.matmul(a.swapaxes(-1, -2), a))


def _block_edges(p: int) -> list[int]:
    nb = 4
    return [round(i * p / nb) for i in range(nb + 1)]


def _gram_lower(A: torch.Tensor) -> torch.Tensor:
    """``AᵀA`` for ``A (B, n, p)`` with only its lower triangle guaranteed (what ``eigh`` reads).

    For ``p >= _BLOCK_GRAM_MIN_P`` on CPU the lower block triangle is formed by
    four block rows (5/8 of the flops of one GEMM); the strictly upper blocks are
    left uninitialised.  Otherwise one GEMM.
    """
    p = A.shape[-1]
    if p < _BLOCK_GRAM_MIN_P or A.device.type != "cpu":
        return A.transpose(-1, -2) @ A
    out = torch.empty(A.shape[0], p, p, dtype=A.dtype, device=A.device)
    e = _block_edges(p)
    for a, b in zip(e[:-1], e[1:], strict=True):
        torch.matmul(A[:, :, a:b].transpose(-1, -2), A[:, :, :b], out=out[:, a:b, :b])
    return out


def _outer_sym(W: torch.Tensor, V: torch.Tensor | None = None, out=None) -> torch.Tensor:
    """``W Vᵀ`` for ``W, V (B, p, k)`` known to be symmetric (``V = W`` by default).

    ``W Wᵀ`` on CPU is :func:`gram` of ``Wᵀ`` (one ``syrk``, exactly symmetric).
    For ``p >= _BLOCK_GRAM_MIN_P`` on CPU only the lower block triangle is
    multiplied and mirrored (exactly symmetric result, 5/8 of the flops).
    """
    if isinstance(W, np.ndarray):
        V = W if V is None else V
        return np.matmul(W, np.swapaxes(V, -1, -2), out=out)
    if V is None and W.device.type == "cpu":  # one syrk per matrix (see gram)
        res = gram(W.transpose(-1, -2))
        return res if out is None else out.copy_(res)
    V = W if V is None else V
    p = W.shape[-2]
    if p < _BLOCK_GRAM_MIN_P or W.device.type != "cpu":
        return torch.matmul(W, V.transpose(-1, -2), out=out)
    if out is None:
        out = torch.empty(W.shape[0], p, p, dtype=W.dtype, device=W.device)
    e = _block_edges(p)
    for a, b in zip(e[:-1], e[1:], strict=True):
        torch.matmul(W[:, a:b], V[:, :b].transpose(-1, -2), out=out[:, a:b, :b])
    for a, b in zip(e[:-1], e[1:], strict=True):
        D = out[:, a:b, a:b]
        D.copy_(symmetrize(D))
        if b < p:
            out[:, a:b, b:] = out[:, b:, a:b].transpose(-1, -2)
    return out


def _diag_embed_like(S: torch.Tensor) -> torch.Tensor:
    xp = ops(S)
    return xp.diag_embed(xp.diagonal(S))


def _set_diagonal(T: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """Replace the diagonal of the freshly built ``T`` by ``diag`` (in place) and return it."""
    ops(T).set_diagonal_(T, diag)
    return T


def row_times(v: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``vᵀA`` for ``v (B, r)``, ``A (B, r, c)`` -> ``(B, c)``.

    Products with one vector are written as a row vector times a matrix: on CPU
    a ``(1, r) @ (r, c)`` batched GEMM is ~6× faster than ``(c, r) @ (r, 1)``.
    For ``A v`` use ``row_times(v, A.mT)``; for symmetric ``A``, ``row_times(v, A)``.
    """
    return (v[..., None, :] @ A)[..., 0, :]


def matvecs(A: torch.Tensor, *vs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(A v₁, …, A v_k)`` for ``A (B, r, c)`` and vectors ``vᵢ (B, c)``, each ``(B, r)``.

    On CPU one BLAS GEMM ``A [v₁ … v_k]`` per matrix through numpy (OpenBLAS):
    ``A`` is read once, and on the project's AMD CPU this skinny product is several
    times faster than torch's (MKL) ``row_times`` per vector (measured 0.027 ms
    against 2 × 0.053 ms for two vectors at ``r = 1239``, ``c = 200``).  Elsewhere,
    or when a gradient is needed, :func:`row_times` per vector.
    """
    if isinstance(A, np.ndarray):
        out = A @ np.stack(vs, axis=-1)
        return tuple(out[..., i] for i in range(len(vs)))
    if (
        A.device.type != "cpu"
        or A.dtype not in (torch.float32, torch.float64)
        or (torch.is_grad_enabled() and (A.requires_grad or any(v.requires_grad for v in vs)))
    ):
        return tuple(row_times(v, A.transpose(-1, -2)) for v in vs)
    V = torch.stack(vs, dim=-1).to(A.dtype).numpy()  # (B, c, k)
    out = torch.from_numpy(np.matmul(A.detach().numpy(), V))  # (B, r, k)
    return tuple(out[..., i] for i in range(len(vs)))


# --------------------------------------------------------------------------- targets
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


def _qis_delta(inv: torch.Tensor, p: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """QIS shrunk eigenvalues (before trace rescaling) from inverse non-null eigenvalues.

    ``inv (B, m)`` ascending-eigenvalue order, ``m = min(p, n)``.  Returns
    ``(delta (B, m), delta0 (B, 1) or None)``; ``delta0`` is the common value
    of the ``p − n`` null eigenvalues when ``p > n``.
    """
    xp = ops(inv)
    B, m = inv.shape
    c = p / n
    h = (min(c**2, 1.0 / c**2) ** 0.35) / p**0.35
    # theta_j = mean_i t_i (t_i - t_j) r_ij,  Htheta_j = h mean_i t_i^2 r_ij,
    # r_ij = 1 / ((t_i - t_j)^2 + h^2 t_i^2); both sums as one batched matmul.
    sums = xp.empty((B, 2, m), inv)
    step = max(1, _QIS_CHUNK_ELEMENTS // (m * m))
    for s in range(0, B, step):
        a = inv[s : s + step]
        ai = a[..., None]
        d = ai - a[..., None, :]
        r = xp.reciprocal_(xp.addcmul((h * h) * xp.square(ai), d, d))
        xp.matmul_out(xp.stack([a * a, a], dim=-2), r, sums[s : s + step])  # (b, 2, m)
    theta = (sums[:, 0] - inv * sums[:, 1]) / m
    htheta = h * sums[:, 0] / m
    atheta2 = theta**2 + htheta**2
    if p <= n:
        return 1.0 / (
            (1 - c) ** 2 * inv + 2 * c * (1 - c) * inv * theta + c**2 * inv * atheta2
        ), None
    return 1.0 / (inv * atheta2), 1.0 / ((c - 1) * xp.mean(inv, -1, keepdim=True))


def _inverse_nonnull(nonnull: torch.Tensor, p: int) -> torch.Tensor:
    # Guard against exactly zero "non-null" eigenvalues (collinear assets): the authors'
    # code would divide by zero; a floor at the numerical rank tolerance keeps it finite
    # and never binds for full-rank data.
    xp = ops(nonnull)
    eps, tiny = xp.finfo(nonnull)
    floor = xp.amax(nonnull, -1, keepdim=True) * (p * eps)
    floor = xp.clamp_min(floor, tiny)
    return 1.0 / xp.maximum(nonnull, floor)


def _qis_from_spectrum(
    lam: torch.Tensor, U: torch.Tensor, n: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """QIS from all ascending eigenpairs ``lam (B, p)``, ``U (B, p, p)`` of the divisor-``n`` covariance.

    No constant columns.  For ``p > n`` only the top ``m = n`` eigenpairs enter
    (the null eigenvalues, ~0, only through the trace).  Writes into
    ``out (B, p, p)`` when given.
    """
    p = U.shape[-2]
    m = min(p, n)
    delta, delta0 = _qis_scaled(lam, p, n)
    if delta0 is None:
        # U diag(δ) Uᵀ = W Wᵀ with W = U diag(√δ) (δ > 0): one GEMM, symmetric to round-off.
        return _outer_sym(U * ops(U).sqrt(delta)[..., None, :], out=out)
    return _assemble_scaled(U[:, :, U.shape[-1] - m :], delta, delta0, out)


def _qis_scaled(lam: torch.Tensor, p: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """QIS eigenvalues after trace rescaling from ascending ``lam (B, p)`` (divisor ``n``).

    ``(δ (B, m), None)`` for ``p <= n``; ``(δ (B, m), δ0 (B, 1))`` for ``p > n`` (``δ`` for
    the top ``m = n`` eigenvectors, ``δ0`` for the ``p − n`` null ones).
    """
    xp = ops(lam)
    m = min(p, n)
    lam = xp.clamp_min(lam, 0)
    inv = _inverse_nonnull(lam[:, lam.shape[-1] - m :], p)
    delta, delta0 = _qis_delta(inv, p, n)
    total = xp.sum(lam, -1, keepdim=True)  # = tr S (for p > n the null eigenvalues are ~0)
    if delta0 is None:
        return delta * (total / xp.sum(delta, -1, keepdim=True)), None
    return _singular_scale(delta, delta0, total, p, n)


def _singular_scale(delta, delta0, total, p, n) -> tuple[torch.Tensor, torch.Tensor]:
    """``(δ, δ0)`` rescaled so that ``(p − n) δ0 + Σδ = total`` (QIS keeps the trace)."""
    scale = total / ((p - n) * delta0 + ops(delta).sum(delta, -1, keepdim=True))
    return delta * scale, delta0 * scale


def qis_eigenvalues(evals: torch.Tensor, N: int) -> torch.Tensor:
    """The eigenvalues ``δ (B, p)`` of the QIS target (Ledoit & Wolf 2022, Bernoulli 28(3)).

    ``evals (B, p)`` ascending eigenvalues of the divisor-``N`` sample covariance ``S``
    (``torch.linalg.eigh``), no constant columns.  With the eigenvectors ``U`` of that
    ``eigh``, :func:`qis_from_eig` is ``U diag(δ) Uᵀ`` (``δ[i]`` belongs to column ``i``;
    for ``p > n = N − 1`` the ``p − n`` smallest share the null value ``δ0``), so
    inner products with the QIS target cost ``O(p)`` per vector of ``uᵢᵀAuᵢ``.
    """
    p, n = evals.shape[-1], N - 1
    delta, delta0 = _qis_scaled(evals * (N / n), p, n)
    if delta0 is None:
        return delta
    return torch.cat([delta0.expand(-1, p - delta.shape[-1]), delta], dim=-1)


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


def _qis_from_eigh(
    S: torch.Tensor, n: int, scale: float = 1.0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """QIS from ``scale · S`` with ``S (B, p, p)`` (divisor ``n`` after scaling); no constant columns.

    Only the lower triangle of ``S`` is read (``torch.linalg.eigh``), so ``S``
    need not be symmetrised; the scale is applied to the eigenvalues.
    """
    lam, U = torch.linalg.eigh(S)  # ascending
    return _qis_from_spectrum(lam * scale if scale != 1.0 else lam, U, n, out)


def _assemble_singular(Um, delta, delta0, total, p, n, out=None) -> torch.Tensor:
    """``U diag(δ) Uᵀ = δ0 I + U_m diag(δ_m − δ0) U_mᵀ`` after trace rescaling (2p²m flops)."""
    delta, delta0 = _singular_scale(delta, delta0, total, p, n)
    return _assemble_scaled(Um, delta, delta0, out)


def _assemble_scaled(Um, delta, delta0, out=None) -> torch.Tensor:
    """``δ0 I + U_m diag(δ_m − δ0) U_mᵀ`` for already rescaled ``δ``, ``δ0``."""
    xp = ops(Um)
    res = _outer_sym(Um * (delta - delta0)[..., None, :], Um, out=out)
    xp.add_diagonal_(res, delta0)
    return res


def _qis_from_gram(Xc: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """QIS for ``p > n`` via the ``N × N`` Gram matrix of demeaned ``Xc (B, N, p)``.

    The non-null eigenpairs of ``S = XcᵀXc/n`` are those of ``K = XcXcᵀ/n``:
    ``λ`` and ``u = Xcᵀv / √(nλ)``; the null eigenvectors are not needed since
    all null eigenvalues are shrunk to the same value.  Costs O(N²p + Np²)
    instead of an O(p³) eigendecomposition.
    """
    mu, V = torch.linalg.eigh(Xc @ Xc.transpose(-1, -2))  # eigenvalues of n·K
    return qis_from_gram_eigh(Xc, mu, V, out)


def qis_from_gram_eigh(
    Xc: torch.Tensor, mu: torch.Tensor, V: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """QIS (Ledoit & Wolf 2022) for ``p > n = N − 1`` from ``(mu, V) = torch.linalg.eigh(Xc Xcᵀ)``
    that the caller already has (the Gram route of :func:`qis_estimate`, the same result
    without a second ``eigh``); ``Xc (B, N, p)`` demeaned, no constant columns."""
    xp = ops(Xc)
    B, N, p = Xc.shape
    n = N - 1
    lam = xp.clamp_min(mu[:, N - n :] / n, 0)  # the n = N − 1 non-null eigenvalues, ascending
    inv = _inverse_nonnull(lam, p)
    Um = (xp.mT(Xc) @ V[:, :, N - n :]) * xp.sqrt(inv / n)[..., None, :]
    delta, delta0 = _qis_delta(inv, p, n)
    total = xp.square(Xc).sum((-2, -1))[..., None] / n  # = tr S
    return _assemble_singular(Um, delta, delta0, total, p, n, out)


def _qis_regular(
    Xc: torch.Tensor | None,
    S: torch.Tensor | None,
    N: int,
    gram: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """QIS without constant columns: Gram route when ``p > N − 1`` and returns are given,
    else one ``eigh`` of ``S`` (or of ``gram = XcᵀXc`` computed by the caller)."""
    n = N - 1
    if Xc is not None and Xc.shape[-1] > n:
        return _qis_from_gram(Xc, out)
    if S is not None:
        return _qis_from_eigh(S, n, N / n, out)
    if gram is None:
        gram = _gram_lower(Xc)
    return _qis_from_eigh(gram, n, 1.0 / n, out)


def _qis_chunk(Xc: torch.Tensor | None, S: torch.Tensor | None, N: int, out: torch.Tensor) -> None:
    """QIS of one chunk of samples into ``out``; constant columns handled per sample."""
    n = N - 1
    gram = None
    if S is not None:
        var = torch.diagonal(S, dim1=-2, dim2=-1)
    elif Xc.shape[-1] <= n:
        gram = _gram_lower(Xc)  # S·N (lower triangle), its diagonal gives the variances
        var = torch.diagonal(gram, dim1=-2, dim2=-1)
    else:
        var = Xc.square().sum(-2)
    const = var == 0
    has_const = const.any(-1)
    if not bool(has_const.any()):
        _qis_regular(Xc, S, N, gram, out)
        return
    out.zero_()
    regular = (~has_const).nonzero().flatten()
    if regular.numel():
        out[regular] = _qis_regular(
            None if Xc is None else Xc[regular],
            None if S is None else S[regular],
            N,
            None if gram is None else gram[regular],
        )
    for b in has_const.nonzero().flatten().tolist():
        keep = (~const[b]).nonzero().flatten()
        if keep.numel() == 0:
            continue
        rows, cols = keep.unsqueeze(-1), keep.unsqueeze(0)
        sub = _qis_regular(
            None if Xc is None else Xc[b][:, keep].unsqueeze(0),
            None if S is None else S[b, rows, cols].unsqueeze(0),
            N,
        )
        out[b, rows, cols] = sub[0]


def _qis_step(p: int, n: int) -> int:
    """Samples per QIS chunk: about ``_QIS_STEP_ELEMENTS`` elements of ``p × p`` and ``n × p``
    (keeps the temporaries in cache and away from the page faults of huge allocations)."""
    return max(1, _QIS_STEP_ELEMENTS // (p * (p + n)))


def qis_estimate(
    Xc: torch.Tensor | None = None, S: torch.Tensor | None = None, N: int | None = None
) -> torch.Tensor:
    """Quadratic-inverse shrinkage (Ledoit & Wolf 2022, Bernoulli 28(3)), batched.

    Give the demeaned returns ``Xc (B, N, p)`` (constant columns exactly zero,
    as from :func:`shrinklab._validation.center`) and/or their divisor-``N``
    sample covariance ``S (B, p, p)`` with ``N``.  Follows the authors' published
    ``QIS`` code: divisor ``n = N − 1``, ``c = p/n``, smoothing
    ``h = min(c², 1/c²)^0.35 / p^0.35``, the smoothed Stein shrinker on the
    ``min(p, n)`` non-null eigenvalues, the null eigenvalues (``p > n``) shrunk
    to ``1/((c − 1) mean(1/λ))``, trace preserved, sample eigenvectors kept.
    For ``p > n`` (and ``Xc`` given) the eigenpairs come from the ``N × N`` Gram
    matrix, which is cheaper and mathematically identical.  Samples are
    processed in cache-sized chunks (one ``eigh`` each, no symmetrisation or
    rescaling pass over ``S``: the scale goes to the eigenvalues).

    Constant columns (zero variance) are removed, QIS is computed on the
    remaining assets, and they are re-inserted with zero rows/columns (that
    sample is processed on its own).  If every column is constant the result is 0.
    """
    if Xc is None and S is None:
        raise ValueError("qis_estimate needs Xc or S")
    if N is None:
        if Xc is None:
            raise ValueError("qis_estimate needs N when only S is given")
        N = Xc.shape[-2]
    ref = S if S is not None else Xc
    B, p = ref.shape[0], ref.shape[-1]
    out = torch.empty(B, p, p, dtype=ref.dtype, device=ref.device)
    step = B if ref.device.type != "cpu" else _qis_step(p, 0 if S is not None else N)
    for s in range(0, B, step):
        _qis_chunk(
            None if Xc is None else Xc[s : s + step],
            None if S is None else S[s : s + step],
            N,
            out[s : s + step],
        )
    return out


def qis_from_returns(X: torch.Tensor) -> torch.Tensor:
    """QIS (Ledoit & Wolf 2022) of validated raw returns ``X (B, N, p)`` (as from
    :func:`shrinklab._validation.as_returns`).

    Same as ``qis_estimate(center(X)[0])``, but demeans chunk by chunk, so that
    each chunk's ``Xc``, ``XcᵀXc`` and eigenvectors stay in cache; see
    :func:`qis_estimate`.
    """
    B, N, p = X.shape
    out = torch.empty(B, p, p, dtype=X.dtype, device=X.device)
    step = B if X.device.type != "cpu" else _qis_step(p, N)
    for s in range(0, B, step):
        Xc, _ = center(X[s : s + step], cov=False)
        _qis_chunk(Xc, None, N, out[s : s + step])
    return out


def qis_from_eig(evals: torch.Tensor, evecs: torch.Tensor, S: torch.Tensor, N: int) -> torch.Tensor:
    """QIS (Ledoit & Wolf 2022) from an ``eigh`` of ``S`` that the caller already has.

    ``S (B, p, p)`` is the divisor-``N`` sample covariance of ``N`` demeaned rows
    and ``(evals (B, p), evecs (B, p, p)) = torch.linalg.eigh(S)``.  Same result
    as :func:`qis_estimate` ``(S=S, N=N)`` up to round-off (the eigenvalues of
    the divisor-``n`` matrix are ``evals · N/n``; for ``p > n`` the top ``n``
    eigenpairs are the Gram route's), without a second eigendecomposition.
    Samples with a constant column go through :func:`qis_estimate`.
    """
    n = N - 1
    var = ops(S).diagonal(S)
    has_const = (var == 0).any(-1)
    if not bool(has_const.any()):
        return _qis_from_spectrum(evals * (N / n), evecs, n)
    if isinstance(S, np.ndarray):  # the torch route for constant columns
        return qis_from_eig(*map(torch.from_numpy, (evals, evecs, S)), N).numpy()
    out = torch.empty_like(S)
    regular = (~has_const).nonzero().flatten()
    if regular.numel():
        out[regular] = _qis_from_spectrum(evals[regular] * (N / n), evecs[regular], n)
    special = has_const.nonzero().flatten()
    out[special] = qis_estimate(S=S[special], N=N)
    return out


def qis_from_cov(S: torch.Tensor, N: int) -> torch.Tensor:
    """QIS (Ledoit & Wolf 2022) from the divisor-``N`` sample covariance ``S (B, p, p)`` of ``N`` demeaned rows.

    Same as ``qis_estimate(S=S, N=N)``; see :func:`qis_estimate`.
    """
    return qis_estimate(S=S, N=N)


def qis_from_demeaned(Xc: torch.Tensor) -> torch.Tensor:
    """QIS (Ledoit & Wolf 2022) of demeaned returns ``Xc (B, N, p)``; see :func:`qis_estimate`."""
    return qis_estimate(Xc=Xc)


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
    """Targets ``(B, K, p, p)`` from already validated ``Xc, S`` (see :func:`shrinklab._validation.center`)."""
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
