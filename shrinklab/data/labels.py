"""One fused pass over a batch of worlds: features, oracle labels, the quadratic form
``G, c, d`` and the FSOPT and Ledoit–Wolf losses (:func:`process_batch`).

One sample covariance and one ``eigh`` of ``S`` per sample feed the features, the QIS
target and FSOPT; the "Per batch" paragraph of :mod:`shrinklab.data.dataset` (the
training-set builder that calls it chunk by chunk) describes the pass and its costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from shrinklab.core import estimators, features
from shrinklab.core.estimators import solve_simplex_qp
from shrinklab.core.linalg import gram, matvecs, row_times
from shrinklab.core.qis import qis_eigenvalues
from shrinklab.core.sample_stats import targets_from_stats
from shrinklab.core.targets import (
    TARGET_NAMES,
    market_parts_from_cov,
    quadratic_form_from_differences,
    quadratic_form_from_stack,
    target_rayleigh_quotients,
)
from shrinklab.core.validation import center

__all__ = ["chunk_size", "fsopt_loss_from_eigh", "process_batch"]


# Batches are processed in chunks of about this many float64 elements of X and the
# targets (32 MB); with the shared eigh and O(np + p²) intensities the chunk size
# matters little (measured within 10 % from 4 MB to 64 MB at p = 50 and 200).
_CHUNK_ELEMENTS = 1 << 22


_CHUNK_MIN, _CHUNK_MAX = 4, 128


# Inside a chunk the returns are reduced in pieces of about this many elements (2 MB of
# float64, the L2 cache of one core): see _returns_stats.
_STATS_ELEMENTS = 1 << 18


# From this p on the eigendecomposition goes through numpy's LAPACK (see _eigh).
_NUMPY_EIGH_MIN_P = 128


# From this p on the FSOPT loss reads uᵀΣu off the generator's roots (one trmm or an
# O(p²k) product per sample) instead of one batched GEMM ΣU (see fsopt_loss_from_eigh).
_ROOT_FSOPT_MIN_P = 64


# The targets whose Rayleigh quotients uᵀT_ku targets.target_rayleigh_quotients returns.
_RAYLEIGH_TARGETS = ("identity", "diagonal", "constant_correlation", "single_factor")


# --------------------------------------------------------------------------- building
def fsopt_loss_from_eigh(
    U: torch.Tensor, sigma: torch.Tensor, roots: list | None = None
) -> torch.Tensor:
    """``‖U diag(uᵢᵀΣuᵢ) Uᵀ − Σ‖²_F`` ``(B,)`` from the sample eigenvectors ``U (B, p, p)``.

    FSOPT of Ledoit & Wolf (2012, Ann. Statist. 40(2)).  With ``M = UᵀΣU`` the
    loss is the sum of squared off-diagonal entries of ``M`` (``U`` orthogonal),
    i.e. ``‖Σ‖²_F − Σ_i (uᵢᵀΣuᵢ)²`` (one ``p³`` product instead of two).  Where
    that difference cancels (below ``1e-6 ‖Σ‖²_F``) the squared off-diagonal
    entries of ``M`` are summed directly, so the result never loses more than
    ~1e-10 relative.

    ``roots`` (optional, one per sample, :attr:`shrinklab.data.synthetic.SyntheticBatch.roots`):
    a root of each ``Σ`` that gives ``uᵢᵀΣuᵢ = ‖Rᵀuᵢ‖²`` more cheaply than ``ΣU``
    (:func:`_quadratic_diagonal`: a ``trmm`` for a lower-triangular ``L``, ``O(p²k)``
    for factors ``(B, d)``); the same values up to round-off.
    """
    return _fsopt_parts(U, sigma, roots)[1]


def _fsopt_parts(
    U: torch.Tensor, sigma: torch.Tensor, roots: list | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uᵢᵀΣuᵢ (B, p), FSOPT loss (B,))``; see :func:`fsopt_loss_from_eigh`."""
    total = (sigma * sigma).sum((-2, -1))
    if roots is None:
        d = (U * (sigma @ U)).sum(-2)  # uᵢᵀ Σ uᵢ
    else:
        d = torch.stack([_quadratic_diagonal(U[i], r) for i, r in enumerate(roots)])
    loss = total - (d * d).sum(-1)
    close = loss < 1e-6 * total
    if bool(close.any()):
        idx = close.nonzero().flatten()
        M = U[idx].transpose(-1, -2) @ (sigma[idx] @ U[idx])
        M.diagonal(dim1=-2, dim2=-1).zero_()
        loss[idx] = (M * M).sum((-2, -1))
    return d, loss.clamp_min(0)


