"""models.calibration."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm

__all__ = [
    "conformal_quantile",
    "conformal_scores",
    "coverage_within_tolerance",
    "fit_temperature",
    "fit_variance_weights",
    "gaussian_nll",
    "interval_coverage",
    "reliability_curve",
]


# ------------------------------------------------------------------ calibration
def as_1d(v: Any, name: str) -> np.ndarray:
    if torch.is_tensor(v):
        v = v.detach().cpu().double().numpy()
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _triple(pred_mean: Any, pred_var: Any, truth: Any) -> tuple[np.ndarray, ...]:
    mu = as_1d(pred_mean, "pred_mean")
    var = as_1d(pred_var, "pred_var")
    y = as_1d(truth, "truth")
    if not (mu.shape == var.shape == y.shape):
        raise ValueError(
            f"pred_mean, pred_var and truth must have the same length, got "
            f"{mu.size}, {var.size}, {y.size}"
        )
    if np.any(var <= 0):
        raise ValueError("pred_var must be > 0")
    return mu, var, y


def gaussian_nll(pred_mean: Any, pred_var: Any, truth: Any) -> float:
    """Mean Gaussian negative log-likelihood ``½ log(2π v) + (y − μ)² / (2v)``."""
    mu, var, y = _triple(pred_mean, pred_var, truth)
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + 0.5 * (y - mu) ** 2 / var))


def fit_temperature(pred_mean: Any, pred_var: Any, truth: Any) -> float:
    """Variance temperature ``τ`` minimising the Gaussian NLL of ``N(μ, τ v)``.

    Closed form: ``d/dτ Σ ½[log τ v_i + r_i² / (τ v_i)] = 0`` gives
    ``τ = mean(r_i² / v_i)`` with ``r = y − μ`` (the mean squared z-score). Fit it
    on validation data only. Raises ``ValueError`` if every residual is 0.
    """
    mu, var, y = _triple(pred_mean, pred_var, truth)
    t = float(np.mean((y - mu) ** 2 / var))
    if t <= 0 or not math.isfinite(t):
        raise ValueError("temperature undefined: all residuals are zero")
    return t


def fit_variance_weights(
    pred_mean: Any,
    between: Any,
    within: Any,
    truth: Any,
    lam_range: tuple[float, float] = (1e-6, 1e6),
) -> tuple[float, float]:
    """``(τ, λ)`` maximising the Gaussian likelihood of ``N(μ, τ (b + λ w))`` on
    validation data (``b`` between-member variance, ``w`` members' predicted
    variance). For fixed ``λ`` the optimal ``τ`` is closed form
    (:func:`fit_temperature`); ``λ`` maximises the profile likelihood over
    ``lam_range`` (log-grid, then a bounded 1-D refinement). A useless uncertainty
    head gets ``λ → 0``; a useless member spread gets a large ``λ``. If the members
    agree exactly everywhere (``b ≡ 0``) only ``τ λ`` is identified: ``λ = 1``."""
    from scipy.optimize import minimize_scalar

    mu, y = as_1d(pred_mean, "pred_mean"), as_1d(truth, "truth")
    b, w = as_1d(between, "between"), as_1d(within, "within")
    if not (mu.shape == y.shape == b.shape == w.shape):
        raise ValueError("pred_mean, between, within and truth must have the same length")
    if np.any(b < 0) or np.any(w < 0):
        raise ValueError("between and within must be non-negative")
    r2 = (y - mu) ** 2
    if not np.any(r2 > 0):
        raise ValueError("temperature undefined: all residuals are zero")
    if not np.any(b > 0):
        return fit_temperature(mu, w, y), 1.0
    lo, hi = (math.log(v) for v in lam_range)

    def profile(log_lam: float) -> float:
        v = b + math.exp(log_lam) * w
        if np.any(v <= 0):
            return math.inf
        t = float(np.mean(r2 / v))
        return float(np.mean(np.log(t * v)))

    grid = np.linspace(lo, hi, 121)
    vals = [profile(g) for g in grid]
    i = int(np.argmin(vals))
    res = minimize_scalar(
        profile, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]), method="bounded"
    )
    best = res.x if res.fun <= vals[i] else grid[i]
    lam = math.exp(best)
    return float(np.mean(r2 / (b + lam * w))), lam


def check_levels(levels: Sequence[float]) -> np.ndarray:
    lv = np.asarray(levels, dtype=np.float64).reshape(-1)
    if lv.size == 0 or np.any(~np.isfinite(lv)) or np.any((lv <= 0) | (lv >= 1)):
        raise ValueError(f"levels must be in (0, 1), got {levels}")
    return lv


def conformal_scores(pred_mean: Any, pred_var: Any, truth: Any) -> np.ndarray:
    """Sorted normalised nonconformity scores ``|y − μ| / √v`` of a calibration set
    (split conformal with locally weighted residuals; Lei et al., JASA 2018, §5.2)."""
    mu, var, y = _triple(pred_mean, pred_var, truth)
    return np.sort(np.abs(y - mu) / np.sqrt(var))


def conformal_quantile(scores: Any, level: float) -> float:
    """Split-conformal quantile of ``m`` calibration scores at level ``ℓ``: the
    ``k``-th smallest, ``k = ⌈(m + 1) ℓ⌉`` (the empirical quantile at the corrected
    level ``k / m``), or ``inf`` when ``k > m``. A new exchangeable score is ``≤`` it
    with probability ``≥ ℓ``, and ``≤ ℓ + 1/(m+1)`` without ties [Vovk, Gammerman &
    Shafer 2005; Lei et al. 2018, Thm. 2.2]. ``(m+1)ℓ`` is rounded to 9 decimals
    before the ceiling so that e.g. ``m = 19, ℓ = 0.9`` gives ``k = 18``."""
    s = as_1d(scores, "scores")
    if np.any(s < 0):
        raise ValueError("scores must be non-negative")
    lv = float(check_levels([level])[0])
    m = s.size
    k = math.ceil(round((m + 1) * lv, 9))
    if k > m:
        return math.inf
    return float(np.partition(s, k - 1)[k - 1])


def interval_multipliers(levels: np.ndarray, scores: Any) -> np.ndarray:
    """Interval half-widths in units of ``√v``: Gaussian ``z_{(1+ℓ)/2}`` or conformal."""
    if scores is None:
        return norm.ppf(0.5 + levels / 2)
    return np.array([conformal_quantile(scores, v) for v in levels])


def interval_coverage(
    pred_mean: Any,
    pred_var: Any,
    truth: Any,
    levels: Sequence[float] = (0.5, 0.9),
    *,
    scores: Any = None,
) -> dict[float, float]:
    """Fraction of ``truth`` inside the central intervals ``μ ± q_ℓ √v`` for each
    nominal level ``ℓ``: ``{ℓ: coverage}``. ``q_ℓ = z_{(1+ℓ)/2}`` (Gaussian), or with
    calibration ``scores`` (:func:`conformal_scores`, computed on *other* data) the
    conformal :func:`conformal_quantile`."""
    mu, var, y = _triple(pred_mean, pred_var, truth)
    lv = check_levels(levels)
    z = np.abs(y - mu) / np.sqrt(var)
    q = interval_multipliers(lv, scores)
    return {float(level): float(np.mean(z <= qi)) for level, qi in zip(lv, q)}


def reliability_curve(
    pred_mean: Any,
    pred_var: Any,
    truth: Any,
    levels: Sequence[float] | None = None,
    *,
    scores: Any = None,
) -> pd.DataFrame:
    """Observed vs nominal coverage of central intervals (reliability diagram):
    Gaussian, or conformal with calibration ``scores`` (as :func:`interval_coverage`).

    Columns ``nominal``, ``observed``, ``mean_width`` (mean interval width; ``inf``
    where the conformal interval is the whole line) and ``n``; a calibrated model lies
    on the diagonal. Default levels 0.05, 0.10, …, 0.95.
    """
    lv = check_levels(np.arange(1, 20) / 20 if levels is None else levels)
    mu, var, y = _triple(pred_mean, pred_var, truth)
    cov = interval_coverage(mu, var, y, lv, scores=scores)
    sd = np.sqrt(var)
    q = interval_multipliers(lv, scores)
    return pd.DataFrame(
        {
            "nominal": lv,
            "observed": [cov[float(v)] for v in lv],
            "mean_width": [float(np.mean(2 * qi * sd)) for qi in q],
            "n": y.size,
        }
    )


def coverage_within_tolerance(
    coverage: Mapping[float, float],
    n: int,
    *,
    n_calibration: int | None = None,
    n_se: float = 3.0,
    one_sided: bool = False,
) -> bool:
    """Whether every observed coverage ``c_ℓ`` (``{ℓ: c_ℓ}`` on ``n`` independent
    samples) lies within ``n_se`` standard errors of ``ℓ`` (``one_sided``: is not
    *below* ``ℓ`` by more; over-coverage passes). The standard error is the binomial
    ``√(ℓ(1−ℓ)/n)``; with ``n_calibration = m`` (conformal intervals) the calibration
    draw adds ``ℓ(1−ℓ)/m`` to the variance (the coverage given the calibration set is
    Beta-distributed with about that variance; Vovk, "Conditional validity of
    inductive conformal predictors", ACML 2012)."""
    if n < 1 or (n_calibration is not None and n_calibration < 1):
        raise ValueError("n and n_calibration must be >= 1")
    if not math.isfinite(n_se) or n_se <= 0:
        raise ValueError(f"n_se must be finite and > 0, got {n_se}")
    if not coverage:
        raise ValueError("coverage is empty")
    for level, c in coverage.items():
        lv = float(check_levels([level])[0])
        var = lv * (1 - lv) * (1 / n + (1 / n_calibration if n_calibration else 0.0))
        gap = lv - float(c) if one_sided else abs(float(c) - lv)
        if gap > n_se * math.sqrt(var):
            return False
    return True
