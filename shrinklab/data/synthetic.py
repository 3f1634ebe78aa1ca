"""Synthetic worlds with a known covariance: the training distribution and the evaluation grid.

A *world* is a true covariance ``Σ`` (``p × p``) and a sample ``X`` (``n × p``) of
i.i.d. zero-mean returns with ``Cov(x) = Σ``. Everything is drawn with
``torch.Generator`` in ``float64`` on the CPU and is exactly reproducible.

Covariance families (:data:`FAMILIES`)
--------------------------------------
``factor``
    Market + sector factor model ``Σ = B Bᵀ + Ψ`` (Fama & French 1993; Fan, Fan &
    Lv 2008): a market loading ``βᵢ ~ μ + 0.3·N(0,1)`` with ``μ ~ U(0.5, 1.2)``;
    each asset in one of ``n_factors − 1`` sectors with loading ``U(0.2, 0.7)``;
    idiosyncratic variances ``ψᵢ ~ U(0.3, 1.0)``.
``lognormal``
    Eigenvalues ``λᵢ = exp(s·zᵢ)`` (``s = sigma_log``, default ``U(0.3, 1.2)``),
    Haar-random eigenvectors.
``spectrum_1_3_10``
    The design of Bai & Silverstein (1998) used by Ledoit & Wolf (2012, 2022,
    "Quadratic shrinkage for large covariance matrices", QIS): 20 % of the
    eigenvalues equal 1, 40 % equal 3 and 40 % equal 10 (counts ``round(0.2p)``,
    ``round(0.4p)``, rest), Haar-random eigenvectors. Never rescaled.
``discrete``
    A 1/3/10-style discrete spectrum with 2–4 random levels (log-uniform in
    ``[1, 100]``) and Dirichlet(1) weights, Haar-random eigenvectors.
``toeplitz``
    AR(1) correlation ``Σᵢⱼ = ρ^|i−j|`` (``rho`` default ``U(0.1, 0.95)``).
``block``
    Sector block correlation: assets in 2–10 blocks, within-block correlation
    ``U(0.2, 0.8)`` per block, between-block correlation ``U(0, min(0.2, ρ_w))``
    (positive definite by construction).
``sp500``
    Calibrated to the real S&P 500 returns bundled with skfolio, computed from
    :mod:`shrinklab.data` *before* the test period (``< 2016-01-01``): for ``p ≤ 20``
    the covariance of a random subset of the 20 stocks over a random two-year
    window; for ``p > 20`` a correlation with the window's spikes ``λ`` mapped to
    ``1 + (λ − 1)(p − 1)/19`` (a factor model's spikes grow linearly in ``p``; exact
    for equicorrelation), the bulk eigenvalues resampled
    with log-normal jitter, a market eigenvector with resampled real loadings,
    Haar eigenvectors elsewhere, and resampled real volatilities. Scaled to
    ``tr Σ / p = 1``. ``period="report"`` (evaluation only) draws the window from
    2016–2022 instead, data no training world uses (:func:`sp500_calibration`).

Market-like families (:mod:`shrinklab.data.worlds_market`, weight 0 by default)
-------------------------------------------------------------------------------
``market_sectors`` (market factor + sector blocks), ``regime_shift`` (``X`` from the
estimation-window Σ, the returned Σ is the holding period's) and ``resampled`` (block
bootstrap of real pre-2010 returns): documented in that module.

Edge-case families (:data:`EDGE_FAMILIES`, drawn with probability ``edge_prob``)
-------------------------------------------------------------------------------
``near_singular``
    Log-normal spectrum (``s = 0.5``) whose ``n_small`` smallest eigenvalues are
    set to ``eps·mean(λ)``, ``eps`` log-uniform in ``[1e-6, 1e-3]``.
``dominant_factor``
    One factor explaining a share ``U(0.8, 0.95)`` of the total variance.

Very short samples (``n`` in ``10..20``) are drawn for a fraction ``short_prob`` of
the batches.

Heterogeneous variances: with probability ``hetero_prob`` a sample of a family in
:data:`HETERO_FAMILIES` gets ``Σ ← DΣD``, ``D = diag(exp(τ zᵢ))``, ``τ ~ U(0.2, 0.8)``.

Returns
-------
Gaussian ``x = L z`` with ``Σ = L Lᵀ`` (``L = U Λ^½`` for the Haar families, the
closed-form AR(1) Cholesky factor for ``toeplitz``, Cholesky otherwise; with the
default float32 normals every full ``L`` is lower triangular — the Cholesky factor
of ``Σ`` for the Haar families — and ``Z Lᵀ`` is one BLAS ``trmm``, half the
flops of a GEMM, the same distribution; the
factor-form families ``factor``, ``block`` and ``dominant_factor`` draw
``x = B f + d ⊙ e`` from ``Σ = BBᵀ + diag(d²)`` in ``O(pk)`` per row), or
multivariate Student-t with ``ν`` degrees
of freedom, scaled so that ``Cov(x) = Σ``: ``x = sqrt((ν − 2)/w)·L z`` with
``w ~ χ²_ν`` (the scale matrix is ``(ν−2)/ν·Σ``; Kotz & Nadarajah 2004). ``ν`` is
log-uniform in ``[df_min, df_max]`` for a fraction ``tail_prob`` of the samples,
``inf`` (Gaussian) otherwise. χ² draws use numpy's gamma sampler (Marsaglia & Tsang
2000) on a PCG64 stream seeded from the sample's generator. Standard normals are drawn in ``normal_dtype``: the default
``float32`` is ~6× faster than ``float64`` on CPU (single-precision Box–Muller
resolves ``|z|`` up to ≈ 5.77, a truncated mass of 8e-9); with it the product
``Z Lᵀ`` is also single precision (2× faster) and upcast, so ``Cov(x) = Σ`` up to
~1e-7 relative (the float32 rounding of ``L``), negligible against sampling error.
Everything else (Σ, its roots, the Haar QR on float32-drawn Gaussians) is ``float64``;
the evaluation scenarios (:func:`make_scenario`) use ``float64`` throughout.

Sizes
-----
``p`` log-uniform (integers) in ``[p_min, p_max]``, ``p/n`` log-uniform in
``[ratio_min, ratio_max]``, ``n = max(n_min, round(p/ratio))``. Short-sample
batches draw ``n ~ U{10..20}`` and ``p = clip(round(ratio·n), p_min, p_max)``.
A batch shares ``(p, n)`` so that its samples stack into ``(B, p, p)`` / ``(B, n, p)``
tensors and everything downstream (``S``, eigendecompositions, oracles) is batched.
Inside the generator each sample's Σ and X are built with a few small tensor ops
and one GEMM each (see :func:`_draw_returns` for why not one batched GEMM).

Reproducibility
---------------
``generate_batches(n, seed, config)`` draws the batch-level choices (``p``, ``n``,
families, ``df``) and a 62-bit ``sample_seed`` per sample from one generator; all
the randomness inside a sample (its Σ and its X) comes from a generator seeded with
``sample_seed``, so :func:`regenerate` rebuilds any sample bit-exactly from
``(sample_seed, p, n, family, df, config)`` (same torch build and thread count;
across thread counts BLAS rounding differs at ~1e-14). A sample does not depend on
the batch size or on the other samples of its batch.

Curriculum
----------
:func:`difficulty_score` is in ``[0, 1]``: ``0.5·r + 0.3·t + 0.2·e`` with ``r`` the
position of ``log(p/n)`` in ``[log 0.05, log 2]`` (clipped), ``t = min(1, 3/ν)``
(0 for Gaussian, 1 for ``ν = 3``) and ``e = 1`` for edge cases (edge family or a
short sample). The trainer sorts by :func:`curriculum_order` (easy first) or
admits samples with ``difficulty ≤`` a rising threshold, and caps ``p`` by
:func:`progressive_sizes` (small matrices first).

Over 600 lines on purpose: every world family shares the plan/seed machinery that
regenerates any sample from its seed; a module per family would duplicate it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.linalg
import torch

from shrinklab.data import returns as data
from shrinklab.data import worlds_market

DTYPE = torch.float64


BASE_FAMILIES: tuple[str, ...] = (
    "factor",
    "lognormal",
    "spectrum_1_3_10",
    "discrete",
    "toeplitz",
    "block",
    "sp500",
)

# The market-like families of :mod:`shrinklab.data.worlds_market` (weight 0 by default).
REGULAR_FAMILIES: tuple[str, ...] = BASE_FAMILIES + worlds_market.MARKET_FAMILIES


EDGE_FAMILIES: tuple[str, ...] = ("near_singular", "dominant_factor")


# The market-like families come last so that the integer family codes of stored
# training sets (indices into FAMILIES) keep their meaning.
FAMILIES: tuple[str, ...] = BASE_FAMILIES + EDGE_FAMILIES + worlds_market.MARKET_FAMILIES


HETERO_FAMILIES: tuple[str, ...] = (
    "factor",
    "lognormal",
    "discrete",
    "toeplitz",
    "block",
    "near_singular",
    "dominant_factor",
)


SHORT_N_RANGE: tuple[int, int] = (10, 20)


_SEED_BOUND = 2**62


# Fixed design parameters for the evaluation grid (make_scenario), where a spec
# does not give them, so that a scenario name means one documented design.
SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    "factor": {"n_factors": 3},
    "lognormal": {"sigma_log": 1.0},
    "toeplitz": {"rho": 0.5},
    "block": {"n_blocks": 5, "rho_within": 0.5, "rho_between": 0.1},
    "near_singular": {"eps": 1e-4},
    "dominant_factor": {"share": 0.9},
}


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SyntheticConfig:
    """The distribution of training worlds (defaults documented in the module docstring).

    ``family_weights`` maps each regular family to a relative weight (missing
    families get weight 0; the default weighs :data:`BASE_FAMILIES` equally and the
    market-like families of :mod:`shrinklab.data.worlds_market` not at all); edge families are drawn with probability
    ``edge_prob`` instead, uniformly among :data:`EDGE_FAMILIES`.
    """

    p_min: int = 5
    p_max: int = 200
    ratio_min: float = 0.05
    ratio_max: float = 2.0
    n_min: int = 10
    family_weights: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(BASE_FAMILIES, 1.0)
    )
    tail_prob: float = 0.5
    df_min: float = 3.0
    df_max: float = 30.0
    edge_prob: float = 0.1
    short_prob: float = 0.1
    hetero_prob: float = 0.5
    batch_size: int = 128
    normal_dtype: str = "float32"

    def __post_init__(self) -> None:
        if not 2 <= self.p_min <= self.p_max:
            raise ValueError(f"need 2 <= p_min <= p_max, got {self.p_min}, {self.p_max}")
        if not 0 < self.ratio_min <= self.ratio_max:
            raise ValueError(
                f"need 0 < ratio_min <= ratio_max, got {self.ratio_min}, {self.ratio_max}"
            )
        if self.n_min < 2:
            raise ValueError(f"n_min must be >= 2, got {self.n_min}")
        for name in ("tail_prob", "edge_prob", "short_prob", "hetero_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if not 2.0 < self.df_min <= self.df_max:
            raise ValueError(
                f"need 2 < df_min <= df_max (finite covariance), got {self.df_min}, {self.df_max}"
            )
        unknown = set(self.family_weights) - set(REGULAR_FAMILIES)
        if unknown:
            raise ValueError(f"unknown families in family_weights: {sorted(unknown)}")
        w = [float(v) for v in self.family_weights.values()]
        if any(v < 0 or not math.isfinite(v) for v in w) or sum(w) <= 0:
            raise ValueError("family_weights must be finite, >= 0 and not all zero")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.normal_dtype not in ("float32", "float64"):
            raise ValueError(
                f"normal_dtype must be 'float32' or 'float64', got {self.normal_dtype}"
            )


def as_config(config: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig:
    """A :class:`SyntheticConfig` from ``None`` (defaults), a dict (unknown keys refused) or itself."""
    if config is None:
        return SyntheticConfig()
    if isinstance(config, SyntheticConfig):
        return config
    if isinstance(config, Mapping):
        names = {f.name for f in fields(SyntheticConfig)}
        unknown = set(config) - names
        if unknown:
            raise ValueError(f"unknown synthetic config keys: {sorted(unknown)}")
        return replace(SyntheticConfig(), **dict(config))
    raise ValueError(f"config must be None, a dict or a SyntheticConfig, got {type(config)!r}")


# --------------------------------------------------------------------------- helpers
def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0, size: int | None = None):
    if size is None:
        return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=DTYPE))
    return lo + (hi - lo) * torch.rand(size, generator=g, dtype=DTYPE)


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi]`` (inclusive)."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _qr_q(a: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(Q, diag R)`` of the Householder QR ``a = QR`` of a square ``a``, in float64.

    LAPACK ``dgeqrf`` + ``dorgqr`` (scipy's OpenBLAS) with a workspace for blocked
    updates: measured 0.91 ms against 1.07 ms for ``torch.linalg.qr`` at p = 200 on
    the project's CPU; the same factorisation up to round-off.  ``Q`` is returned
    in Fortran order (``Q.T`` is C-contiguous).
    """
    from scipy.linalg import lapack

    m = a.shape[-1]
    work = 32 * m  # blocked Householder updates (NB = 32)
    f = np.array(a.numpy(), dtype=np.float64, order="F")
    qr, tau, _, info = lapack.dgeqrf(f, lwork=work, overwrite_a=1)
    r_diag = np.diagonal(qr).copy()
    q, _, info2 = lapack.dorgqr(qr, tau, lwork=work, overwrite_a=1)
    if info != 0 or info2 != 0:  # pragma: no cover - LAPACK argument errors only
        raise RuntimeError(f"LAPACK QR failed (info {info}, {info2})")
    return q, r_diag


