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
estimation-window Σ, the returned Σ is the holding period's), ``resampled`` (block
bootstrap of real pre-2010 returns), ``resampled_forward`` (the same, with the
covariance of the days that follow as the truth), ``diversified`` (funds and ETFs: a
dominant market factor, dense style factors, little idiosyncratic variance) and
``fund_portfolios`` (long-only portfolios of a latent stock market with a small tracking
noise): documented there.

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
and one GEMM each (see :func:`shrinklab.data.sampling.draw_returns` for why not one batched GEMM).

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

Modules
-------
This module holds the configuration, the batch plans, the curriculum and the
evaluation scenarios; the covariance families and :func:`sample_sigma` live in
:mod:`shrinklab.data.families`, the returns draws in :mod:`shrinklab.data.sampling`,
the random-draw helpers in :mod:`shrinklab.data.draws` (the family names and
:func:`sample_sigma` stay importable from here).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from shrinklab.data import worlds_market
from shrinklab.data.draws import DTYPE, SEED_BOUND, loguniform, randint, uniform
from shrinklab.data.families import (
    BASE_FAMILIES,
    EDGE_FAMILIES,
    FAMILIES,
    HETERO_FAMILIES,
    REGULAR_FAMILIES,
    sample_sigma,
    sigma_and_root,
    sp500_calibration,
    spectrum_1_3_10,
    stored_family_names,
)
from shrinklab.data.sampling import build_worlds, draw_returns

__all__ = [
    "BASE_FAMILIES",
    "DTYPE",
    "EDGE_FAMILIES",
    "FAMILIES",
    "HETERO_FAMILIES",
    "REGULAR_FAMILIES",
    "SCENARIO_DEFAULTS",
    "SHORT_N_RANGE",
    "BatchPlan",
    "SyntheticBatch",
    "SyntheticConfig",
    "as_config",
    "build_batch",
    "build_planned_batch",
    "curriculum_order",
    "difficulty_score",
    "draw_sizes",
    "generate_batches",
    "make_scenario",
    "plan_batches",
    "progressive_sizes",
    "regenerate",
    "sample_sigma",
    "sp500_calibration",
    "spectrum_1_3_10",
    "stored_family_names",
]


SHORT_N_RANGE: tuple[int, int] = (10, 20)


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


def draw_sizes(g: torch.Generator, cfg: SyntheticConfig) -> tuple[int, int, bool]:
    """One batch's ``(p, n, short)`` from the config's size distribution."""
    short = uniform(g) < cfg.short_prob
    ratio = loguniform(g, cfg.ratio_min, cfg.ratio_max)
    if short:
        n = randint(g, *SHORT_N_RANGE)
        p = min(cfg.p_max, max(cfg.p_min, round(ratio * n)))
    else:
        p = min(cfg.p_max, max(cfg.p_min, round(loguniform(g, cfg.p_min, cfg.p_max + 0.5))))
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
            loguniform(master, cfg.df_min, cfg.df_max, b),
            torch.tensor(math.inf, dtype=DTYPE),
        )
        seeds = torch.randint(0, SEED_BOUND, (b,), generator=master, dtype=torch.int64)
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
    sigma, x, roots = build_worlds(
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
    sigma, x, _ = build_worlds(
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
    seeds = torch.randint(0, SEED_BOUND, (n_reps,), generator=g, dtype=torch.int64)
    dfs = torch.full((n_reps,), df, dtype=DTYPE)
    sigma, x, _ = build_worlds(
        p, n, [family] * n_reps, dfs, seeds, hetero_prob=0.0, normal_dtype="float64", family_kw=kw
    )
    if fixed:
        s0, r0 = sigma_and_root(family, p, torch.Generator().manual_seed(int(seeds[0])), kw, 0.0)
        gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
        x = draw_returns([r0] * n_reps, n, dfs, gens, DTYPE)
        sigma = s0.expand(n_reps, p, p).clone()
    return sigma, x
