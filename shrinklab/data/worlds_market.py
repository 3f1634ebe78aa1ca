"""Training worlds closer to real equity markets (registered in :mod:`shrinklab.data.synthetic`).

Six families, each a builder ``(p, g, kw) -> (Σ, root)`` like the other families of
:data:`shrinklab.data.synthetic.FAMILIES`; every Σ is scaled to ``tr Σ / p = 1``.

``market_sectors``
    A dominant market factor plus sector blocks (Sharpe 1963; King 1966; Fama & French
    1993): ``Σ = f ββᵀ + Γ Γᵀ + diag(ψ)`` with betas ``βᵢ = max(0.1, 1 + 0.3 zᵢ)``,
    ``2..min(12, max(2, p // 4))`` sectors with Dirichlet(1) sizes (every sector at
    least one asset), sector loadings ``U(0.5, 1.5)`` times a per-sector scale and
    idiosyncratic variances log-normal ``exp(2 s zᵢ)``, ``s ~ U(0.2, 0.5)`` (daily
    idiosyncratic volatilities of large caps spread by a factor of about 2–3). The
    *shares* of the total variance ``tr Σ`` are exact per draw: market
    ``h ~ U(0.2, 0.5)`` (the first principal component of daily S&P 500 stock returns
    explains 25–50 % of their variance), sectors ``s ~ U(0.05, 0.2)``, the rest
    idiosyncratic. Averages over draws: market 0.35, sectors 0.125.
``regime_shift``
    A non-stationary world: the returns ``X`` are drawn from a ``market_sectors``
    world ``Σ_est`` (the estimation window) and the target is the covariance of the
    *holding period* ``Σ_hold``, what an out-of-sample portfolio pays for. ``Σ_hold``
    moves from ``Σ_est`` by (i) a common volatility scale ``c = exp(0.3 z)`` (the
    mean reversion of a GARCH variance between windows, Bollerslev 1986), (ii) a
    correlation regime shift: the market loading scaled by ``exp(0.4 z)`` (correlations
    rise in crises: Longin & Solnik 2001), (iii) sector loadings and idiosyncratic
    volatilities each drifting by ``exp(0.2 zᵢ)``. Volatility clustering *inside*
    the estimation window is not modelled (heavy tails come from the Student-t draws).
``resampled``
    Semi-synthetic worlds from the real daily returns of the 20 stocks
    (:func:`shrinklab.data.returns.load_returns`) *before* :data:`RESAMPLE_END`
    (2010-01-01, so that pre-2016 validation windows from 2010 on never meet their own
    returns in training; the test period starts 2016). A population is a random
    window of ``T ~ U{250..750}`` days, centred. The universe is a random subset of
    ``p`` stocks (probability 1/2 when ``p <= 20``) or ``p`` random long-only
    portfolios ``W`` (rows Dirichlet(0.5)) with portfolio-specific noise of variance
    ``u ~ U(0.02, 0.2)`` times the mean portfolio variance (so that ``p > 20`` stays
    positive definite). ``X`` is a circular block bootstrap (Politis & Romano 1992)
    of the population rows, blocks of ``U{5..20}`` days, times ``Wᵀ`` plus Gaussian
    noise; every bootstrap row is uniform over the population, so
    ``Cov(x) = Σ = W C Wᵀ + diag(d²)`` exactly, ``C`` the population covariance
    (ddof 0): the truth is the covariance of the resampling population. The return
    draw ignores the sample's Student-t ``df`` (real returns bring their own tails).
``resampled_forward``
    A ``resampled`` world whose truth is the covariance of the real days that *follow*
    the population window (``h ~ U{42..126}`` days, :data:`FORWARD_HORIZON`; the
    population and those days both before :data:`RESAMPLE_END`), on the population's
    scale, through the same universe ``W`` (and the same noise): ``X`` is bootstrapped
    from one period of the market, and the loss is taken against the next, so the
    worlds' Σ moves between the estimation window and the holding period as the 20
    stocks' did (volatility, correlations and their structure together), where
    ``regime_shift`` moves a synthetic Σ by drawn amounts. Weight 0 in the pipeline
    (docs/decisions/0062-forward-resampled-worlds.md).

``diversified``
    Diversified assets — funds, ETFs, sector and index portfolios: a dominant market
    factor, a few dense style factors and very little idiosyncratic variance (the
    factor models of Sharpe 1963 and Fama & French 1993, where averaging over many
    stocks leaves the factors and diversifies the idiosyncratic part away). Six
    factor ETFs and the S&P 500 index have an average correlation of about 0.83.
    ``Σ = f ββᵀ + Γ Γᵀ + diag(ψ)`` with betas ``βᵢ = max(0.1, 1 + 0.2 zᵢ)`` (diversified
    portfolios have betas close to one), ``k ~ U{1..3}`` style factors with dense
    loadings ``Γᵢⱼ ~ N(0, 1)`` (a style tilts every asset, with either sign) and
    idiosyncratic variances log-normal as in ``market_sectors``. Exact shares of
    ``tr Σ`` per draw: market ``h ~ U(0.5, 0.9)``, styles ``s ~ U(0.05, 0.3)`` capped at
    ``0.99 − h`` so that the idiosyncratic share ``1 − h − s`` is at least 0.01.
    Weight 0 in the pipeline (docs/decisions/0026-diversified-training-worlds.md).

``fund_portfolios``
    Funds that hold many of the same stocks (sector, style and index funds): ``p`` long-only
    portfolios ``W`` (rows Dirichlet(1) over ``m`` of ``q ~ U{p..min(3p, 500)}`` latent
    stocks, ``log m`` uniform from ``log 2`` to ``log q``, sector to broad funds; with
    probability 1/2 the last fund is the equal-weight index) of a
    ``market_sectors`` world of the stocks ``Σ_s``, plus a small tracking noise:
    ``Σ = W Σ_s Wᵀ + diag(d²)``, ``d²`` a share ``u`` of each fund's variance, ``log u ~
    U(log 0.001, log 0.05)``. Averaging leaves little idiosyncratic variance, but what is
    left is not isotropic noise: the small eigen-directions of ``Σ`` are real spreads
    between funds (differences of their holdings), which the sample estimates and the
    linear targets blur (decision 0027's reading of the diversified universes). Weight 0
    in the pipeline (docs/decisions/0063-fund-portfolio-worlds.md).

Roots: ``market_sectors``, ``diversified`` and ``fund_portfolios`` return factors ``(B, d)``
(``Σ = BBᵀ + diag(d²)``);
``regime_shift``, ``resampled`` and ``resampled_forward`` return a :class:`Shifted` root:
``draw`` is what ``X`` is drawn with (factors, or a :class:`Bootstrap`), ``target`` the
factors of the returned Σ (used by the training-set builder for ``uᵀΣu``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd
import torch

from shrinklab.data import returns as data
from shrinklab.data.draws import DTYPE, pop_param, randint, uniform

MARKET_FAMILIES: tuple[str, ...] = ("market_sectors", "regime_shift", "resampled")

#: Families registered after :data:`MARKET_FAMILIES` (weight 0 in the pipeline).
FUND_FAMILIES: tuple[str, ...] = ("diversified",)

#: Registered after :data:`FUND_FAMILIES`, in this order (weight 0 in the pipeline):
#: ``resampled_forward`` (decision 0062), ``fund_portfolios`` (decision 0063).
LATER_FAMILIES: tuple[str, ...] = ("resampled_forward", "fund_portfolios")

#: The resampled family's population ends here (see the module docstring).
RESAMPLE_END = pd.Timestamp("2010-01-01")


@dataclass(frozen=True)
class Bootstrap:
    """A block-bootstrap draw: ``x = rows[idx] Wᵀ + d ⊙ z`` (see :func:`bootstrap_returns`)."""

    rows: torch.Tensor  # (T, q) centred population returns
    weights: torch.Tensor  # (p, q)
    noise: torch.Tensor  # (p,) noise standard deviations
    block: int


@dataclass(frozen=True)
class Shifted:
    """A root whose draw differs from the target: ``X`` from ``draw``, Σ from ``target``."""

    draw: Any
    target: tuple[torch.Tensor, torch.Tensor]


def _factor_sigma(b: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    s = b @ b.T
    s = 0.5 * (s + s.T)
    return s + torch.diag(d * d)


def _normalised(b: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """``(Σ, (B, d))`` rescaled to ``tr Σ / p = 1``."""
    scale = math.sqrt(b.shape[0] / float((b * b).sum() + (d * d).sum()))
    b, d = b * scale, d * scale
    return _factor_sigma(b, d), (b, d)


def _idiosyncratic(g: torch.Generator, p: int) -> torch.Tensor:
    """Log-normal idiosyncratic variances ``exp(2 s zᵢ)``, ``s ~ U(0.2, 0.5)``."""
    disp = uniform(g, 0.2, 0.5)
    return torch.exp(2.0 * disp * torch.randn(p, generator=g, dtype=DTYPE))


def market_sectors_factors(p: int, g: torch.Generator, kw: dict[str, Any]):
    """Factors ``(B (p, 1 + k), d (p,))`` of a ``market_sectors`` world (module docstring)."""
    h = float(pop_param(kw, "market_share", lambda: uniform(g, 0.2, 0.5)))
    s = float(pop_param(kw, "sector_share", lambda: uniform(g, 0.05, 0.2)))
    if not (0 < h and 0 <= s and h + s < 1):
        raise ValueError(f"need 0 < market_share, 0 <= sector_share, sum < 1; got {h}, {s}")
    k = int(pop_param(kw, "n_sectors", lambda: randint(g, 2, min(12, max(2, p // 4)))))
    if not 1 <= k <= p:
        raise ValueError(f"n_sectors must be in [1, p], got {k}")
    beta = (1.0 + 0.3 * torch.randn(p, generator=g, dtype=DTYPE)).clamp_min(0.1)
    # sector sizes: Dirichlet(1) shares of the p - k assets left after one per sector
    e = -torch.log(torch.rand(k, generator=g, dtype=DTYPE))
    extra = torch.multinomial(e / e.sum(), p - k, replacement=True, generator=g) if p > k else None
    sector = torch.cat([torch.arange(k), extra]) if extra is not None else torch.arange(k)
    sector = sector[torch.randperm(p, generator=g)]
    gam = uniform(g, 0.5, 1.5, p) * uniform(g, 0.5, 1.5, k)[sector]
    psi = _idiosyncratic(g, p)
    # exact shares of tr Σ = p: market h, sectors s, idiosyncratic 1 - h - s
    b = torch.zeros(p, 1 + k, dtype=DTYPE)
    b[:, 0] = beta * math.sqrt(h * p / float(beta @ beta))
    b[torch.arange(p), 1 + sector] = gam * math.sqrt(s * p / float(gam @ gam))
    d = (psi * ((1.0 - h - s) * p / float(psi.sum()))).sqrt()
    return b, d


def market_sectors(p: int, g: torch.Generator, kw: dict[str, Any]):
    """``(Σ, (B, d))`` of a ``market_sectors`` world."""
    b, d = market_sectors_factors(p, g, kw)
    return _factor_sigma(b, d), (b, d)


def diversified(p: int, g: torch.Generator, kw: dict[str, Any]):
    """``(Σ, (B, d))`` of a ``diversified`` world (module docstring); ``tr Σ = p``."""
    h = float(pop_param(kw, "market_share", lambda: uniform(g, 0.5, 0.9)))
    s = float(pop_param(kw, "style_share", lambda: min(uniform(g, 0.05, 0.3), 0.99 - h)))
    if not (0 < h and 0 <= s and h + s <= 0.99):
        raise ValueError(f"need 0 < market_share, 0 <= style_share, sum <= 0.99; got {h}, {s}")
    k = int(pop_param(kw, "n_styles", lambda: randint(g, 1, 3)))
    if k < 1:
        raise ValueError(f"n_styles must be >= 1, got {k}")
    beta = (1.0 + 0.2 * torch.randn(p, generator=g, dtype=DTYPE)).clamp_min(0.1)
    gam = torch.randn(p, k, generator=g, dtype=DTYPE)
    psi = _idiosyncratic(g, p)
    b = torch.empty(p, 1 + k, dtype=DTYPE)
    b[:, 0] = beta * math.sqrt(h * p / float(beta @ beta))
    b[:, 1:] = gam * math.sqrt(s * p / float((gam * gam).sum()))
    d = (psi * ((1.0 - h - s) * p / float(psi.sum()))).sqrt()
    return _factor_sigma(b, d), (b, d)


def fund_portfolios(p: int, g: torch.Generator, kw: dict[str, Any]):
    """``(Σ, (B, d))`` of a ``fund_portfolios`` world (module docstring); ``tr Σ = p``."""
    q = int(pop_param(kw, "n_stocks", lambda: randint(g, p, min(3 * p, 500))))
    track = float(pop_param(kw, "tracking_share", lambda: math.exp(uniform(g, *FUND_TRACKING))))
    if q < 2 or not 0 <= track < 1:
        raise ValueError(f"need n_stocks >= 2 and 0 <= tracking_share < 1, got {q}, {track}")
    b_s, d_s = market_sectors_factors(q, g, {})
    w = torch.zeros(p, q, dtype=DTYPE)
    for i in range(p):
        m = min(q, int(math.exp(uniform(g, math.log(2), math.log(q + 1)))))  # 2 .. q, log-uniform
        e = -torch.log(torch.rand(m, generator=g, dtype=DTYPE))  # Dirichlet(1) weights
        w[i, torch.randperm(q, generator=g)[:m]] = e / e.sum()
    if uniform(g) < 0.5:
        w[-1] = 1.0 / q  # an index fund of every stock
    b = torch.cat([w @ b_s, w * d_s], dim=1)  # W Σ_s Wᵀ = (W B_s)(W B_s)ᵀ + (W D_s)(W D_s)ᵀ
    port_var = (b * b).sum(1)
    d = (track / (1.0 - track) * port_var).sqrt()
    return _normalised(b, d)


#: Range of ``log tracking_share`` of ``fund_portfolios``: 0.1 % to 5 % of each fund's variance.
FUND_TRACKING = (math.log(1e-3), math.log(5e-2))


def regime_shift(p: int, g: torch.Generator, kw: dict[str, Any]):
    """``(Σ_hold, Shifted(draw=(B, d) of Σ_est, target=(B', d') of Σ_hold))``."""
    vol_shift = float(pop_param(kw, "vol_shift", lambda: 0.3))
    corr_shift = float(pop_param(kw, "corr_shift", lambda: 0.4))
    drift = float(pop_param(kw, "drift", lambda: 0.2))
    b, d = market_sectors_factors(p, g, kw)
    _, (b, d) = _normalised(b, d)
    c = math.exp(vol_shift * float(torch.randn((), generator=g, dtype=DTYPE)))
    b2 = b.clone()
    b2[:, 0] *= math.exp(corr_shift * float(torch.randn((), generator=g, dtype=DTYPE)))
    b2[:, 1:] *= torch.exp(drift * torch.randn(p, 1, generator=g, dtype=DTYPE))
    d2 = d * torch.exp(drift * torch.randn(p, generator=g, dtype=DTYPE))
    b2, d2 = math.sqrt(c) * b2, math.sqrt(c) * d2
    return _factor_sigma(b2, d2), Shifted(draw=(b, d), target=(b2, d2))


@lru_cache(maxsize=1)
def resampling_returns() -> torch.Tensor:
    """Daily log returns ``(days, 20)`` of the 20 stocks before :data:`RESAMPLE_END`."""
    r = data.load_returns()
    return torch.as_tensor(r[r.index < RESAMPLE_END].to_numpy(), dtype=DTYPE)


def resampled(p: int, g: torch.Generator, kw: dict[str, Any]):
    """``(Σ, Shifted(draw=Bootstrap, target=(W L_C, d)))`` of a ``resampled`` world."""
    r = resampling_returns()
    t = int(pop_param(kw, "length", lambda: randint(g, 250, 750)))
    rows, _ = _population(r, t, 0, g)
    return _resampled_world(p, g, rows, None)


def resampled_forward(p: int, g: torch.Generator, kw: dict[str, Any]):
    """``(Σ_hold, Shifted(draw=Bootstrap of the window, target=(W L_hold, d)))`` of a
    ``resampled_forward`` world: a ``resampled`` world whose truth is the covariance of
    the real days *after* the population window (module docstring)."""
    r = resampling_returns()
    t = int(pop_param(kw, "length", lambda: randint(g, 250, 750)))
    h = int(pop_param(kw, "horizon", lambda: randint(g, *FORWARD_HORIZON)))
    if h < r.shape[1] + 2:
        raise ValueError(f"horizon must be at least {r.shape[1] + 2} days, got {h}")
    rows, after = _population(r, t, h, g)
    return _resampled_world(p, g, rows, after)


#: Range of the ``resampled_forward`` holding period ``h`` in days (2 to 6 months).
FORWARD_HORIZON = (42, 126)


def _population(r: torch.Tensor, t: int, h: int, g: torch.Generator):
    """A random window of ``t`` rows of ``r`` and the ``h`` rows after it, each centred
    (``None`` for ``h = 0``)."""
    days = r.shape[0]
    if not 2 <= t <= days - h:
        raise ValueError(f"need 2 <= length <= {days - h} days, got {t}")
    start = randint(g, 0, days - t - h)
    rows = r[start : start + t]
    after = r[start + t : start + t + h] if h else None
    return rows - rows.mean(0), None if after is None else after - after.mean(0)


def _resampled_world(p: int, g: torch.Generator, rows: torch.Tensor, after: Any):
    """The universe (stocks or noisy long-only portfolios) of a resampled world drawn from
    the centred population ``rows``; its truth is the covariance of ``rows``, or of
    ``after`` (the days that follow) when given, on the same scale."""
    q = rows.shape[1]
    if p <= q and uniform(g) < 0.5:
        w = torch.zeros(p, q, dtype=DTYPE)
        w[torch.arange(p), torch.randperm(q, generator=g)[:p]] = 1.0
        noise_share = 0.0
    else:
        # Dirichlet(0.5) rows: Gamma(1/2) variables are z²/2 for a standard normal z
        gam = torch.randn(p, q, generator=g, dtype=DTYPE) ** 2
        w = gam / gam.sum(1, keepdim=True)
        noise_share = uniform(g, 0.02, 0.2)
    b = w @ _cov_root(rows)
    port_var = (b * b).sum(1)
    d = torch.full((p,), math.sqrt(noise_share * float(port_var.mean())), dtype=DTYPE)
    scale = math.sqrt(p / float(port_var.sum() + (d * d).sum()))
    b, d, w = b * scale, d * scale, w * scale
    block = randint(g, 5, 20)
    if after is not None:
        b = (w @ _cov_root(after)).contiguous()
    return _factor_sigma(b, d), Shifted(draw=Bootstrap(rows, w, d, block), target=(b, d))


def _cov_root(rows: torch.Tensor) -> torch.Tensor:
    """The Cholesky factor of the covariance (ddof 0) of centred ``rows``."""
    cov = rows.T @ rows / rows.shape[0]
    return torch.linalg.cholesky(0.5 * (cov + cov.T))


def bootstrap_returns(
    boot: Bootstrap, n: int, g: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """``(n, p)`` returns: circular blocks of the population rows times ``Wᵀ`` plus noise."""
    t = boot.rows.shape[0]
    n_blocks = -(-n // boot.block)
    starts = torch.randint(0, t, (n_blocks, 1), generator=g)
    idx = ((starts + torch.arange(boot.block)) % t).reshape(-1)[:n]
    x = boot.rows[idx] @ boot.weights.T
    z = torch.randn(n, boot.weights.shape[0], generator=g, dtype=dtype)
    return (x.to(dtype) + z * boot.noise.to(dtype)).contiguous()


def scale_shifted(root: Shifted, s: torch.Tensor) -> Shifted:
    """The root of ``diag(s) Σ diag(s)`` (draw and target) for per-asset scales ``s``."""
    dr = root.draw
    if isinstance(dr, Bootstrap):
        dr = Bootstrap(dr.rows, s[:, None] * dr.weights, s * dr.noise, dr.block)
    else:
        dr = (s[:, None] * dr[0], s * dr[1])
    b, d = root.target
    return Shifted(draw=dr, target=(s[:, None] * b, s * d))


def draw_root(root: Any) -> Any:
    """The root ``X`` is drawn with (``root.draw`` for a :class:`Shifted` root)."""
    return root.draw if isinstance(root, Shifted) else root


def target_root(root: Any) -> Any:
    """The root of the returned Σ (``root.target`` for a :class:`Shifted` root)."""
    return root.target if isinstance(root, Shifted) else root


BUILDERS = {
    "market_sectors": market_sectors,
    "regime_shift": regime_shift,
    "resampled": resampled,
    "diversified": diversified,
    "resampled_forward": resampled_forward,
    "fund_portfolios": fund_portfolios,
}