def _from_spectrum(lam: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ, L)`` with ``Σ = U diag(λ) Uᵀ``, ``U`` Haar, ``L = U diag(√λ)``.

    ``U`` is the Q factor of the QR of a Gaussian with R's diagonal made positive
    (Mezzadri 2007); the Gaussian is drawn in float32 (5× faster) and upcast, the
    QR is in float64 (:func:`_qr_q`).  ``Σ = WᵀW`` with ``W = Lᵀ`` is one BLAS ``syrk`` (exactly symmetric, half the
    flops of ``L Lᵀ`` as a GEMM); it does not depend on the signs of ``U``'s
    columns (they cancel exactly), so only ``L`` carries them.
    """
    q, r_diag = _qr_q(torch.randn(lam.shape[0], lam.shape[0], generator=g, dtype=torch.float32))
    w = q.T * np.sqrt(lam.numpy())[:, None]  # W = diag(√λ) Qᵀ, C-contiguous
    sigma = torch.from_numpy(np.matmul(w.T, w))  # syrk
    root = torch.from_numpy(w.T * np.where(r_diag < 0, -1.0, 1.0))  # U √λ, U = Q sign(diag R)
    return sigma, root


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _take(kw: dict[str, Any], name: str, default):
    v = kw.pop(name, None)
    return default() if v is None else v


# --------------------------------------------------------------------------- families
def _factor(p, g, kw):
    k = int(_take(kw, "n_factors", lambda: 1 + _randint(g, 0, min(8, p // 5))))
    if k < 1:
        raise ValueError(f"n_factors must be >= 1, got {k}")
    mu = _u(g, 0.5, 1.2)
    b = torch.zeros(p, k, dtype=DTYPE)
    b[:, 0] = mu + 0.3 * torch.randn(p, generator=g, dtype=DTYPE)
    if k > 1:
        sector = torch.randint(0, k - 1, (p,), generator=g)
        b[torch.arange(p), 1 + sector] = _u(g, 0.2, 0.7, p)
    psi = _u(g, 0.3, 1.0, p)
    return _sym(b @ b.T) + torch.diag(psi), (b, psi.sqrt())


def _lognormal(p, g, kw):
    s = float(_take(kw, "sigma_log", lambda: _u(g, 0.3, 1.2)))
    if s < 0:
        raise ValueError(f"sigma_log must be >= 0, got {s}")
    lam = torch.exp(s * torch.randn(p, generator=g, dtype=DTYPE))
    return _from_spectrum(lam, g)


def spectrum_1_3_10(p: int) -> torch.Tensor:
    """Eigenvalues of the 1/3/10 design (Bai & Silverstein 1998; Ledoit & Wolf 2022): 20 % 1, 40 % 3, 40 % 10."""
    n1 = round(0.2 * p)
    n3 = round(0.4 * p)
    n10 = p - n1 - n3
    return torch.cat([torch.full((n1,), 1.0), torch.full((n3,), 3.0), torch.full((n10,), 10.0)]).to(
        DTYPE
    )


def _spectrum_1_3_10(p, g, kw):
    return _from_spectrum(spectrum_1_3_10(p), g)


def _discrete(p, g, kw):
    m = int(_take(kw, "n_levels", lambda: _randint(g, 2, 4)))
    levels = torch.exp(_u(g, 0.0, math.log(100.0), m))
    w = -torch.log(_u(g, 0.0, 1.0, m).clamp_min(1e-300))  # Dirichlet(1) via exponentials
    w = w / w.sum()
    counts = torch.floor(w * p).long()
    counts[torch.argmax(w)] += p - int(counts.sum())
    return _from_spectrum(torch.repeat_interleave(levels, counts), g)


def _toeplitz(p, g, kw):
    rho = float(_take(kw, "rho", lambda: _u(g, 0.1, 0.95)))
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be in (-1, 1), got {rho}")
    # ρ^k once per lag k (p powers instead of p²), laid out as Toeplitz matrices.
    r = torch.pow(torch.tensor(rho, dtype=DTYPE), torch.arange(p, dtype=DTYPE)).numpy()
    sigma = torch.from_numpy(scipy.linalg.toeplitz(r))
    # Exact Cholesky factor of the AR(1) correlation: L[i,0] = ρ^i, L[i,j] = √(1−ρ²) ρ^(i−j).
    root = torch.from_numpy(scipy.linalg.toeplitz(r, np.zeros(p)))
    root[:, 1:] *= math.sqrt(1.0 - rho * rho)
    return sigma, root


def _block(p, g, kw):
    m = int(_take(kw, "n_blocks", lambda: _randint(g, 2, max(2, min(10, p // 3)))))
    if m < 1:
        raise ValueError(f"n_blocks must be >= 1, got {m}")
    rw = kw.pop("rho_within", None)
    rw = _u(g, 0.2, 0.8, m) if rw is None else torch.full((m,), float(rw), dtype=DTYPE)
    rb = kw.pop("rho_between", None)
    rb = _u(g, 0.0, min(0.2, float(rw.min()))) if rb is None else float(rb)
    if not (0.0 <= rb <= float(rw.min()) and float(rw.max()) < 1.0):
        raise ValueError(
            "need 0 <= rho_between <= rho_within < 1 for a positive-definite block matrix"
        )
    assign = torch.randint(0, m, (p,), generator=g)
    same = assign[:, None] == assign[None, :]
    sigma = torch.where(same, rw[assign][:, None].expand(p, p), torch.tensor(rb, dtype=DTYPE))
    sigma = sigma.clone()
    sigma.fill_diagonal_(1.0)
    # Σ = ρ_b 11ᵀ + Σ_b (ρ_w,b − ρ_b) 1_b 1_bᵀ + diag(1 − ρ_w): a (1 + m)-factor root
    loadings = torch.zeros(p, 1 + m, dtype=DTYPE)
    loadings[:, 0] = math.sqrt(rb)
    loadings[torch.arange(p), 1 + assign] = (rw[assign] - rb).sqrt()
    return sigma, (loadings, (1.0 - rw[assign]).sqrt())


def _near_singular(p, g, kw):
    n_small = int(_take(kw, "n_small", lambda: _randint(g, 1, max(1, p // 4))))
    eps = float(_take(kw, "eps", lambda: math.exp(_u(g, math.log(1e-6), math.log(1e-3)))))
    if not 1 <= n_small < p or eps <= 0:
        raise ValueError(f"need 1 <= n_small < p and eps > 0, got {n_small}, {eps}")
    lam = torch.exp(0.5 * torch.randn(p, generator=g, dtype=DTYPE))
    lam = torch.sort(lam, descending=True).values
    lam[p - n_small :] = eps * lam.mean()
    return _from_spectrum(lam, g)


def _dominant_factor(p, g, kw):
    share = float(_take(kw, "share", lambda: _u(g, 0.8, 0.95)))
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    beta = 1.0 + 0.2 * torch.randn(p, generator=g, dtype=DTYPE)
    psi = _u(g, 0.5, 1.5, p)
    f = share * float(psi.sum()) / ((1.0 - share) * float(beta @ beta))
    sigma = _sym(f * torch.outer(beta, beta)) + torch.diag(psi)
    return sigma, (math.sqrt(f) * beta[:, None], psi.sqrt())


SP500_PERIODS = ("train", "report")


@lru_cache(maxsize=2)
def sp500_calibration(window: int = 504, period: str = "train") -> dict[str, np.ndarray]:
    """Covariances of the 20 S&P 500 stocks over ``window``-day windows of one period.

    Daily log returns from :func:`shrinklab.data.returns.load_returns`.
    ``period="train"`` (the training family): the non-overlapping windows before
    :data:`shrinklab.data.returns.TEST_START`, so the test period never shapes the
    training worlds. ``period="report"`` (the public S&P scenario,
    docs/decisions/0022-public-sp500-scenario-from-2016-2022.md): windows of
    2016-01-01 .. 2022-12-28, which no training world uses, every ``window // 4``
    days (the period holds only three disjoint two-year windows). Returns
    ``{"cov": (W, 20, 20), "start": (W,) positions in the period}``.
    """
    if period not in SP500_PERIODS:
        raise ValueError(f"period must be one of {SP500_PERIODS}, got {period!r}")
    r = data.load_returns()
    if period == "train":
        r, stride = r[r.index < data.TEST_START].to_numpy(), window
    else:
        r = r[(r.index >= data.TEST_START) & (r.index <= data.TEST_END)].to_numpy()
        stride = max(1, window // 4)
    covs = []
    starts = []
    for s in range(0, r.shape[0] - window + 1, stride):
        covs.append(np.cov(r[s : s + window], rowvar=False))
        starts.append(s)
    return {"cov": np.stack(covs), "start": np.asarray(starts)}


def _sp500(p, g, kw):
    period = str(_take(kw, "period", lambda: "train"))
    covs = torch.as_tensor(sp500_calibration(period=period)["cov"], dtype=DTYPE)
    w = int(_take(kw, "window", lambda: _randint(g, 0, covs.shape[0] - 1)))
    c = covs[w]
    q = c.shape[0]
    if p <= q:
        idx = torch.randperm(q, generator=g)[:p]
        sigma = c[idx][:, idx]
        return sigma / torch.diagonal(sigma).mean(), None
    vol = torch.diagonal(c).sqrt()
    corr = c / torch.outer(vol, vol)
    lam, vec = torch.linalg.eigh(corr)
    lam, vec = lam.flip(0), vec.flip(1)
    # Spikes: eigenvalues above 1.5 (≈ the Marchenko–Pastur edge (1+√(20/504))² ≈ 1.44).
    k = max(1, int((lam > 1.5).sum()))
    spikes = (lam[:k] - 1.0) * (p - 1) / (q - 1) + 1.0  # exact for equicorrelation
    bulk_src = lam[k:].clamp_min(1e-3)
    pick = torch.randint(0, bulk_src.shape[0], (p - k,), generator=g)
    bulk = bulk_src[pick] * torch.exp(0.1 * torch.randn(p - k, generator=g, dtype=DTYPE))
    spec = torch.cat([spikes, bulk])
    spec = spec * (p / spec.sum())
    # Market eigenvector: resampled loadings of the first principal component (all one sign).
    v1 = vec[:, 0] * torch.sign(vec[:, 0].sum())
    v1 = v1[torch.randint(0, q, (p,), generator=g)]
    v1 = v1 * torch.exp(0.1 * torch.randn(p, generator=g, dtype=DTYPE))
    a = torch.cat([v1[:, None], torch.randn(p, p - 1, generator=g, dtype=torch.float32)], dim=1)
    qa, _ = _qr_q(a)  # U = Q sign(diag R); the signs cancel in U diag(spec) Uᵀ
    w = qa.T * np.sqrt(spec.numpy())[:, None]
    corr_p = torch.from_numpy(np.matmul(w.T, w))  # syrk: exactly symmetric
    d = torch.diagonal(corr_p).sqrt()
    corr_p = corr_p / torch.outer(d, d)
    vols = vol[torch.randint(0, q, (p,), generator=g)]
    vols = vols * torch.exp(0.1 * torch.randn(p, generator=g, dtype=DTYPE))
    sigma = _sym(corr_p * torch.outer(vols, vols))
    return sigma / torch.diagonal(sigma).mean(), None


_BUILDERS = {
    "factor": _factor,
    "lognormal": _lognormal,
    "spectrum_1_3_10": _spectrum_1_3_10,
    "discrete": _discrete,
    "toeplitz": _toeplitz,
    "block": _block,
    "sp500": _sp500,
    "near_singular": _near_singular,
    "dominant_factor": _dominant_factor,
    **worlds_market.BUILDERS,
}


def _sigma_and_root(
    family: str,
    p: int,
    g: torch.Generator,
    kw: Mapping[str, Any] | None,
    hetero_prob: float,
    want_root: bool = True,
    lower: bool = False,
) -> tuple[torch.Tensor, Any]:
    """``(Σ, root)``: the root is ``L`` (``Σ = LLᵀ``) or ``(B, d)`` (``Σ = BBᵀ + diag(d²)``).

    With ``lower`` a full root is lower triangular: the family's own root if it is
    (AR(1), Cholesky), else the Cholesky factor of ``Σ`` (for :func:`_times_lower_t`).
    Neither draws random numbers, so ``Σ`` and the generator's state do not depend on it.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    if p < 2:
        raise ValueError(f"p must be >= 2, got {p}")
    kw = dict(kw or {})
    hetero = kw.pop("hetero", None)
    sigma, root = _BUILDERS[family](p, g, kw)
    if kw:
        raise ValueError(f"unknown parameters for family {family!r}: {sorted(kw)}")
    if hetero is None and family in HETERO_FAMILIES and _u(g) < hetero_prob:
        hetero = _u(g, 0.2, 0.8)
    if hetero:
        s = torch.exp(float(hetero) * torch.randn(p, generator=g, dtype=DTYPE))
        sigma = sigma * torch.outer(s, s)  # s_i s_j = s_j s_i: stays exactly symmetric
        if isinstance(root, worlds_market.Shifted):
            root = worlds_market.scale_shifted(root, s)
        elif isinstance(root, tuple):
            root = (s[:, None] * root[0], s * root[1])
        elif root is not None:
            root = s[:, None] * root
    # Every builder returns an exactly symmetric Σ (tested), so no symmetrising pass.
    if not want_root:
        return sigma, None
    if isinstance(root, worlds_market.Shifted):
        return sigma, root
    if root is None or (lower and not isinstance(root, tuple) and not _is_lower(root)):
        root = torch.linalg.cholesky(sigma)
    elif isinstance(root, tuple):
        root = (root[0].contiguous(), root[1].contiguous())
    else:
        root = root.contiguous()
    return sigma, root


