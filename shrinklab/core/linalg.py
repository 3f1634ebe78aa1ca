"""Batched matrix products shared by the shrinkage targets, QIS and the features.

Symmetrisation, the divisor-``n`` sample covariance of demeaned returns, ``AᵀA``
(one BLAS ``syrk`` per matrix on CPU), the block-lower-triangular products that QIS
uses for ``p ≥ 256``, and products with one or a few vectors.  Each function takes
``torch`` tensors (most also NumPy arrays) with a leading batch axis; the results do
not depend on the batch a matrix is in.
"""

from __future__ import annotations

import numpy as np
import torch

from shrinklab.core.xp import ops

__all__ = [
    "symmetrize",
    "sample_cov_from_demeaned",
    "gram",
    "gram_lower",
    "outer_sym",
    "row_times",
    "matvecs",
]


# From this p on, symmetric products AᵀA are formed block-lower-triangular (fewer flops).
_BLOCK_GRAM_MIN_P = 256


def symmetrize(S: torch.Tensor) -> torch.Tensor:
    """``(S + Sᵀ) / 2`` over the last two axes (torch or NumPy)."""
    return 0.5 * (S + ops(S).mT(S))


def sample_cov_from_demeaned(Xc: torch.Tensor, divisor: int | None = None) -> torch.Tensor:
    """``XcᵀXc / divisor`` for demeaned ``Xc (B, n, p)`` (divisor ``n`` by default), symmetrised."""
    n = Xc.shape[-2]
    return symmetrize(Xc.transpose(-1, -2) @ Xc / (n if divisor is None else divisor))


def gram(A: torch.Tensor) -> torch.Tensor:
    """``AᵀA`` ``(B, p, p)`` for ``A (B, n, p)``, exactly symmetric.

    On CPU (float32/float64, no autograd) this is one BLAS ``syrk`` per matrix
    (numpy's ``matmul`` recognises ``aᵀa`` and calls ``syrk``, then mirrors the
    triangle): half the flops of the GEMM ``A.mT @ A``, measured 1.45 ms
    against 2.5 ms per ``1350 × 200`` matrix on the project's 2-core AMD CPU.
    Each matrix is computed on its own, so the result does not depend on the
    batch it is in.  Elsewhere (other devices, dtypes, or when a gradient is
    needed) it is ``A.mT @ A``.
    """
    if isinstance(A, np.ndarray):
        return np.matmul(A.swapaxes(-1, -2), A)
    if (
        A.device.type != "cpu"
        or A.dtype not in (torch.float32, torch.float64)
        or (A.requires_grad and torch.is_grad_enabled())
    ):
        return A.transpose(-1, -2) @ A
    a = A.detach().contiguous().numpy()
    return torch.from_numpy(np.matmul(a.swapaxes(-1, -2), a))


def _block_edges(p: int) -> list[int]:
    nb = 4
    return [round(i * p / nb) for i in range(nb + 1)]


def gram_lower(A: torch.Tensor) -> torch.Tensor:
    """``AᵀA`` for ``A (B, n, p)`` with only its lower triangle guaranteed (what ``eigh`` reads).

    For ``p >= _BLOCK_GRAM_MIN_P`` on CPU the lower block triangle is formed by
    four block rows (5/8 of the flops of one GEMM); the strictly upper blocks are
    left uninitialised.  Otherwise one GEMM.
    """
    p = A.shape[-1]
    if p < _BLOCK_GRAM_MIN_P or A.device.type != "cpu":
        return A.transpose(-1, -2) @ A
    out = torch.empty(A.shape[0], p, p, dtype=A.dtype, device=A.device)
    e = _block_edges(p)
    for a, b in zip(e[:-1], e[1:], strict=True):
        torch.matmul(A[:, :, a:b].transpose(-1, -2), A[:, :, :b], out=out[:, a:b, :b])
    return out


def outer_sym(W: torch.Tensor, V: torch.Tensor | None = None, out=None) -> torch.Tensor:
    """``W Vᵀ`` for ``W, V (B, p, k)`` known to be symmetric (``V = W`` by default).

    ``W Wᵀ`` on CPU is :func:`gram` of ``Wᵀ`` (one ``syrk``, exactly symmetric).
    For ``p >= _BLOCK_GRAM_MIN_P`` on CPU only the lower block triangle is
    multiplied and mirrored (exactly symmetric result, 5/8 of the flops).
    """
    if isinstance(W, np.ndarray):
        V = W if V is None else V
        return np.matmul(W, np.swapaxes(V, -1, -2), out=out)
    if V is None and W.device.type == "cpu":  # one syrk per matrix (see gram)
        res = gram(W.transpose(-1, -2))
        return res if out is None else out.copy_(res)
    V = W if V is None else V
    p = W.shape[-2]
    if p < _BLOCK_GRAM_MIN_P or W.device.type != "cpu":
        return torch.matmul(W, V.transpose(-1, -2), out=out)
    if out is None:
        out = torch.empty(W.shape[0], p, p, dtype=W.dtype, device=W.device)
    e = _block_edges(p)
    for a, b in zip(e[:-1], e[1:], strict=True):
        torch.matmul(W[:, a:b], V[:, :b].transpose(-1, -2), out=out[:, a:b, :b])
    for a, b in zip(e[:-1], e[1:], strict=True):
        D = out[:, a:b, a:b]
        D.copy_(symmetrize(D))
        if b < p:
            out[:, a:b, b:] = out[:, b:, a:b].transpose(-1, -2)
    return out


def row_times(v: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``vᵀA`` for ``v (B, r)``, ``A (B, r, c)`` -> ``(B, c)``.

    Products with one vector are written as a row vector times a matrix: on CPU
    a ``(1, r) @ (r, c)`` batched GEMM is ~6× faster than ``(c, r) @ (r, 1)``.
    For ``A v`` use ``row_times(v, A.mT)``; for symmetric ``A``, ``row_times(v, A)``.
    """
    return (v[..., None, :] @ A)[..., 0, :]


def matvecs(A: torch.Tensor, *vs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(A v₁, …, A v_k)`` for ``A (B, r, c)`` and vectors ``vᵢ (B, c)``, each ``(B, r)``.

    For NumPy arrays (the estimator's fit) one BLAS product ``A vᵢ`` per vector (at
    ``(84, 250, 20)`` two of them take 0.19 ms against 0.27 ms for one two-column GEMM).
    For CPU tensors one BLAS GEMM ``A [v₁ … v_k]`` per matrix through numpy (OpenBLAS):
    ``A`` is read once, and on the project's AMD CPU this skinny product is several
    times faster than torch's (MKL) ``row_times`` per vector (measured 0.027 ms
    against 2 × 0.053 ms for two vectors at ``r = 1239``, ``c = 200``).  Elsewhere,
    or when a gradient is needed, :func:`row_times` per vector.
    """
    if isinstance(A, np.ndarray):  # one product per vector: cheaper than one k-column GEMM
        return tuple((A @ v[..., None])[..., 0] for v in vs)  # for the estimator's small k
    if (
        A.device.type != "cpu"
        or A.dtype not in (torch.float32, torch.float64)
        or (torch.is_grad_enabled() and (A.requires_grad or any(v.requires_grad for v in vs)))
    ):
        return tuple(row_times(v, A.transpose(-1, -2)) for v in vs)
    V = torch.stack(vs, dim=-1).to(A.dtype).numpy()  # (B, c, k)
    out = torch.from_numpy(np.matmul(A.detach().numpy(), V))  # (B, r, k)
    return tuple(out[..., i] for i in range(len(vs)))
