"""Pre-tested volatility timing: an estimate's correlations with recency-weighted volatilities.

The shrinkage family ``Σ̂ = S + α Σ_k π_k (T_k − S)`` weighs every day of the window
alike. Volatilities cluster (RiskMetrics, J.P. Morgan 1996), so the volatility part of a
covariance is better read from recent days than the correlation part (the split of
Engle 2002, "Dynamic conditional correlation", JBES 20(3)). This module keeps an
estimate's correlations and rescales its volatilities:

    Σ̂' = D Σ̂ D,   D = diag(exp(f · r_i / 2)),   r_i = log(σ̃²_i / s²_i),

with ``s²_i`` the window's equal-weight variance of asset ``i``, ``σ̃²_i`` the
exponentially weighted one (weights ``2^(−age/h)`` summing to 1, half-life ``h = c · n``
days, the window's mean removed first), and ``f`` the positive-part James–Stein factor
(James & Stein 1961; Efron & Morris 1973, JASA 68)

    f = max(0, 1 − p · v₀ / Σ_i r_i²),   v₀ = (κ̂ − 1) Σ_t (w_t − 1/n)²,

``v₀`` the delta-method variance of ``r_i`` for i.i.d. returns with kurtosis ``κ``
(``κ̂``: the mean over assets of ``m₄ / m₂²``). In a stationary window the log-ratios
are no larger than their sampling noise, ``f`` is 0 and ``Σ̂`` is returned unchanged
(a pre-test: the rescaling switches itself off); after a volatility shift common to
many assets ``f`` approaches 1. A constant asset (zero variance up to the rounding of
demeaning) keeps ``r_i = 0`` and counts in neither ``p`` nor ``κ̂``.

That is the *pooled* pre-test. It treats the ``r_i`` as independent; under a common daily
scale (a multivariate t; market-wide volatility) they move together and ``Σ r_i²`` passes
its threshold by chance more often than it assumes. The *split* pre-test
(:func:`split_log_scales`, decision 0048, the deployed one) tests the common part ``r̄``
and the asset-specific part ``r − r̄`` apart, each against a delta-method null variance
that includes the co-movement of the squares. The common part multiplies ``Σ̂`` by one
number: it moves the level of every variance forecast and leaves minimum-variance weights
unchanged. The *relative* pre-test is the split one without the common part (only the
assets' volatilities relative to each other are timed; decision 0050 weighs the two).

Research log, "Exploration: recency-weighted volatilities"; adopted for the deployed
estimator by decision 0047 (``docs/decisions/0047-pre-tested-volatility-timing.md``). A
model file carries it as ``extra["volatility_timing"]`` (the half-life ratio ``c``);
:func:`finish_covariance` is the one place where a model's covariance gets it, called by
every path that turns a model into a covariance (``shrinklab.models.estimate``, the
backtest's learned estimator, the scenario grids).

Backend-generic (:mod:`shrinklab.core.xp`): torch tensors and NumPy arrays, batched
``(B, n, p)`` or single ``(n, p)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from shrinklab.core.xp import NUMPY, ops

__all__ = [
    "DEFAULT_HALF_LIFE_RATIO",
    "COMMON_THRESHOLD",
    "EXTRA_KEY",
    "PRETESTS",
    "PRETEST_KEY",
    "split_log_scales",
    "timing_of_extra",
    "volatility_pretest_of",
    "finish_covariance",
    "volatility_timing_of",
    "ewma_weights",
    "james_stein_factor",
    "log_variance_ratios",
    "timing_scales",
    "apply_volatility_timing",
]

DEFAULT_HALF_LIFE_RATIO = 1.0
"""Half-life of the weights as a multiple of the window length ``n`` (``c`` above)."""

EXTRA_KEY = "volatility_timing"
"""The key of a model file's ``extra`` that holds its half-life ratio (absent: no timing)."""

PRETEST_KEY = "volatility_pretest"
"""The key of a model file's ``extra`` that names its pre-test (absent: ``"pooled"``)."""

PRETESTS = ("pooled", "split", "relative")
"""``pooled``: one James–Stein factor for all log variance ratios (decision 0047);
``split``: the common part and the asset-specific part tested apart
(:func:`split_log_scales`, decision 0048, deployed); ``relative``: the split one without
its common part (decision 0050, not adopted)."""

COMMON_THRESHOLD = 4.0
"""The split pre-test lets the common part through in full only when ``r̄²`` is well above
``threshold`` times its null variance (4: two null standard deviations)."""


def ewma_weights(n: int, half_life: float, like: Any = None) -> Any:
    """Weights ``(n,)`` of a window's days, oldest first: ``2^(−age/half_life)`` (age 0
    for the last day), summing to 1; float64, NumPy when ``like`` is a NumPy array,
    else torch (on ``like``'s device)."""
    if int(n) < 2 or not float(half_life) > 0:
        raise ValueError(f"need n >= 2 and half_life > 0, got n={n}, half_life={half_life}")
    age = np.arange(int(n) - 1, -1, -1, dtype=np.float64)
    w = np.power(0.5, age / float(half_life))
    w /= w.sum()
    if isinstance(like, np.ndarray):
        return w
    device = like.device if isinstance(like, torch.Tensor) else None
    return torch.as_tensor(w, dtype=torch.float64, device=device)