def _is_lower(root: torch.Tensor) -> bool:
    """Whether ``root`` is lower triangular (a nonzero first row above the diagonal,
    the usual answer for a full root, is found without scanning the matrix)."""
    return not bool(root[0, 1:].any()) and not bool(root.triu(1).any())


def sample_sigma(
    family: str, p: int, generator: torch.Generator | None = None, **kw: Any
) -> torch.Tensor:
    """One true covariance ``(p, p)`` of ``family`` (see the module docstring).

    Family parameters (``n_factors``, ``sigma_log``, ``rho``, ``n_blocks``,
    ``rho_within``, ``rho_between``, ``n_levels``, ``n_small``, ``eps``, ``share``,
    ``window``) are drawn from ``generator`` when not given; ``hetero=τ`` applies a
    log-normal volatility scale per asset (none by default here).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return _sigma_and_root(family, int(p), g, kw, hetero_prob=0.0, want_root=False)[0]


# --------------------------------------------------------------------------- returns
def _chi2(df: float, size: int, g: torch.Generator) -> torch.Tensor:
    """χ²_df draws, ``df >= 2``: ``2·Gamma(df/2)`` from numpy's gamma sampler (Marsaglia &
    Tsang 2000) on a PCG64 stream seeded by one 62-bit draw of ``g`` (deterministic in ``g``;
    one call instead of a dozen torch ops per sample)."""
    seed = int(torch.randint(0, _SEED_BOUND, (), generator=g, dtype=torch.int64))
    rng = np.random.Generator(np.random.PCG64(seed))
    return torch.from_numpy(2.0 * rng.standard_gamma(df / 2.0, size))


def _times_lower_t(z: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """``z Lᵀ`` for ``z (n, p)`` and a lower-triangular ``L (p, p)``, in place in ``z``.

    One BLAS ``trmm`` (scipy's OpenBLAS) in the dtype of ``z``: half the flops of the
    GEMM ``z @ L.T`` (measured 0.63 ms against 1.1 ms in float32 at n = 1350, p = 200).
    ``z`` is C-contiguous, i.e. ``zᵀ`` in Fortran order, so ``Xᵀ = L zᵀ`` is computed
    on the same memory.
    """
    from scipy.linalg import blas

    trmm = blas.strmm if z.dtype == torch.float32 else blas.dtrmm
    zt = z.numpy().T  # Fortran-ordered (p, n)
    at = L.to(z.dtype).numpy().T  # Fortran-ordered Lᵀ (upper triangular)
    out = trmm(1.0, at, zt, side=0, lower=0, trans_a=1, overwrite_b=1)
    if not np.shares_memory(out, zt):  # pragma: no cover - f2py made a copy
        z.copy_(torch.from_numpy(out.T))
    return z


def _draw_returns(
    roots: list,
    n: int,
    dfs: torch.Tensor,
    gens: list,
    normal_dtype,
    lower: bool = False,
    x_dtype: torch.dtype = DTYPE,
) -> torch.Tensor:
    """``X[i] = (diag(scale_i) Z_i) L_iᵀ`` per sample, computed in ``normal_dtype``.

    With the default ``float32`` the product is single precision (2× faster than
    float64) upcast to float64: ``X`` then has covariance ``Σ`` up to the float32
    rounding of ``L`` (~1e-7 relative, far below any sampling error); ``float64`` is
    exact.  With ``lower`` (every full root lower triangular, see
    :func:`_sigma_and_root`) the product is one ``trmm`` (:func:`_times_lower_t`,
    half the flops of a GEMM).

    A root is a ``p × p`` matrix ``L`` (``Σ = L Lᵀ``) or a factor pair ``(B, d)``
    (``Σ = B Bᵀ + diag(d²)``, ``X = Z_f Bᵀ + Z_e diag(d)``: ``O(npk)`` instead of
    ``O(np²)``).

    One GEMM per sample on freshly allocated (64-byte aligned) operands, on purpose:
    a batched call, or a call on a slice at another memory offset, may take a
    different BLAS path, and :func:`regenerate` must reproduce a sample bit-exactly
    whatever batch it came from.
    """
    roots = [worlds_market.draw_root(r) for r in roots]
    p = _root_dim(roots[0])
    x = torch.empty(len(roots), n, p, dtype=x_dtype)
    for i, g in enumerate(gens):
        root = roots[i]
        if isinstance(root, worlds_market.Bootstrap):  # resampled real returns: no df
            x[i] = worlds_market.bootstrap_returns(root, n, g, normal_dtype)
            continue
        k = root[0].shape[1] if isinstance(root, tuple) else 0
        z = torch.randn(n, k + p, generator=g, dtype=normal_dtype)
        nu = float(dfs[i])
        if math.isfinite(nu):  # Student-t: scale the rows of z (same law as scaling x)
            z.mul_(torch.sqrt((nu - 2.0) / _chi2(nu, n, g)).to(normal_dtype)[:, None])
        if isinstance(root, tuple):
            xi = torch.matmul(z[:, :k], root[0].to(normal_dtype).T)
            xi.addcmul_(z[:, k:], root[1].to(normal_dtype))
        elif lower:
            xi = _times_lower_t(z, root)
        else:
            xi = torch.matmul(z, root.to(normal_dtype).T)
        x[i] = xi  # upcast to x_dtype (float64 by default) in the copy
    return x


def _root_dim(root: Any) -> int:
    if isinstance(root, worlds_market.Bootstrap):
        return root.weights.shape[0]
    return root[1].shape[0] if isinstance(root, tuple) else root.shape[0]


def _build(
    p: int,
    n: int,
    families: list[str],
    dfs: torch.Tensor,
    seeds: torch.Tensor,
    *,
    hetero_prob: float,
    normal_dtype: str,
    family_kw: Mapping[str, Any] | None = None,
    x_dtype: torch.dtype = DTYPE,
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """``(Σ (B, p, p), X (B, n, p), roots)``: each sample from its own seed; ``roots[i]``
    is the root of ``Σ_i`` that ``X_i`` was drawn with (see :func:`_sigma_and_root`)."""
    sigmas = torch.empty(len(families), p, p, dtype=DTYPE)
    roots = []
    gens = []
    lower = normal_dtype == "float32"  # the training draws: triangular roots, trmm
    for i, fam in enumerate(families):
        g = torch.Generator().manual_seed(int(seeds[i]))
        gens.append(g)
        s, r = _sigma_and_root(fam, p, g, family_kw, hetero_prob, lower=lower)
        sigmas[i] = s
        roots.append(r)
    x = _draw_returns(roots, n, dfs, gens, getattr(torch, normal_dtype), lower, x_dtype)
    return sigmas, x, roots


# --------------------------------------------------------------------------- batches
@dataclass
class SyntheticBatch:
    """Samples sharing ``(p, n)``.

    ``sigma (B,p,p)``, ``X (B,n,p)`` float64; ``family`` names; ``df (B,)`` (``inf``
    = Gaussian); ``sample_seed (B,)`` int64; ``difficulty (B,)`` in ``[0, 1]``;
    ``short`` whether the batch is a very-short-sample batch.  ``roots`` is ``None``
    except for the training-set builder's batches (``build_planned_batch(...,
    keep_roots=True)``): then ``roots[i]`` is the root ``X_i`` was drawn with, a
    lower-triangular ``L`` (``Σ_i = LLᵀ``) or factors ``(B, d)`` (``Σ_i = BBᵀ + diag(d²)``),
    from which the builder gets ``uᵀΣu`` cheaply (:func:`shrinklab.data.dataset.fsopt_loss_from_eigh`).
    """

    sigma: torch.Tensor
    X: torch.Tensor
    family: list[str]
    df: torch.Tensor
    sample_seed: torch.Tensor
    difficulty: torch.Tensor
    p: int
    n: int
    short: bool = False
    roots: list | None = None

    @property
    def seed(self) -> torch.Tensor:
        """Alias of ``sample_seed`` (the contract's name)."""
        return self.sample_seed

    def __len__(self) -> int:
        return len(self.family)


def difficulty_score(
    p: int | torch.Tensor,
    n: int | torch.Tensor,
    df: torch.Tensor | float,
    edge: torch.Tensor | bool,
    config: SyntheticConfig | Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Curriculum difficulty in ``[0, 1]``: ``0.5·r + 0.3·t + 0.2·e`` (module docstring)."""
    cfg = as_config(config)
    ratio = torch.as_tensor(p, dtype=DTYPE) / torch.as_tensor(n, dtype=DTYPE)
    lo, hi = math.log(cfg.ratio_min), math.log(cfg.ratio_max)
    r = ((torch.log(ratio) - lo) / max(hi - lo, 1e-12)).clamp(0.0, 1.0)
    df = torch.as_tensor(df, dtype=DTYPE)
    t = (3.0 / df).clamp(0.0, 1.0)
    e = torch.as_tensor(edge, dtype=DTYPE)
    return 0.5 * r + 0.3 * t + 0.2 * e


def _loguniform(g: torch.Generator, lo: float, hi: float, size: int | None = None):
    if size is None:
        return math.exp(_u(g, math.log(lo), math.log(hi)))
    return torch.exp(_u(g, math.log(lo), math.log(hi), size))


def draw_sizes(g: torch.Generator, cfg: SyntheticConfig) -> tuple[int, int, bool]:
    """One batch's ``(p, n, short)`` from the config's size distribution."""
    short = _u(g) < cfg.short_prob
    ratio = _loguniform(g, cfg.ratio_min, cfg.ratio_max)
    if short:
        n = _randint(g, *SHORT_N_RANGE)
        p = min(cfg.p_max, max(cfg.p_min, round(ratio * n)))
    else:
        p = min(cfg.p_max, max(cfg.p_min, round(_loguniform(g, cfg.p_min, cfg.p_max + 0.5))))
        n = max(cfg.n_min, round(p / ratio))
    return int(p), int(n), bool(short)


@dataclass(frozen=True)
class BatchPlan:
    """The batch-level draws of one :class:`SyntheticBatch` (everything but Σ and X).

    Cheap to draw and to send to another process; :func:`build_batch` turns it
    into the batch (:func:`generate_batches` = :func:`plan_batches` + :func:`build_batch`).
    """

    p: int
    n: int
    short: bool
    families: tuple[str, ...]
    df: torch.Tensor
    sample_seed: torch.Tensor


def plan_batches(
    n_samples: int, seed: int, config: SyntheticConfig | Mapping[str, Any] | None = None
) -> Iterator[BatchPlan]:
    """The :class:`BatchPlan` s of ``generate_batches(n_samples, seed, config)``, in order."""
    cfg = as_config(config)
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    master = torch.Generator().manual_seed(int(seed))
    names = [f for f in REGULAR_FAMILIES if cfg.family_weights.get(f, 0.0) > 0]
    weights = torch.tensor([float(cfg.family_weights[f]) for f in names], dtype=DTYPE)
    remaining = int(n_samples)
    while remaining > 0:
        b = min(cfg.batch_size, remaining)
        remaining -= b
        p, n, short = draw_sizes(master, cfg)
        fam_idx = torch.multinomial(weights, b, replacement=True, generator=master)
        families = [names[i] for i in fam_idx.tolist()]
        edge = torch.rand(b, generator=master, dtype=DTYPE) < cfg.edge_prob
        edge_pick = torch.randint(0, len(EDGE_FAMILIES), (b,), generator=master)
        for i in torch.nonzero(edge).flatten().tolist():
            families[i] = EDGE_FAMILIES[int(edge_pick[i])]
        heavy = torch.rand(b, generator=master, dtype=DTYPE) < cfg.tail_prob
        dfs = torch.where(
            heavy,
            _loguniform(master, cfg.df_min, cfg.df_max, b),
            torch.tensor(math.inf, dtype=DTYPE),
        )
        seeds = torch.randint(0, _SEED_BOUND, (b,), generator=master, dtype=torch.int64)
        yield BatchPlan(p, n, short, tuple(families), dfs, seeds)


def build_batch(
    plan: BatchPlan, config: SyntheticConfig | Mapping[str, Any] | None = None
) -> SyntheticBatch:
    """Draw Σ and X of a :class:`BatchPlan` (each sample from its own seed)."""
    return build_planned_batch(plan, as_config(config), DTYPE)


def build_planned_batch(
    plan: BatchPlan, cfg: SyntheticConfig, x_dtype: torch.dtype, keep_roots: bool = False
) -> SyntheticBatch:
    """:func:`build_batch` with ``X`` stored in ``x_dtype`` (and the roots with ``keep_roots``).

    ``x_dtype = torch.float32`` with the default float32 normals stores exactly the
    values of :func:`build_batch`'s float64 ``X`` (they are float32 products) in half
    the memory; the training-set builder upcasts them piece by piece, in cache.
    ``keep_roots`` keeps the roots of the training draws (float32 normals: every full
    root lower triangular) in :attr:`SyntheticBatch.roots`.
    """
    if x_dtype == torch.float32 and cfg.normal_dtype != "float32":
        x_dtype = DTYPE  # float64 draws do not fit in float32
    families = list(plan.families)
    sigma, x, roots = _build(
        plan.p,
        plan.n,
        families,
        plan.df,
        plan.sample_seed,
        hetero_prob=cfg.hetero_prob,
        normal_dtype=cfg.normal_dtype,
        x_dtype=x_dtype,
    )
    is_edge = torch.tensor([f in EDGE_FAMILIES or plan.short for f in families])
    return SyntheticBatch(
        sigma=sigma,
        X=x,
        family=families,
        df=plan.df,
        sample_seed=plan.sample_seed,
        difficulty=difficulty_score(plan.p, plan.n, plan.df, is_edge, cfg),
        p=plan.p,
        n=plan.n,
        short=plan.short,
        roots=[worlds_market.target_root(r) for r in roots]
        if keep_roots and cfg.normal_dtype == "float32"
        else None,
    )


def generate_batches(
    n_samples: int, seed: int, config: SyntheticConfig | Mapping[str, Any] | None = None
) -> Iterator[SyntheticBatch]:
    """Yield :class:`SyntheticBatch` es (``config.batch_size`` samples each, last one smaller)
    totalling ``n_samples`` draws from the distribution of worlds in ``config``."""
    cfg = as_config(config)
    for plan in plan_batches(n_samples, seed, cfg):
        yield build_batch(plan, cfg)


def regenerate(
    sample_seed: int,
    p: int,
    n: int,
    family: str,
    df: float = math.inf,
    config: SyntheticConfig | Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rebuild one sample of :func:`generate_batches`: ``(sigma (p,p), X (n,p))``.

    Bit-exact with the same torch build and intra-op thread count
    (``torch.get_num_threads()``); with another thread count BLAS may sum in another
    order and the values agree to ~1e-14 relative.
    """
    cfg = as_config(config)
    sigma, x, _ = _build(
        int(p),
        int(n),
        [family],
        torch.tensor([float(df)], dtype=DTYPE),
        torch.tensor([int(sample_seed)]),
        hetero_prob=cfg.hetero_prob,
        normal_dtype=cfg.normal_dtype,
    )
    return sigma[0], x[0]


# --------------------------------------------------------------------------- curriculum
def curriculum_order(difficulty: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Indices sorting samples from easy to hard (stable, so ties keep their order)."""
    d = torch.as_tensor(np.asarray(difficulty), dtype=DTYPE).flatten()
    return torch.argsort(d, stable=True)


def progressive_sizes(p_max: int = 200, n_stages: int = 4, p_start: int = 20) -> list[int]:
    """Caps on ``p`` per training stage, geometric from ``p_start`` to ``p_max``.

    Progressive resizing (the training specification's "Progressive Resizing" acceleration): stage ``s`` trains
    on samples with ``p <= progressive_sizes(...)[s]``; the last stage sees all.
    """
    if n_stages < 1 or p_start < 1 or p_max < p_start:
        raise ValueError("need n_stages >= 1 and 1 <= p_start <= p_max")
    if n_stages == 1:
        return [int(p_max)]
    r = (p_max / p_start) ** (1.0 / (n_stages - 1))
    caps = [round(p_start * r**s) for s in range(n_stages)]
    caps[-1] = int(p_max)
    return caps


# --------------------------------------------------------------------------- evaluation grid
def make_scenario(
    spec: Mapping[str, Any], n_reps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo replications of one evaluation scenario: ``(sigma (R,p,p), X (R,n,p))``.

    ``spec`` holds ``family``, ``p``, ``n``, optionally ``df`` (``inf``/absent =
    Gaussian; Student-t scaled to ``Cov = Σ`` otherwise), ``fixed_sigma`` (default
    ``False``: every replication draws a fresh Σ of the family, e.g. a new random
    basis; ``True``: one Σ for all), and the family's parameters (defaults in
    :data:`SCENARIO_DEFAULTS`; ``hetero=τ`` for per-asset volatility scaling, off by
    default). Example: ``{"family": "spectrum_1_3_10", "p": 200, "n": 100}``.
    """
    spec = dict(spec)
    try:
        family, p, n = spec.pop("family"), int(spec.pop("p")), int(spec.pop("n"))
    except KeyError as err:
        raise ValueError(f"scenario spec needs 'family', 'p' and 'n' (missing {err})") from None
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    if n < 2 or p < 2 or n_reps < 1:
        raise ValueError(f"need p >= 2, n >= 2, n_reps >= 1; got p={p}, n={n}, n_reps={n_reps}")
    df = spec.pop("df", None)
    df = math.inf if df is None else float(df)
    if df <= 2.0:
        raise ValueError(f"df must be > 2 for a finite covariance, got {df}")
    fixed = bool(spec.pop("fixed_sigma", False))
    kw = {**SCENARIO_DEFAULTS.get(family, {}), **spec}
    g = torch.Generator().manual_seed(int(seed))
    seeds = torch.randint(0, _SEED_BOUND, (n_reps,), generator=g, dtype=torch.int64)
    dfs = torch.full((n_reps,), df, dtype=DTYPE)
    sigma, x, _ = _build(
        p, n, [family] * n_reps, dfs, seeds, hetero_prob=0.0, normal_dtype="float64", family_kw=kw
    )
    if fixed:
        s0, r0 = _sigma_and_root(family, p, torch.Generator().manual_seed(int(seeds[0])), kw, 0.0)
        gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
        x = _draw_returns([r0] * n_reps, n, dfs, gens, DTYPE)
        sigma = s0.expand(n_reps, p, p).clone()
    return sigma, x