def _quadratic_diagonal(U: torch.Tensor, root: Any) -> torch.Tensor:
    """``diag(UᵀΣU)`` ``(p,)`` for ``U (p, p)`` and a root of ``Σ``.

    ``root`` is a lower-triangular ``L`` (``Σ = LLᵀ``): ``‖(UᵀL)ᵢ‖²``, ``UᵀL`` by one
    BLAS ``trmm`` (half the flops of the GEMM ``ΣU``); or factors ``(B (p, k), d (p,))``
    (``Σ = BBᵀ + diag(d²)``): ``‖(UᵀB)ᵢ‖² + Σ_j d_j² U_ji²`` in ``O(p²k)``.
    """
    if isinstance(root, tuple):
        b, dv = root
        P = U.transpose(-1, -2) @ b.to(U.dtype)
        return (P * P).sum(-1) + row_times(dv * dv, U * U)
    from scipy.linalg import blas

    # Uᵀ is U's buffer read in Fortran order when U is C-contiguous; Lᵀ likewise.
    ut = U.detach().cpu().numpy().T
    lt = root.to(U.dtype).cpu().numpy().T  # Lᵀ, upper triangular
    P = blas.dtrmm(1.0, lt, ut, side=1, lower=0, trans_a=1)  # Uᵀ (Lᵀ)ᵀ = UᵀL
    return torch.from_numpy(np.einsum("ij,ij->i", P, P)).to(U.device)


