"""Input validation shared by every public function of :mod:`shrinklab`.

All public estimators accept returns ``X`` of shape ``(n, p)`` or ``(B, n, p)``
as a numpy array, a torch tensor or a pandas DataFrame, and call
:func:`as_returns` once.  Problems are reported as :class:`ValueError` naming
what is wrong (never a ``LinAlgError`` from deep inside).

Constant (zero-variance) columns -- e.g. a stale price, i.e. zero returns -- are
*not* an error.  They are handled everywhere in the same way: after demeaning
(:func:`center`) such a column is exactly zero, the asset keeps zero covariance
with every other asset in every estimator and target, and never produces NaN.
Its variance stays zero in the sample covariance and in the diagonal,
constant-correlation, single-factor and QIS targets/estimators, which behave
as if the asset had been removed and re-inserted with zeros (correlation-type
quantities use 0/0 = 0).  The exception is shrinkage towards the scaled
identity (``ledoit_wolf``, ``oas``, the ``identity`` target): by definition
every variance, the flat asset's included, moves towards ``tr S / p`` -- exactly
what scikit-learn's ``LedoitWolf`` / ``OAS`` do, which they match.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shrinklab.core.xp import ops

__all__ = [
    "as_returns",
    "as_matrices",
    "unbatch",
    "demean",
    "center",
    "constant_columns",
]


def _to_tensor(X: Any, name: str, dtype: torch.dtype, device: Any) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        if X.is_complex():
            raise ValueError(f"{name} must be real-valued; got a complex tensor")
        if X.dtype == torch.bool:
            raise ValueError(f"{name} must be numeric; got a boolean tensor")
        return X.detach().to(device=device if device is not None else X.device, dtype=dtype)
    if hasattr(X, "to_numpy") and not isinstance(X, np.ndarray):  # pandas DataFrame / Series
        X = X.to_numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == object):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued; got dtype {arr.dtype}")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; could not convert: {exc}") from exc
    return torch.as_tensor(arr, dtype=dtype, device=device)


def _check_finite(t: torch.Tensor, name: str) -> None:
    # Fast path: NaN/inf propagate into the sum (a finite sum proves all entries finite).
    if bool(torch.isfinite(t.sum())):
        return
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):  # the sum overflowed; all entries are finite
        return
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(bad.sum()) - n_nan
    first = tuple(int(i) for i in bad.nonzero()[0].tolist())
    raise ValueError(
        f"{name} contains non-finite values: {n_nan} NaN and {n_inf} inf "
        f"(first at index {first}); remove or impute them first"
    )


def as_returns(
    X: Any,
    dtype: torch.dtype = torch.float64,
    *,
    device: Any = None,
    name: str = "X",
) -> tuple[torch.Tensor, bool]:
    """Validate returns and bring them to a ``(B, n, p)`` torch tensor.

    Parameters
    ----------
    X : array-like or torch.Tensor or pandas.DataFrame
        Returns of shape ``(n, p)`` (n observations of p assets) or
        ``(B, n, p)`` (a batch of B such samples).
    dtype : torch.dtype
        Floating dtype of the result (float64 by default).
    device : optional
        Device of the result; by default that of a tensor input, else CPU.

    Returns
    -------
    (tensor, batched) : the ``(B, n, p)`` tensor and whether ``X`` was 3-D.

    Raises
    ------
    ValueError
        For 0-/1-D input or more than 3 dimensions, fewer than 2 observations,
        no assets, an empty batch, non-numeric data, NaN or inf (with counts and
        the first offending index).  ``p > n`` is allowed.  Constant columns are
        allowed (see module docstring).
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")
    t = _to_tensor(X, name, dtype, device)
    if t.ndim < 2:
        raise ValueError(
            f"{name} must be 2-D (n, p) or 3-D (B, n, p); got {t.ndim}-D input of shape "
            f"{tuple(t.shape)} (for a single asset use shape (n, 1))"
        )
    if t.ndim > 3:
        raise ValueError(
            f"{name} must be 2-D (n, p) or 3-D (B, n, p); got {t.ndim}-D input of shape "
            f"{tuple(t.shape)}"
        )
    batched = t.ndim == 3
    if not batched:
        t = t.unsqueeze(0)
    B, n, p = t.shape
    if B == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if n < 2:
        raise ValueError(f"{name} needs at least 2 observations (rows); got n = {n}")
    if p < 1:
        raise ValueError(f"{name} needs at least 1 asset (column); got p = {p}")
    _check_finite(t, name)
    return t, batched