def _squares(X: Any) -> tuple[Any, Any, Any, Any]:
    """``(y (…, n, p), live (…, p), safe (…, p), p_live (…, 1))``: the squared demeaned
    returns, which columns are live (not constant up to the rounding of demeaning,
    ``n · eps · max|x|``), the equal-weight variances with 1 for constant columns, and the
    number of live columns."""
    xp = ops(X)
    n = X.shape[-2]
    y = xp.square(X - xp.mean(X, -2, keepdim=True))
    m2 = xp.mean(y, -2)
    eps, _ = xp.finfo(X)
    live = m2 > xp.square(n * eps * xp.amax(xp.maximum(X, -X), -2))
    one, zero = xp.ones_like(m2), xp.zeros_like(m2)
    safe = xp.where(live, m2, one)
    return y, live, safe, xp.sum(xp.where(live, one, zero), -1, keepdim=True)


def log_variance_ratios(X: Any, w: Any) -> tuple[Any, Any, Any]:
    """``(r (…, p), v0 (…, 1), p_live (…, 1))`` for returns ``X (…, n, p)`` and day weights
    ``w (n,)``: the log of each column's weighted over equal-weight variance, its i.i.d.
    sampling variance ``(κ̂ − 1) Σ (w − 1/n)²`` (``κ̂`` averaged over the live columns) and
    the number of live columns. A column is constant (not live; ``r = 0``) when its
    demeaned values are no larger than the rounding error of demeaning,
    ``n · eps · max|x|``: a column of one repeated value whose mean rounds off is
    constant in every backend."""
    xp = ops(X)
    n = X.shape[-2]
    y, live, safe, p_live = _squares(X)
    zero = xp.zeros_like(safe)
    weighted = xp.sum(w[:, None] * y, -2)
    r = xp.where(live, xp.log(xp.where(live, weighted, safe) / safe), zero)
    excess = xp.where(live, xp.mean(xp.square(y), -2) / xp.square(safe) - 1.0, zero)
    spread = float(((w - 1.0 / n) ** 2).sum())
    v0 = xp.sum(excess, -1, keepdim=True) / xp.clamp_min(p_live, 1.0) * spread
    return r, v0, p_live


def james_stein_factor(r: Any, v0: Any, p: Any = None) -> Any:
    """Positive-part James–Stein factor ``max(0, 1 − p·v0 / Σ r²)`` per row, ``(…, 1)``
    (0 where every ``r`` is 0); ``p``: the number of live columns (default: all)."""
    xp = ops(r)
    ss = xp.sum(xp.square(r), -1, keepdim=True)
    p = r.shape[-1] if p is None else p
    f = xp.clamp_min(1.0 - p * v0 / xp.clamp_min(ss, 1e-300), 0.0)
    return xp.where(ss > 0, f, xp.zeros_like(ss))


def split_log_scales(
    X: Any, w: Any, threshold: float = COMMON_THRESHOLD, common: bool = True
) -> Any:
    """``log D`` ``(…, p)`` of the *split* pre-test (module docstring) for returns
    ``X (…, n, p)`` and day weights ``w (n,)``: the common part ``r̄`` of the log variance
    ratios passes by ``max(0, 1 − threshold · v_c / r̄²)`` and the asset-specific part
    ``e = r − r̄`` by ``max(0, 1 − V_e / Σ e²)``, with the i.i.d. null variances
    ``v_c = s · mean_t z̄_t²`` and ``V_e = s · (Σ_i mean_t z_ti² − p · mean_t z̄_t²)``
    (``z_ti = x_ti² / m₂ᵢ − 1`` the normalised squares of the demeaned live columns,
    ``z̄_t`` their mean over assets, ``s = Σ_t (w_t − 1/n)²``): the delta-method
    variances of ``r̄`` and of ``e`` when the days are i.i.d. but the assets' squares move
    together (a common daily scale, as in a multivariate t), which the pooled pre-test
    ignores. ``common=False`` drops the common part (the *relative* pre-test). Constant
    columns keep 0."""
    xp = ops(X)
    n = X.shape[-2]
    y, live, safe, p_live = _squares(X)
    zero = xp.zeros_like(safe)
    z = xp.where(live[..., None, :], y / safe[..., None, :] - 1.0, xp.zeros_like(y))
    r = xp.where(live, xp.log(1.0 + xp.sum(w[:, None] * z, -2)), zero)
    p_live = xp.clamp_min(p_live, 1.0)
    spread = float(((w - 1.0 / n) ** 2).sum())
    zbar = xp.sum(z, -1) / p_live  # (…, n): the assets' mean normalised square, day by day
    common_sq = xp.mean(xp.square(zbar), -1, keepdim=True)
    v_c = spread * common_sq
    v_e = spread * xp.clamp_min(
        xp.sum(xp.mean(xp.square(z), -2), -1, keepdim=True) - p_live * common_sq, 0.0
    )
    rbar = xp.sum(r, -1, keepdim=True) / p_live
    e = xp.where(live, r - rbar, zero)
    rbar_sq = xp.square(rbar)
    f_c = xp.where(
        (rbar_sq > 0) & bool(common),
        xp.clamp_min(1.0 - threshold * v_c / xp.clamp_min(rbar_sq, 1e-300), 0.0),
        xp.zeros_like(rbar),
    )
    ss = xp.sum(xp.square(e), -1, keepdim=True)
    f_e = xp.where(
        ss > 0, xp.clamp_min(1.0 - v_e / xp.clamp_min(ss, 1e-300), 0.0), xp.zeros_like(ss)
    )
    return xp.where(live, f_c * rbar + f_e * e, zero)


