"""Independent numpy references: line-by-line transcriptions of Ledoit & Wolf's published code.

Used only by the tests, to check the batched torch implementations in
``shrinklab.core.targets`` / ``shrinklab.core.estimators``.  Written from the authors'
Matlab ``covCor.m`` (2004), ``covMarket.m`` (2003) -- divisor ``t`` after
demeaning -- and their Python ``QIS`` (2022, divisor ``N − 1``); one sample at a
time, with no batching, no constant-column handling and no guards.
"""

from __future__ import annotations

import numpy as np


def ref_cov_cor(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """covCor.m: returns (sigma, prior, shrinkage)."""
    t, n = x.shape
    x = x - x.mean(0)
    sample = (1.0 / t) * (x.T @ x)
    var = np.diag(sample).copy()
    sqrtvar = np.sqrt(var)
    rbar = (np.sum(sample / np.outer(sqrtvar, sqrtvar)) - n) / (n * (n - 1))
    prior = rbar * np.outer(sqrtvar, sqrtvar)
    np.fill_diagonal(prior, var)
    y = x**2
    phi_mat = y.T @ y / t - 2 * (x.T @ x) * sample / t + sample**2
    phi = phi_mat.sum()
    term1 = (x**3).T @ x / t
    help_ = x.T @ x / t
    help_diag = np.diag(help_)
    term2 = help_diag[:, None] * sample
    term3 = help_ * var[:, None]
    term4 = var[:, None] * sample
    theta_mat = term1 - term2 - term3 + term4
    np.fill_diagonal(theta_mat, 0.0)
    rho = np.sum(np.diag(phi_mat)) + rbar * np.sum(np.outer(1.0 / sqrtvar, sqrtvar) * theta_mat)
    gamma = np.linalg.norm(sample - prior, "fro") ** 2
    kappa = (phi - rho) / gamma
    shrinkage = max(0.0, min(1.0, kappa / t))
    return shrinkage * prior + (1 - shrinkage) * sample, prior, shrinkage


def ref_cov_market(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """covMarket.m: returns (sigma, prior, shrinkage)."""
    t, n = x.shape
    x = x - x.mean(0)
    xmkt = x.mean(1)
    big = np.cov(np.column_stack([x, xmkt]), rowvar=False) * (t - 1) / t
    covmkt = big[:n, n]
    varmkt = big[n, n]
    sample = big[:n, :n]
    prior = np.outer(covmkt, covmkt) / varmkt
    np.fill_diagonal(prior, np.diag(sample))
    c = np.linalg.norm(sample - prior, "fro") ** 2
    y = x**2
    p = 1 / t * np.sum(y.T @ y) - np.sum(sample**2)
    rdiag = 1 / t * np.sum(y**2) - np.sum(np.diag(sample) ** 2)
    z = x * xmkt[:, None]
    v1 = 1 / t * y.T @ z - covmkt[:, None] * sample
    roff1 = np.sum(v1 * covmkt[None, :]) / varmkt - np.sum(np.diag(v1) * covmkt) / varmkt
    v3 = 1 / t * z.T @ z - varmkt * sample
    roff3 = (
        np.sum(v3 * np.outer(covmkt, covmkt)) / varmkt**2
        - np.sum(np.diag(v3) * covmkt**2) / varmkt**2
    )
    roff = 2 * roff1 - roff3
    r = rdiag + roff
    k = (p - r) / c
    shrinkage = max(0.0, min(1.0, k / t))
    return shrinkage * prior + (1 - shrinkage) * sample, prior, shrinkage


def ref_qis(Y: np.ndarray) -> np.ndarray:
    """QIS (Ledoit & Wolf 2022), the authors' Python code with numpy instead of pandas."""
    N, p = Y.shape
    Y = Y - Y.mean(0)
    n = N - 1
    c = p / n
    sample = Y.T @ Y / n
    sample = (sample + sample.T) / 2
    lambda1, u = np.linalg.eigh(sample)
    lambda1 = lambda1.clip(min=0)
    h = (min(c**2, 1 / c**2) ** 0.35) / p**0.35
    invlambda = 1 / lambda1[max(1, p - n + 1) - 1 : p]
    Lj = np.repeat(invlambda[:, None], min(p, n), axis=1)
    Lj_i = Lj - Lj.T
    theta = (Lj * Lj_i / (Lj_i * Lj_i + Lj * Lj * h**2)).mean(axis=0)
    Htheta = (Lj * (Lj * h) / (Lj_i * Lj_i + Lj * Lj * h**2)).mean(axis=0)
    Atheta2 = theta**2 + Htheta**2
    if p <= n:
        delta = 1 / (
            (1 - c) ** 2 * invlambda
            + 2 * c * (1 - c) * invlambda * theta
            + c**2 * invlambda * Atheta2
        )
    else:
        delta0 = 1 / ((c - 1) * np.mean(invlambda))
        delta = np.concatenate([np.repeat(delta0, p - n), 1 / (invlambda * Atheta2)])
    delta_qis = delta * (sum(lambda1) / sum(delta))
    return u @ np.diag(delta_qis) @ u.T
