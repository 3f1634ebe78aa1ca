"""Quadratic-inverse shrinkage (QIS) of Ledoit & Wolf (2022), batched.

Ledoit & Wolf (2022), "Quadratic shrinkage for large covariance matrices",
Bernoulli 28(3).  As in the authors' published ``QIS`` code it uses the divisor
``n = N − 1`` and handles ``p > n`` (then through the ``N × N`` Gram matrix).  It is
the ``qis`` target of :mod:`shrinklab.core.targets`; the entry points take demeaned
returns and/or the sample covariance (:func:`qis_estimate`), raw returns
(:func:`qis_from_returns`), an ``eigh`` the caller already has (:func:`qis_from_eig`,
:func:`qis_from_gram_eigh`) or only the eigenvalues (:func:`qis_eigenvalues`).

Constant columns (zero variance) keep zero variance and covariance (see
:mod:`shrinklab.core.validation`).
"""

from __future__ import annotations

import numpy as np
import torch

from shrinklab.core.linalg import gram_lower, outer_sym
from shrinklab.core.validation import center
from shrinklab.core.xp import ops

__all__ = [
    "qis_estimate",
    "qis_from_eig",
    "qis_from_gram_eigh",
    "qis_eigenvalues",
    "qis_from_returns",
    "qis_from_cov",
    "qis_from_demeaned",
]


# Elements of one (chunk, m, m) temporary in QIS (~64 MB in float64).
_QIS_CHUNK_ELEMENTS = 1 << 23


# Elements of p × (p + n) per QIS chunk of samples (8 MB in float64): measured fastest
# on a 2-core CPU with 1 MB L2 per core (cache-resident temporaries, no page faults).
_QIS_STEP_ELEMENTS = 1 << 20


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
        return outer_sym(U * ops(U).sqrt(delta)[..., None, :], out=out)
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
    res = outer_sym(Um * (delta - delta0)[..., None, :], Um, out=out)
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
        gram = gram_lower(Xc)
    return _qis_from_eigh(gram, n, 1.0 / n, out)


def _qis_chunk(Xc: torch.Tensor | None, S: torch.Tensor | None, N: int, out: torch.Tensor) -> None:
    """QIS of one chunk of samples into ``out``; constant columns handled per sample."""
    n = N - 1
    gram = None
    if S is not None:
        var = torch.diagonal(S, dim1=-2, dim2=-1)
    elif Xc.shape[-1] <= n:
        gram = gram_lower(Xc)  # S·N (lower triangle), its diagonal gives the variances
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
    as from :func:`shrinklab.core.validation.center`) and/or their divisor-``N``
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
    :func:`shrinklab.core.validation.as_returns`).

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