def process_batch(
    X: torch.Tensor,
    sigma: torch.Tensor,
    timings: dict[str, float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    roots: list | None = None,
) -> dict[str, torch.Tensor]:
    """Everything stored per sample for one batch sharing ``(p, n)`` (in cache-sized chunks).

    ``X (B, n, p)`` (float64, or float32 that is upcast exactly, piece by piece),
    ``sigma (B, p, p)`` float64 -> dict with ``features, oracle_w, alpha_star, G, c,
    d, loss_fsopt, loss_lw, intensities`` (computed in float64).  ``S`` and one
    ``eigh`` (its eigenvalues feed the features, its eigenvectors FSOPT) are
    computed once.
    If ``timings`` is a dict, the seconds spent in each part are added to it
    (keys ``cov, eigh, targets, quadratic_form, qp, intensities, features, fsopt``),
    measured with ``clock`` (e.g. ``time.process_time`` for CPU time).
    ``roots`` (optional): the root each ``X[i]`` was drawn with
    (:attr:`shrinklab.data.synthetic.SyntheticBatch.roots`); from ``p =
    _ROOT_FSOPT_MIN_P`` on the FSOPT loss uses them (:func:`fsopt_loss_from_eigh`).
    """
    B, n, p = X.shape
    step = chunk_size(n, p)
    if roots is not None and len(roots) != B:
        raise ValueError(f"roots has {len(roots)} entries for a batch of {B}")
    if B > step:  # keep the (B, K, p, p) temporaries cache-sized
        parts = [
            process_batch(
                X[s : s + step],
                sigma[s : s + step],
                timings,
                clock,
                None if roots is None else roots[s : s + step],
            )
            for s in range(0, B, step)
        ]
        return {k: torch.cat([q[k] for q in parts]) for k in parts[0]}
    clock = _Clock(timings, clock)
    S, sf_parts, i_stats, f_stats = _returns_stats(X, clock)
    evals, U = _eigh(S)
    clock("eigh")
    extras: dict = {}
    fsopt_roots = roots if p >= _ROOT_FSOPT_MIN_P else None
    if bool((torch.diagonal(S, dim1=-2, dim2=-1) == 0).any()):  # constant columns
        G, c, d = _quadratic_form_explicit(S, sigma, n, sf_parts, (evals, U), extras, clock)
        loss_fsopt = fsopt_loss_from_eigh(U, sigma, fsopt_roots)
        clock("fsopt")
    else:
        G, c, d, loss_fsopt = _quadratic_form_spectral(
            S, sigma, n, sf_parts, (evals, U), extras, clock, fsopt_roots
        )
    w = solve_simplex_qp(G, c)
    clock("qp")
    k_cc, k_sf = TARGET_NAMES.index("constant_correlation"), TARGET_NAMES.index("single_factor")
    inten = estimators.intensities_from_stats(  # γ̂ = ‖S − F‖² from G's diagonal
        i_stats,
        S,
        (None, extras["rbar"], None, sf_parts),
        gamma=(G[:, k_cc, k_cc], G[:, k_sf, k_sf]),
    )
    clock("intensities")
    feats = features.features_from_stats(f_stats, S, evals, G, inten)
    clock("features")
    s_lw = inten[:, 0]
    loss_lw = s_lw * s_lw * G[:, 0, 0] - 2 * s_lw * c[:, 0] + d
    return {
        "features": feats,
        "oracle_w": w,
        "alpha_star": w.sum(-1),
        "G": G,
        "c": c,
        "d": d,
        "loss_fsopt": loss_fsopt,
        "loss_lw": loss_lw,
        "intensities": inten,
    }


def _quadratic_form_explicit(S, sigma, n, sf_parts, eig, extras, clock):
    """``G, c, d`` from the K target matrices and ``Σ`` (:func:`quadratic_form_from_stack`)."""
    B, p = S.shape[0], S.shape[-1]
    K = len(TARGET_NAMES)
    stack = torch.empty(B, K + 1, p, p, dtype=S.dtype, device=S.device)  # [T_1..T_K, Σ]
    targets_from_stats(S, n, sf_parts, eig, extras, out=stack)  # QIS: this eigh
    clock("targets")
    stack[:, K].copy_(sigma)
    G, c, d = quadratic_form_from_stack(S, stack)  # overwrites the stack with [T_k − S, Σ − S]
    clock("quadratic_form")
    return G, c, d


def _quadratic_form_spectral(S, sigma, n, sf_parts, eig, extras, clock, roots):
    """``G, c, d`` and the FSOPT loss without forming the QIS target (no constant columns).

    QIS is ``U diag(δ) Uᵀ`` in the eigenbasis of ``S`` (``U`` from the shared eigh,
    :func:`shrinklab.core.qis.qis_eigenvalues`), so with ``eᵢ = δᵢ − λᵢ`` its entries are
    ``G_qq = Σ eᵢ²``, ``G_qk = Σ eᵢ uᵢᵀ(T_k − S)uᵢ`` (the other targets' Rayleigh
    quotients in ``O(p²)``, :func:`shrinklab.core.targets.target_rayleigh_quotients`) and
    ``c_q = Σ eᵢ (uᵢᵀΣuᵢ − λᵢ)`` (``uᵢᵀΣuᵢ`` is FSOPT's, :func:`_fsopt_parts`); the
    other entries are one Gram of ``[T_k − S, Σ − S]`` (:func:`quadratic_form_from_stack`).
    The same values as :func:`_quadratic_form_explicit` up to round-off (tested), without
    the ``p³`` product of the QIS target and one of the ``K + 1`` matrices of the Gram;
    the differences ``T_k − S`` are written in one pass each.
    """
    evals, U = eig
    B, p = S.shape[0], S.shape[-1]
    K = len(TARGET_NAMES)
    q = TARGET_NAMES.index("qis")
    others = tuple(k for k in TARGET_NAMES if k != "qis")
    if others != _RAYLEIGH_TARGETS:  # pragma: no cover - guards a change of TARGET_NAMES
        raise RuntimeError(f"targets {others} are not those of target_rayleigh_quotients")
    D = torch.empty(B, K, p, p, dtype=S.dtype, device=S.device)  # [T_k − S (k ≠ qis), Σ − S]
    targets_from_stats(S, n, sf_parts, None, extras, out=D, names=others, minus=S)
    clock("targets")
    torch.sub(sigma, S, out=D[:, K - 1])
    G_o, c_o, d = quadratic_form_from_differences(D)
    clock("quadratic_form")
    d_sigma, loss_fsopt = _fsopt_parts(U, sigma, roots)
    clock("fsopt")
    e = qis_eigenvalues(evals, n) - evals
    A = target_rayleigh_quotients(S, U, extras["rbar"], sf_parts) - evals.unsqueeze(1)
    g_q = (A * e.unsqueeze(1)).sum(-1)  # (B, K − 1)
    idx = torch.tensor([i for i in range(K) if i != q])
    G = torch.empty(B, K, K, dtype=S.dtype, device=S.device)
    G[:, idx.unsqueeze(-1), idx] = G_o
    G[:, q, idx] = g_q
    G[:, idx, q] = g_q
    G[:, q, q] = (e * e).sum(-1)
    c = torch.empty(B, K, dtype=S.dtype, device=S.device)
    c[:, idx] = c_o
    c[:, q] = (e * (d_sigma - evals)).sum(-1)
    clock("targets")
    return G, c, d, loss_fsopt


def _eigh(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh(S)`` (ascending) for symmetric ``S (B, p, p)``.

    On CPU from ``p = _NUMPY_EIGH_MIN_P`` on through numpy's LAPACK (OpenBLAS
    ``dsyevd``, each matrix on its own): measured 2.68 ms against torch's (MKL)
    2.92 ms per ``200 × 200`` matrix on the project's AMD CPU (1.64 against 1.79 at
    p = 160, equal at 120, slower below); the same decomposition up to round-off.
    """
    if S.device.type != "cpu" or S.shape[-1] < _NUMPY_EIGH_MIN_P:
        return torch.linalg.eigh(S)
    w, v = np.linalg.eigh(S.numpy())
    return torch.from_numpy(w), torch.from_numpy(v)


def _returns_stats(X: torch.Tensor, clock: _Clock) -> tuple[torch.Tensor, dict, dict, dict]:
    """``S`` and every sum over the returns that the rest of :func:`process_batch` needs.

    The returns are demeaned and reduced in pieces of about :data:`_STATS_ELEMENTS`
    elements (one sample at p = 200), so that each piece of ``Xc`` and its
    temporaries (``Xc²``, ``Xc³``) stay in cache while they are read several
    times; only ``S`` and vectors of length ``n`` or ``p`` leave the loop.
    ``Xc²`` is formed once (:func:`_center_squares`) and shared by the check for
    constant columns, the features and the intensities.
    ``S = XcᵀXc / n`` is one ``syrk`` per sample (:func:`shrinklab.core.linalg.gram`).
    Returns ``(S, market parts, intensity stats, feature stats)`` (see
    :func:`shrinklab.core.targets.market_parts`, :func:`shrinklab.core.estimators.intensity_stats`,
    :func:`shrinklab.core.features.feature_stats`).
    """
    B, n, p = X.shape
    step = max(1, _STATS_ELEMENTS // (n * p))
    S = torch.empty(B, p, p, dtype=torch.float64, device=X.device)
    pieces = []
    for s in range(0, B, step):
        Xc, Y2, ssq = _center_squares(X[s : s + step].to(S.dtype))
        Sp = S[s : s + step]
        torch.div(gram(Xc), n, out=Sp)
        clock("cov")
        sd = torch.diagonal(Sp, dim1=-2, dim2=-1).clamp_min(0).sqrt()
        inv_sd = torch.where(sd > 0, 1.0 / torch.where(sd > 0, sd, 1.0), 0.0)
        covmkt = Sp.mean(-1)  # S 1/p = cov(x, m)
        # One pass over Xc: the market m = Xc 1/p and Xc σ, Xc covmkt, Xc σ⁻¹.
        m, x_sd, x_c, x_isd = matvecs(Xc, torch.full_like(sd, 1.0 / p), sd, covmkt, inv_sd)
        sf = market_parts_from_cov(Sp, m)
        clock("targets")
        fst = features.feature_stats(Xc, Sp, Y2, ssq / n, x_isd)  # reads Y2 = Xc²
        clock("features")
        y4 = fst["m4"].sum(-1) * n  # Σ_ti x_ti⁴
        ist = estimators.intensity_stats(Xc, Sp, sf["covmkt"], Y2, y4, (x_sd, x_c))
        clock("intensities")  # Y2 now holds Xc³
        pieces.append((sf, ist, fst))
    return (S, *(_cat_stats([q[i] for q in pieces]) for i in range(3)))


def _center_squares(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Xc, Xc∘Xc, Σ_t xc_ti²)``: :func:`shrinklab._validation.center` ``(X, cov=False)``,
    the squares and their column sums ``(B, p)``.

    ``center`` squares ``Xc`` to find the candidates for constant columns; here the
    squares are kept for the moments.  With no candidate (the same rule as
    ``center``'s) ``Xc = X − mean`` is ``center``'s result bit for bit; otherwise
    ``center`` itself handles the sample (tested on constant columns).
    """
    n = X.shape[-2]
    mean = X.mean(dim=-2, keepdim=True)
    Xc = X - mean
    Y2 = Xc * Xc
    ssq = Y2.sum(-2)
    bound = (4.0 * n * torch.finfo(X.dtype).eps * mean.squeeze(-2)) ** 2
    if bool((ssq / n <= bound).any()):
        Xc, _ = center(X, cov=False)
        Y2 = Xc * Xc
        ssq = Y2.sum(-2)
    return Xc, Y2, ssq


