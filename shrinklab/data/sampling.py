"""Returns drawn from a world's ``Σ``: Gaussian or Student-t samples, one GEMM (or
``trmm``) per sample, each from its own seeded generator (see the "Returns" and
"Reproducibility" sections of :mod:`shrinklab.data.synthetic`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from shrinklab.data import worlds_market
from shrinklab.data.draws import DTYPE, SEED_BOUND
from shrinklab.data.families import sigma_and_root

VOLATILITY_PATH_PROB = 0.0
"""Probability that a synthetic world's returns carry a common volatility path inside the
window (:func:`volatility_path`). 0 in the pipeline (no draw is consumed, so every
training set is unchanged); a study arm sets it (``shrinklab.studies.worlds``, decision
0053)."""

VOLATILITY_PATH_PERSISTENCE = (10.0, 250.0)
"""Range of the path's persistence ``L`` in days (``φ = exp(−1/L)``)."""

VOLATILITY_PATH_SPREAD = (0.1, 0.5)
"""Range of the stationary standard deviation ``s`` of the log volatility."""


# --------------------------------------------------------------------------- returns
def volatility_path(n: int, g: torch.Generator) -> torch.Tensor:
    """A common daily volatility ``σ_t (n,)``, float64, with ``mean σ_t² = 1``: the log
    volatility is a stationary AR(1), ``h_t = φ h_{t−1} + s √(1 − φ²) ε_t`` with
    ``φ = exp(−1/L)``, ``L ~ U(`` :data:`VOLATILITY_PATH_PERSISTENCE` ``)`` days and
    ``s ~ U(`` :data:`VOLATILITY_PATH_SPREAD` ``)`` (the log-AR(1) stochastic volatility
    of Taylor 1986, "Modelling financial time series"; volatility clustering). Rows
    ``x_t = σ_t z_t`` then have the window-average covariance ``Σ`` exactly in
    expectation, so the truth is unchanged: the path only moves what the sample shows
    (recent volatility, tails, squared autocorrelation). Deterministic in ``g``."""
    from scipy.signal import lfilter

    u = torch.rand(2, generator=g, dtype=torch.float64)
    lo, hi = VOLATILITY_PATH_PERSISTENCE
    phi = math.exp(-1.0 / (lo + (hi - lo) * float(u[0])))
    s_lo, s_hi = VOLATILITY_PATH_SPREAD
    s = s_lo + (s_hi - s_lo) * float(u[1])
    eps = torch.randn(n, generator=g, dtype=torch.float64)
    h0 = s * float(eps[0])
    innovation = s * math.sqrt(1.0 - phi * phi)
    rest, _ = lfilter([innovation], [1.0, -phi], eps[1:].numpy(), zi=[phi * h0])
    h = torch.cat([torch.tensor([h0], dtype=torch.float64), torch.from_numpy(rest)])
    var = torch.exp(2.0 * h)
    return torch.sqrt(var / var.mean())


def _chi2(df: float, size: int, g: torch.Generator) -> torch.Tensor:
    """χ²_df draws, ``df >= 2``: ``2·Gamma(df/2)`` from numpy's gamma sampler (Marsaglia &
    Tsang 2000) on a PCG64 stream seeded by one 62-bit draw of ``g`` (deterministic in ``g``;
    one call instead of a dozen torch ops per sample)."""
    seed = int(torch.randint(0, SEED_BOUND, (), generator=g, dtype=torch.int64))
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


def draw_returns(
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
    :func:`sigma_and_root`) the product is one ``trmm`` (:func:`_times_lower_t`,
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
        if VOLATILITY_PATH_PROB > 0 and float(torch.rand((), generator=g)) < VOLATILITY_PATH_PROB:
            z.mul_(volatility_path(n, g).to(normal_dtype)[:, None])
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


def build_worlds(
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
    is the root of ``Σ_i`` that ``X_i`` was drawn with (see :func:`sigma_and_root`)."""
    sigmas = torch.empty(len(families), p, p, dtype=DTYPE)
    roots = []
    gens = []
    lower = normal_dtype == "float32"  # the training draws: triangular roots, trmm
    for i, fam in enumerate(families):
        g = torch.Generator().manual_seed(int(seeds[i]))
        gens.append(g)
        s, r = sigma_and_root(fam, p, g, family_kw, hetero_prob, lower=lower)
        sigmas[i] = s
        roots.append(r)
    x = draw_returns(roots, n, dfs, gens, getattr(torch, normal_dtype), lower, x_dtype)
    return sigmas, x, roots
