"""The few array operations the feature and intensity code needs, for torch and NumPy.

One function body computes each feature, intensity and target (one home each); it runs
on torch tensors in the training pipeline (batched, any device) and on NumPy float64
arrays in a single fit of the estimator, where torch's fixed cost per operation (a few
microseconds) would dominate at small ``p``. :func:`ops` picks the namespace from the
input: :data:`TORCH` calls exactly the torch operation the code called before it became
backend-generic (same kernels, same order: the pipeline's numbers are unchanged);
:data:`NUMPY` the NumPy equivalent (the same values to round-off, tested).

Conventions: reductions take ``dim`` (an int or a tuple) and ``keepdim``; ``diagonal``
is over the last two axes; ``mT`` swaps the last two axes; ``to(x, like)`` casts ``x``
to ``like``'s dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

__all__ = ["TORCH", "NUMPY", "ops"]


class _Torch:
    """Torch operations (the calls the code made before it was backend-generic)."""

    name = "torch"
    where = staticmethod(torch.where)
    sqrt = staticmethod(torch.sqrt)
    log = staticmethod(torch.log)
    exp = staticmethod(torch.exp)
    minimum = staticmethod(torch.minimum)
    maximum = staticmethod(torch.maximum)
    zeros_like = staticmethod(torch.zeros_like)
    ones_like = staticmethod(torch.ones_like)
    nan_to_num = staticmethod(torch.nan_to_num)
    isfinite = staticmethod(torch.isfinite)

    @staticmethod
    def clamp_min(x, v):
        return x.clamp_min(v)

    @staticmethod
    def clip(x, lo, hi):
        return x.clamp(lo, hi)

    @staticmethod
    def sum(x, dim, keepdim=False):
        return x.sum(dim, keepdim=keepdim)

    @staticmethod
    def mean(x, dim, keepdim=False):
        return x.mean(dim, keepdim=keepdim)

    @staticmethod
    def diagonal(x):
        return torch.diagonal(x, dim1=-2, dim2=-1)

    @staticmethod
    def mT(x):
        return x.transpose(-1, -2)

    @staticmethod
    def to(x, like):
        return x.to(like.dtype)

    @staticmethod
    def full(n, v, like):
        return torch.full((n,), float(v), dtype=like.dtype, device=like.device)

    @staticmethod
    def full_like(x, v):
        return torch.full_like(x, v)

    @staticmethod
    def expand_as(x, like):
        return x.expand_as(like)

    @staticmethod
    def mul_(x, y):
        return x.mul_(y)

    @staticmethod
    def expand_to(x, shape):
        return x.expand(*shape)

    @staticmethod
    def empty(shape, like):
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def square(x):
        return x.square()

    @staticmethod
    def addcmul(x, a, b):
        return torch.addcmul(x, a, b)

    @staticmethod
    def reciprocal_(x):
        return x.reciprocal_()

    @staticmethod
    def matmul_out(a, b, out):
        return torch.matmul(a, b, out=out)

    @staticmethod
    def amax(x, dim, keepdim=False):
        return x.amax(dim, keepdim=keepdim)

    @staticmethod
    def finfo(x):
        fi = torch.finfo(x.dtype)
        return fi.eps, fi.tiny

    @staticmethod
    def add_diagonal_(x, v):
        x.diagonal(dim1=-2, dim2=-1).add_(v)

    @staticmethod
    def set_diagonal_(x, v):
        x.diagonal(dim1=-2, dim2=-1).copy_(v)

    @staticmethod
    def sub_into_diagonal(a, b, out):
        torch.sub(a, b, out=out.diagonal(dim1=-2, dim2=-1))

    @staticmethod
    def zero_diagonal_(x):
        x.diagonal(dim1=-2, dim2=-1).zero_()

    @staticmethod
    def neg_out(x, out):
        torch.neg(x, out=out)

    @staticmethod
    def sub_out(a, b, out):
        torch.sub(a, b, out=out)

    @staticmethod
    def copy_into(dst, src):
        dst.copy_(src)

    @staticmethod
    def nonzero(x):
        return x.nonzero(as_tuple=True)

    @staticmethod
    def copy(x):
        return x.clone()

    @staticmethod
    def eigh(x):
        return torch.linalg.eigh(x)

    @staticmethod
    def cat(xs, dim):
        return torch.cat(xs, dim=dim)

    @staticmethod
    def scale_to_unit(X):
        """``(X 2^−e, e)`` per sample with ``max |X 2^−e| ∈ [0.5, 1)`` (``e = 0`` for zeros)."""
        m = X.abs().amax(dim=(-2, -1))
        e = torch.where(m > 0, torch.frexp(m)[1], 0).to(X.dtype)
        return torch.ldexp(X, -e[:, None, None]), e

    @staticmethod
    def ldexp(x, e):
        return torch.ldexp(x, e)

    @staticmethod
    def masked_fill(x, mask, v):
        return x.masked_fill(mask, v)

    @staticmethod
    def diag_embed(v):
        return torch.diag_embed(v)

    @staticmethod
    def tensor(rows, like):
        return torch.tensor(rows, dtype=like.dtype, device=like.device)

    @staticmethod
    def quad(w, G):
        """``w_bp G_b w_bp`` ``(B, P)`` for ``w (B, P, K)``, ``G (B, K, K)``."""
        return torch.einsum("bpk,bkl,bpl->bp", w, G, w)

    @staticmethod
    def safe_div(num, den):
        """``num / den`` where ``den != 0``, else 0."""
        ok = den != 0
        one, zero = torch.ones_like(den), torch.zeros_like(num)
        return torch.where(ok, num / torch.where(ok, den, one), zero)

    @staticmethod
    def stack(xs, dim):
        return torch.stack(xs, dim=dim)

    @staticmethod
    def sort(x):
        return x.sort(-1).values

    @staticmethod
    def quantile_sorted(x, qs, like):
        q = torch.tensor(qs, dtype=like.dtype, device=like.device)
        return torch.quantile(x, q, dim=-1)

    @staticmethod
    def nanmedian_lower(x):
        return torch.nanmedian(x, dim=-1).values

    @staticmethod
    def eye(k, like):
        return torch.eye(k, dtype=like.dtype, device=like.device)

    @staticmethod
    def zeros(shape, like):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def filled(shape, value, like):
        """``value`` broadcast into a new array of ``shape`` (zeros, then the assignment)."""
        out = torch.zeros(shape, dtype=like.dtype, device=like.device)
        out[:] = value
        return out

    @staticmethod
    def arange(n, like):
        return torch.arange(n, device=like.device)

    @staticmethod
    def solve_ex(M, rhs):
        sol, info = torch.linalg.solve_ex(M, rhs)
        return sol, info != 0

    @staticmethod
    def pinv(M):
        return torch.linalg.pinv(M)


class _Numpy:
    """NumPy equivalents (float64 arrays)."""

    name = "numpy"
    where = staticmethod(np.where)
    sqrt = staticmethod(np.sqrt)
    log = staticmethod(np.log)
    exp = staticmethod(np.exp)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    isfinite = staticmethod(np.isfinite)

    @staticmethod
    def zeros_like(x):
        """``np.zeros_like`` in two C calls (no Python wrapper; called often per fit)."""
        out = np.empty_like(x)
        out.fill(0)
        return out

    @staticmethod
    def ones_like(x):
        """``np.ones_like`` in two C calls."""
        out = np.empty_like(x)
        out.fill(1)
        return out

    @staticmethod
    def clamp_min(x, v):
        return np.maximum(x, v)

    @staticmethod
    def clip(x, lo, hi):
        return np.minimum(np.maximum(x, lo), hi)

    @staticmethod
    def sum(x, dim, keepdim=False):
        """``x.sum(dim)``; over one of the last two axes of a 3-D float array a BLAS
        product with a vector of ones (:func:`_ones_sum`), else ``np.add.reduce``."""
        if x.ndim == 3 and type(dim) is int and x.dtype.kind == "f":
            return _ones_sum(x, dim, keepdim)
        return np.add.reduce(x, dim, keepdims=keepdim)

    @staticmethod
    def mean(x, dim, keepdim=False):
        """:meth:`sum` divided by the count (``np.mean`` without its Python wrapper)."""
        dims = (dim,) if isinstance(dim, int) else dim
        count = 1
        for d in dims:
            count *= x.shape[d]
        return _Numpy.sum(x, dim, keepdim) / count

    @staticmethod
    def diagonal(x):
        return x.diagonal(0, -2, -1)

    @staticmethod
    def mT(x):
        return x.swapaxes(-1, -2)

    @staticmethod
    def to(x, like):
        return x.astype(like.dtype, copy=False)

    @staticmethod
    def full(n, v, like):
        out = np.empty(n, dtype=like.dtype)
        out.fill(float(v))
        return out

    @staticmethod
    def full_like(x, v):
        out = np.empty_like(x)
        out.fill(v)
        return out

    @staticmethod
    def expand_as(x, like):
        return x  # NumPy broadcasts

    @staticmethod
    def mul_(x, y):
        return np.multiply(x, y, out=x)

    @staticmethod
    def expand_to(x, shape):
        return np.broadcast_to(x, shape)

    @staticmethod
    def empty(shape, like):
        return np.empty(shape, dtype=like.dtype)

    @staticmethod
    def square(x):
        return x * x

    @staticmethod
    def addcmul(x, a, b):
        return x + a * b

    @staticmethod
    def reciprocal_(x):
        return np.reciprocal(x, out=x)

    @staticmethod
    def matmul_out(a, b, out):
        return np.matmul(a, b, out=out)

    @staticmethod
    def amax(x, dim, keepdim=False):
        return np.maximum.reduce(x, dim, keepdims=keepdim)

    @staticmethod
    def finfo(x):
        return _eps_tiny(x.dtype)

    @staticmethod
    def add_diagonal_(x, v):
        d = _diagonal_view(x)
        d += v

    @staticmethod
    def set_diagonal_(x, v):
        _diagonal_view(x)[...] = v

    @staticmethod
    def sub_into_diagonal(a, b, out):
        np.subtract(a, b, out=_diagonal_view(out))

    @staticmethod
    def zero_diagonal_(x):
        _diagonal_view(x)[...] = 0.0

    @staticmethod
    def neg_out(x, out):
        np.negative(x, out=out)

    @staticmethod
    def sub_out(a, b, out):
        np.subtract(a, b, out=out)

    @staticmethod
    def copy_into(dst, src):
        dst[...] = src

    @staticmethod
    def nonzero(x):
        return np.nonzero(x)

    @staticmethod
    def copy(x):
        return x.copy()

    @staticmethod
    def eigh(x):
        """torch's ``eigh`` on the array's memory (no copy): the LAPACK build torch links
        (MKL here) is faster than NumPy's from p ≈ 100, and it is the torch path's."""
        w, v = torch.linalg.eigh(torch.from_numpy(x))
        return w.numpy(), v.numpy()

    @staticmethod
    def cat(xs, dim):
        return np.concatenate(xs, axis=dim)

    @staticmethod
    def scale_to_unit(X):
        m = np.maximum(np.maximum.reduce(X, (-2, -1)), -np.minimum.reduce(X, (-2, -1)))
        e = np.where(m > 0, np.frexp(m)[1], 0)
        return _Numpy.ldexp(X, -e[:, None, None]), e.astype(X.dtype)

    @staticmethod
    def ldexp(x, e):
        """``x · 2^e``: a product with the power of two (exact, as ``ldexp``, and faster)
        while ``2^e`` is a normal number, else ``np.ldexp``."""
        e = np.asarray(e).astype(np.int64)
        if np.maximum.reduce(np.abs(e), axis=None) <= 1000:
            return x * np.exp2(e.astype(x.dtype))
        return np.ldexp(x, e)

    @staticmethod
    def masked_fill(x, mask, v):
        return np.where(mask, v, x)

    @staticmethod
    def tensor(rows, like):
        return np.array(rows, dtype=like.dtype)

    @staticmethod
    def quad(w, G):
        return ((w @ G) * w).sum(-1)

    @staticmethod
    def safe_div(num, den):
        if num.shape == den.shape:  # divide only where den != 0, into zeros (three calls)
            return np.divide(num, den, out=np.zeros(num.shape), where=den != 0)
        ok = den != 0
        return np.where(ok, num / np.where(ok, den, 1.0), 0.0)

    @staticmethod
    def diag_embed(v):
        out = np.zeros((*v.shape, v.shape[-1]), dtype=v.dtype)
        idx = np.arange(v.shape[-1])
        out[..., idx, idx] = v
        return out

    @staticmethod
    def stack(xs, dim):
        if dim == -1 and all(x.ndim == 1 for x in xs):  # columns (B,) -> (B, len(xs))
            return np.concatenate(xs).reshape(len(xs), -1).T
        return np.stack(xs, axis=dim)

    @staticmethod
    def sort(x):
        return np.sort(x, axis=-1)

    @staticmethod
    def quantile_sorted(x, qs, like):
        """``torch.quantile`` (linear interpolation) of ``x (B, p)`` sorted along the last
        axis: ``(len(qs), B)``."""
        lo, hi, frac = _quantile_positions(tuple(qs), x.shape[-1])
        a = x[:, lo]
        return (a + frac * (x[:, hi] - a)).T

    @staticmethod
    def nanmedian_lower(x):
        """Lower median of the non-NaN entries along the last axis of ``x (B, p)`` (NaN if
        none), as ``torch.nanmedian``."""
        s = np.sort(x, axis=-1)  # NaN last
        k = x.shape[-1] - np.isnan(x).sum(-1)
        med = s[np.arange(len(s)), np.maximum(k - 1, 0) // 2]
        return np.where(k > 0, med, np.nan)

    @staticmethod
    def nan_to_num(x, nan=0.0):
        big = _finite_max(x.dtype)
        return np.where(np.isnan(x), nan, np.minimum(np.maximum(x, -big), big))

    @staticmethod
    def eye(k, like):
        return np.eye(k, dtype=like.dtype)

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, dtype=like.dtype)

    @staticmethod
    def filled(shape, value, like):
        """``value`` broadcast into a new array of ``shape`` (one pass)."""
        out = np.empty(shape, dtype=like.dtype)
        out[...] = value
        return out

    @staticmethod
    def arange(n, like):
        return np.arange(n)

    @staticmethod
    def solve_ex(M, rhs):
        """Batched solve by torch's ``linalg.solve_ex`` on the arrays' memory (the torch
        path's kernel; for the QP's many small systems of a batch of windows about twice
        as fast as NumPy's, which moreover raises for one singular system and then needs
        a loop); ``bad`` marks the singular systems (their solution is for the caller's
        fallback)."""
        sol, info = torch.linalg.solve_ex(torch.from_numpy(M), torch.from_numpy(rhs))
        return sol.numpy(), info.numpy() != 0

    @staticmethod
    def pinv(M):
        return np.linalg.pinv(M)


TORCH = _Torch()
NUMPY = _Numpy()


@functools.lru_cache(maxsize=16)
def _eps_tiny(dtype: np.dtype) -> tuple[float, float]:
    fi = np.finfo(dtype)
    return float(fi.eps), float(fi.tiny)


@functools.lru_cache(maxsize=16)
def _finite_max(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).max)


def _diagonal_view(x: np.ndarray) -> np.ndarray:
    """A writeable view of the diagonals of the matrices ``x (..., p, p)``: the last two
    axes merged (without a copy: setting ``shape`` raises where one would be needed, and
    then the diagonal is reached by index) and every ``(p + 1)``-th entry taken."""
    p = x.shape[-1]
    v = x.view()
    try:
        v.shape = (*x.shape[:-2], p * p)
    except AttributeError:
        return np.einsum("...ii->...i", x)  # a writeable view for any strides
    return v[..., :: p + 1]


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ``n`` ones (cached)."""
    v = np.ones(n, dtype=dtype)
    v.flags.writeable = False
    return v