def _cat_stats(pieces: list[dict]) -> dict:
    """Concatenate per-piece dicts of tensors / tuples of tensors along dim 0 (other values: first)."""
    if len(pieces) == 1:
        return pieces[0]
    out = {}
    for k, v in pieces[0].items():
        if isinstance(v, torch.Tensor):
            out[k] = torch.cat([q[k] for q in pieces])
        elif isinstance(v, tuple):
            out[k] = tuple(torch.cat([q[k][i] for q in pieces]) for i in range(len(v)))
        else:
            out[k] = v
    return out


def chunk_size(n: int, p: int) -> int:
    """Samples per chunk: about ``_CHUNK_ELEMENTS`` float64s of ``X`` and targets."""
    per_sample = n * p + len(TARGET_NAMES) * p * p
    return int(min(_CHUNK_MAX, max(_CHUNK_MIN, _CHUNK_ELEMENTS // per_sample)))


class _Clock:
    """Adds the time since the previous call to ``timings[name]`` (no-op without a dict)."""

    def __init__(self, timings: dict[str, float] | None, clock: Callable[[], float]) -> None:
        self.timings = timings
        self.clock = clock
        self.t = clock()

    def __call__(self, name: str) -> None:
        if self.timings is None:
            return
        now = self.clock()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now