def timing_scales(
    X: Any, half_life_ratio: float = DEFAULT_HALF_LIFE_RATIO, pretest: str = "pooled"
) -> Any:
    """The diagonal of ``D`` (module docstring), ``(…, p)``, for returns ``X (…, n, p)``;
    ``pretest``: one of :data:`PRETESTS`."""
    if not float(half_life_ratio) > 0:
        raise ValueError(f"half_life_ratio must be > 0, got {half_life_ratio}")
    if pretest not in PRETESTS:
        raise ValueError(f"pretest must be one of {PRETESTS}, got {pretest!r}")
    xp = ops(X)
    n = X.shape[-2]
    if n < 2:
        raise ValueError(f"need at least 2 observations, got {n}")
    w = ewma_weights(n, float(half_life_ratio) * n, like=X)
    w = xp.to(w, X)
    if pretest in ("split", "relative"):
        return xp.exp(0.5 * split_log_scales(X, w, common=pretest == "split"))
    r, v0, p_live = log_variance_ratios(X, w)
    return xp.exp(0.5 * james_stein_factor(r, v0, p_live) * r)


def apply_volatility_timing(
    cov: Any, X: Any, half_life_ratio: float = DEFAULT_HALF_LIFE_RATIO, pretest: str = "pooled"
) -> Any:
    """``D Σ̂ D`` (module docstring) for estimates ``cov (…, p, p)`` of the returns
    ``X (…, n, p)`` (the same window, the same batch shape); same type as ``cov``."""
    if tuple(cov.shape[:-2]) != tuple(X.shape[:-2]) or cov.shape[-1] != X.shape[-1]:
        raise ValueError(
            f"cov {tuple(cov.shape)} does not match returns {tuple(X.shape)} (…, n, p)"
        )
    if ops(cov) is NUMPY:
        X = np.asarray(X, dtype=np.float64)
    else:
        X = torch.as_tensor(X, dtype=torch.float64, device=cov.device)
    d = timing_scales(X, half_life_ratio, pretest)
    d = ops(cov).to(d, cov)
    return cov * d[..., :, None] * d[..., None, :]


def timing_of_extra(extra: Any) -> tuple[float | None, str]:
    """``(half-life ratio or None, pre-test)`` of a model file's ``extra`` mapping:
    ``extra["volatility_timing"]`` (absent: no timing) and ``extra["volatility_pretest"]``
    (absent: ``"pooled"``, decision 0047's, for files written before the key existed)."""
    extra = extra if isinstance(extra, Mapping) else {}
    value = extra.get(EXTRA_KEY)
    pretest = extra.get(PRETEST_KEY, "pooled")
    if pretest not in PRETESTS:
        raise ValueError(f"model's {PRETEST_KEY} must be one of {PRETESTS}, got {pretest!r}")
    if value is None:
        return None, pretest
    ratio = float(value)
    if not ratio > 0 or ratio != ratio:
        raise ValueError(f"model's {EXTRA_KEY} must be a half-life ratio > 0, got {value!r}")
    return ratio, pretest


def volatility_timing_of(model: Any) -> float | None:
    """The half-life ratio of the timing ``model``'s estimates apply (its
    ``extra["volatility_timing"]``, set by the file it was loaded from), or ``None``."""
    return timing_of_extra(getattr(model, "extra", None))[0]


def volatility_pretest_of(model: Any) -> str:
    """The pre-test of ``model``'s timing (:func:`timing_of_extra`)."""
    return timing_of_extra(getattr(model, "extra", None))[1]


def finish_covariance(model: Any, cov: Any, X: Any) -> Any:
    """``model``'s covariance estimates ``cov (…, p, p)`` of the returns ``X (…, n, p)``:
    unchanged, or with the pre-tested volatility timing when the model carries it."""
    ratio, pretest = timing_of_extra(getattr(model, "extra", None))
    return cov if ratio is None else apply_volatility_timing(cov, X, ratio, pretest)