def as_matrices(
    M: Any,
    *,
    like: torch.Tensor,
    batch: int | None = None,
    name: str = "sigma",
    symmetric: bool = True,
) -> torch.Tensor:
    """Validate square matrices ``(p, p)`` or ``(B, p, p)``; return ``(B, p, p)``.

    The result has the dtype and device of ``like`` (a ``(B, n, p)`` returns
    tensor or a ``(B, p, p)`` matrix), its last dimension must equal that of
    ``like``, and a single matrix is broadcast over the batch ``batch``
    (default ``like.shape[0]``).  With ``symmetric`` the matrices must be
    symmetric to 1e-8 relative.
    """
    t = _to_tensor(M, name, like.dtype, like.device)
    p = like.shape[-1]
    B = like.shape[0] if batch is None else batch
    if t.ndim not in (2, 3) or t.shape[-1] != t.shape[-2]:
        raise ValueError(
            f"{name} must be square matrices of shape (p, p) or (B, p, p); got {tuple(t.shape)}"
        )
    if t.shape[-1] != p:
        raise ValueError(f"{name} is {t.shape[-1]}x{t.shape[-1]} but the data have p = {p}")
    if t.ndim == 2:
        t = t.unsqueeze(0).expand(B, p, p)
    elif t.shape[0] != B:
        raise ValueError(f"{name} has batch size {t.shape[0]} but the data have B = {B}")
    _check_finite(t, name)
    if symmetric:
        asym = (t - t.transpose(-1, -2)).abs().amax(dim=(-2, -1))
        scale = t.abs().amax(dim=(-2, -1)).clamp_min(torch.finfo(t.dtype).tiny)
        if bool((asym > 1e-8 * scale).any()):
            raise ValueError(f"{name} must be symmetric (relative asymmetry above 1e-8)")
    return t


def unbatch(t: Any, batched: bool) -> Any:
    """Drop the leading batch dimension added by :func:`as_returns` if the input was 2-D.

    ``None`` passes through unchanged (e.g. QIS has no shrinkage intensity).
    """
    if t is None or batched:
        return t
    return t[0]


def constant_columns(X: torch.Tensor) -> torch.Tensor:
    """Boolean mask ``(B, p)``: True where a column of ``X (B, n, p)`` is exactly constant."""
    return X.amax(dim=-2) == X.amin(dim=-2)


def center(X: torch.Tensor, cov: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Demeaned returns and sample covariance: ``(Xc (B, n, p), S (B, p, p))``.

    ``S = XcᵀXc / n`` (divisor n), exactly symmetric (``None`` with ``cov=False``).
    Constant columns of ``X`` become exactly zero in ``Xc`` and give exactly
    zero rows/columns of ``S`` (a plain ``X - X.mean()`` leaves round-off of
    order 1e-17 in a constant column, which would make its "correlations" with
    other assets noise).  Constant columns are found exactly (max == min)
    among the candidates whose variance is at round-off level, so the common
    case costs nothing extra.
    """
    xp = ops(X)
    n = X.shape[-2]
    mean = xp.mean(X, -2, keepdim=True)
    Xc = X - mean
    if cov:
        S = xp.mT(Xc) @ Xc / n
        S = 0.5 * (S + xp.mT(S))
        var = xp.diagonal(S)
    else:
        S = None
        var = (Xc * Xc).sum(-2) / n
    # A constant column c has |c - mean| <= ~n eps |c|, hence var <= (n eps |c|)^2.
    bound = (4.0 * n * xp.finfo(X)[0] * mean[..., 0, :]) ** 2
    cand = var <= bound
    if bool(cand.any()):
        b_idx, i_idx = xp.nonzero(cand)
        cols = X[b_idx, :, i_idx]  # (k, n)
        const = (cols == cols[:, :1]).all(-1)
        if bool(const.any()):
            b_idx, i_idx = b_idx[const], i_idx[const]
            Xc = xp.copy(Xc)
            Xc[b_idx, :, i_idx] = 0.0
            if S is not None:
                S = xp.copy(S)
                S[b_idx, i_idx, :] = 0.0
                S[b_idx, :, i_idx] = 0.0
    return Xc, S


def demean(X: torch.Tensor) -> torch.Tensor:
    """Subtract column means of ``X (B, n, p)``; constant columns become exactly zero."""
    return center(X, cov=False)[0]
