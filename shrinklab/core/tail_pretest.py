"""A pre-test of Gaussian tails from the features: the mean excess kurtosis of the assets
against its sampling distribution under independent normal returns (decision 0073).

Under normality the sample kurtosis ``b2 = m4 / m2²`` of ``n`` observations (central
moments with divisor ``n``) has mean ``3 (n − 1) / (n + 1)`` and variance
``24 n (n − 2)(n − 3) / ((n + 1)² (n + 3)(n + 5))`` (Pearson 1931; D'Agostino & Pearson
1973, Biometrika 60, "Tests for departure from normality"). The feature ``kurt_mean`` of
:mod:`shrinklab.core.features` is the mean over the ``p`` assets of ``b2 − 3``; with
independent assets its mean ``−6 / (n + 1)`` and variance ``Var(b2) / p`` give the
standardised statistic :func:`kurtosis_z`. Correlated assets make the mean's variance
larger than ``Var(b2) / p``, so heavy tails are called heavy at least as often as with
independent assets and Gaussian windows are called Gaussian less often: a small ``z``
is evidence of tails as light as the normal's only where the test has power: with ``p``
and ``n`` small the standard error :func:`kurtosis_se` is large, and real windows of
calm months pass it (decision 0073 asks for both, :func:`gaussian_rows`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shrinklab.core.features import FEATURE_NAMES, window_sizes

__all__ = ["gaussian_rows", "kurtosis_se", "kurtosis_z", "kurtosis_z_of_features"]


def _check_sizes(n: np.ndarray, p: np.ndarray) -> None:
    if np.any(~(n >= 4)) or np.any(~(p >= 1)):
        raise ValueError(f"need n >= 4 and p >= 1, got n={n!r}, p={p!r}")


def kurtosis_se(n: Any, p: Any) -> np.ndarray:
    """``√(Var(b2) / p)``: the standard deviation of the mean excess kurtosis of ``p``
    independent normal assets over ``n`` observations (module docstring)."""
    n, p = (np.asarray(a, dtype=np.float64) for a in (n, p))
    _check_sizes(n, p)
    var = 24.0 * n * (n - 2.0) * (n - 3.0) / ((n + 1.0) ** 2 * (n + 3.0) * (n + 5.0))
    return np.sqrt(var / p)


def kurtosis_z(kurt_mean: Any, n: Any, p: Any) -> np.ndarray:
    """``(kurt_mean − E) / √(Var(b2) / p)``: the mean excess kurtosis of ``p`` assets over
    ``n`` observations, standardised by its mean and standard deviation under independent
    normal returns (module docstring). Arrays broadcast; ``n`` must be at least 4 and
    ``p`` at least 1."""
    k, n, p = (np.asarray(a, dtype=np.float64) for a in (kurt_mean, n, p))
    if np.any(~np.isfinite(k)):
        raise ValueError("kurt_mean must be finite")
    _check_sizes(n, p)
    return (k + 6.0 / (n + 1.0)) / kurtosis_se(n, p)


def _sizes_and_kurtosis(features: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, p, kurt_mean)`` of feature rows ``(B, F)`` in the order of
    :data:`~shrinklab.core.features.FEATURE_NAMES` (``n`` and ``p`` by
    :func:`~shrinklab.core.features.window_sizes`)."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu()
    F = np.asarray(features, dtype=np.float64)
    n, p = window_sizes(F)  # checks the shape
    return n, p, F[:, FEATURE_NAMES.index("kurt_mean")]


def kurtosis_z_of_features(features: Any) -> np.ndarray:
    """:func:`kurtosis_z` of feature rows ``(B, F)`` (order of
    :data:`~shrinklab.core.features.FEATURE_NAMES`)."""
    n, p, k = _sizes_and_kurtosis(features)
    return kurtosis_z(k, n, p)


def gaussian_rows(features: Any, z_max: float, se_max: float) -> np.ndarray:
    """Bool ``(B,)``: the rows whose :func:`kurtosis_z_of_features` is at most ``z_max``
    (tails no heavier than the normal's, at that one-sided level) and whose
    :func:`kurtosis_se` is at most ``se_max`` (a test with the power to see tails a little
    heavier than the normal's: a Student-t with 30 degrees of freedom has excess kurtosis
    0.23, about five SEs at ``se_max = 0.05``). Rows with fewer than 4 observations are
    never called Gaussian. ``p`` counts every asset, constant columns too, which
    ``kurt_mean`` leaves out: with constant columns the SE used is a little too small."""
    if not np.isfinite(z_max):
        raise ValueError(f"z_max must be finite, got {z_max!r}")
    if not se_max > 0:
        raise ValueError(f"se_max must be positive, got {se_max!r}")
    n, p, k = _sizes_and_kurtosis(features)
    out = np.zeros(n.shape, dtype=bool)
    ok = n >= 4  # fewer observations: no kurtosis test, so never called Gaussian
    out[ok] = (kurtosis_z(k[ok], n[ok], p[ok]) <= float(z_max)) & (
        kurtosis_se(n[ok], p[ok]) <= float(se_max)
    )
    return out
