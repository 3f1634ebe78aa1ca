"""Covariance families: the true ``Σ`` of a synthetic world and its root.

Each family is a builder ``(p, g, kw) -> (Σ, root)`` drawing from the generator ``g``;
the families, their parameters and the papers they come from are documented in
:mod:`shrinklab.data.synthetic` (its "Covariance families", "Market-like families",
"Edge-case families" and "Heterogeneous variances" sections). The market-like builders
live in :mod:`shrinklab.data.worlds_market`. :func:`sigma_and_root` is the one entry
point the sample builder (:mod:`shrinklab.data.sampling`) uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.linalg
import torch

from shrinklab.data import returns as data
from shrinklab.data import worlds_market
from shrinklab.data.draws import DTYPE, from_spectrum, pop_param, qr_q, randint, sym, uniform

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
REGULAR_FAMILIES: tuple[str, ...] = (
    BASE_FAMILIES
    + worlds_market.MARKET_FAMILIES
    + worlds_market.FUND_FAMILIES
    + worlds_market.LATER_FAMILIES
)


EDGE_FAMILIES: tuple[str, ...] = ("near_singular", "dominant_factor")


# The market-like families come last so that the integer family codes of stored
# training sets (indices into FAMILIES) keep their meaning.
FAMILIES: tuple[str, ...] = (
    BASE_FAMILIES
    + EDGE_FAMILIES
    + worlds_market.MARKET_FAMILIES
    + worlds_market.FUND_FAMILIES
    + worlds_market.LATER_FAMILIES
)

# Families registered after training sets were first stored: a set lists them in its
# ``family_names`` only when it holds one of their worlds (:func:`stored_family_names`),
# so the files of sets without them stay byte-identical.
LATE_FAMILIES: tuple[str, ...] = worlds_market.FUND_FAMILIES + worlds_market.LATER_FAMILIES


def stored_family_names(codes: torch.Tensor) -> tuple[str, ...]:
    """The ``family_names`` of a training set with these family codes (into FAMILIES):
    :data:`FAMILIES` without the trailing :data:`LATE_FAMILIES` unless a code needs them."""
    top = int(codes.max()) + 1 if codes.numel() else 0
    return FAMILIES[: max(len(FAMILIES) - len(LATE_FAMILIES), top)]


HETERO_FAMILIES: tuple[str, ...] = (
    "factor",
    "lognormal",
    "discrete",
    "toeplitz",
    "block",
    "near_singular",
    "dominant_factor",
)

#: Range of the log-volatility spread ``τ`` of heterogeneous variances (``τ ~ U(lo, hi)``).
HETERO_TAU: tuple[float, float] = (0.2, 0.8)


# --------------------------------------------------------------------------- families
def _factor(p, g, kw):
    k = int(pop_param(kw, "n_factors", lambda: 1 + randint(g, 0, min(8, p // 5))))
    if k < 1:
        raise ValueError(f"n_factors must be >= 1, got {k}")
    mu = uniform(g, 0.5, 1.2)
    b = torch.zeros(p, k, dtype=DTYPE)
    b[:, 0] = mu + 0.3 * torch.randn(p, generator=g, dtype=DTYPE)
    if k > 1:
        sector = torch.randint(0, k - 1, (p,), generator=g)
        b[torch.arange(p), 1 + sector] = uniform(g, 0.2, 0.7, p)
    psi = uniform(g, 0.3, 1.0, p)
    return sym(b @ b.T) + torch.diag(psi), (b, psi.sqrt())


def _lognormal(p, g, kw):
    s = float(pop_param(kw, "sigma_log", lambda: uniform(g, 0.3, 1.2)))
    if s < 0:
        raise ValueError(f"sigma_log must be >= 0, got {s}")
    lam = torch.exp(s * torch.randn(p, generator=g, dtype=DTYPE))
    return from_spectrum(lam, g)


def spectrum_1_3_10(p: int) -> torch.Tensor:
    """Eigenvalues of the 1/3/10 design (Bai & Silverstein 1998; Ledoit & Wolf 2022): 20 % 1, 40 % 3, 40 % 10."""
    n1 = round(0.2 * p)
    n3 = round(0.4 * p)
    n10 = p - n1 - n3
    return torch.cat([torch.full((n1,), 1.0), torch.full((n3,), 3.0), torch.full((n10,), 10.0)]).to(
        DTYPE
    )


def _spectrum_1_3_10(p, g, kw):
    return from_spectrum(spectrum_1_3_10(p), g)


def _discrete(p, g, kw):
    m = int(pop_param(kw, "n_levels", lambda: randint(g, 2, 4)))
    levels = torch.exp(uniform(g, 0.0, math.log(100.0), m))
    w = -torch.log(uniform(g, 0.0, 1.0, m).clamp_min(1e-300))  # Dirichlet(1) via exponentials
    w = w / w.sum()
    counts = torch.floor(w * p).long()
    counts[torch.argmax(w)] += p - int(counts.sum())
    return from_spectrum(torch.repeat_interleave(levels, counts), g)


def _toeplitz(p, g, kw):
    rho = float(pop_param(kw, "rho", lambda: uniform(g, 0.1, 0.95)))
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
    m = int(pop_param(kw, "n_blocks", lambda: randint(g, 2, max(2, min(10, p // 3)))))
    if m < 1:
        raise ValueError(f"n_blocks must be >= 1, got {m}")
    rw = kw.pop("rho_within", None)
    rw = uniform(g, 0.2, 0.8, m) if rw is None else torch.full((m,), float(rw), dtype=DTYPE)
    rb = kw.pop("rho_between", None)
    rb = uniform(g, 0.0, min(0.2, float(rw.min()))) if rb is None else float(rb)
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
    n_small = int(pop_param(kw, "n_small", lambda: randint(g, 1, max(1, p // 4))))
    eps = float(pop_param(kw, "eps", lambda: math.exp(uniform(g, math.log(1e-6), math.log(1e-3)))))
    if not 1 <= n_small < p or eps <= 0:
        raise ValueError(f"need 1 <= n_small < p and eps > 0, got {n_small}, {eps}")
    lam = torch.exp(0.5 * torch.randn(p, generator=g, dtype=DTYPE))
    lam = torch.sort(lam, descending=True).values
    lam[p - n_small :] = eps * lam.mean()
    return from_spectrum(lam, g)


def _dominant_factor(p, g, kw):
    share = float(pop_param(kw, "share", lambda: uniform(g, 0.8, 0.95)))
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    beta = 1.0 + 0.2 * torch.randn(p, generator=g, dtype=DTYPE)
    psi = uniform(g, 0.5, 1.5, p)
    f = share * float(psi.sum()) / ((1.0 - share) * float(beta @ beta))
    sigma = sym(f * torch.outer(beta, beta)) + torch.diag(psi)
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
        r, stride = data.before_test(r).to_numpy(), window
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
    period = str(pop_param(kw, "period", lambda: "train"))
    covs = torch.as_tensor(sp500_calibration(period=period)["cov"], dtype=DTYPE)
    w = int(pop_param(kw, "window", lambda: randint(g, 0, covs.shape[0] - 1)))
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
    qa, _ = qr_q(a)  # U = Q sign(diag R); the signs cancel in U diag(spec) Uᵀ
    w = qa.T * np.sqrt(spec.numpy())[:, None]
    corr_p = torch.from_numpy(np.matmul(w.T, w))  # syrk: exactly symmetric
    d = torch.diagonal(corr_p).sqrt()
    corr_p = corr_p / torch.outer(d, d)
    vols = vol[torch.randint(0, q, (p,), generator=g)]
    vols = vols * torch.exp(0.1 * torch.randn(p, generator=g, dtype=DTYPE))
    sigma = sym(corr_p * torch.outer(vols, vols))
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


def sigma_and_root(
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
    if hetero is None and family in HETERO_FAMILIES and uniform(g) < hetero_prob:
        hetero = uniform(g, *HETERO_TAU)
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
    return sigma_and_root(family, int(p), g, kw, hetero_prob=0.0, want_root=False)[0]