def _ones_sum(x: np.ndarray, dim: int, keepdim: bool) -> np.ndarray:
    """``x.sum(dim)`` of a 3-D float array over ``dim`` in {1, 2, -2, -1} as a product with
    ones (``1ᵀx`` per matrix over rows, ``x1`` over columns): one BLAS call per matrix,
    several times faster than NumPy's reduction, whose strided inner loop over the rows of
    a ``(B, n, p)`` array is slow (0.08 against 0.53 ms for ``(84, 250, 20)`` over rows).
    Equal to the reduction to round-off (another order of additions; tested). The choice
    depends on the axis only, so every matrix of a batch gets the same operations as
    when it is alone."""
    d = dim % 3
    if d == 1:
        out = np.matmul(_ones(x.shape[1], x.dtype), x)  # (B, p)
        return out[:, None, :] if keepdim else out
    if d == 2:
        out = np.matmul(x, _ones(x.shape[2], x.dtype))  # (B, n)
        return out[:, :, None] if keepdim else out
    return np.add.reduce(x, dim, keepdims=keepdim)


@functools.lru_cache(maxsize=64)
def _quantile_positions(qs: tuple[float, ...], p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices below and above and the interpolation weights of the quantiles ``qs`` of
    ``p`` sorted values (``torch.quantile``'s linear interpolation)."""
    pos = np.asarray(qs, dtype=np.float64) * (p - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, p - 1), pos - lo


def ops(x: Any) -> _Torch | _Numpy:
    """:data:`NUMPY` for a NumPy array, else :data:`TORCH`."""
    return NUMPY if isinstance(x, np.ndarray) else TORCH
