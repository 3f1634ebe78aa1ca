"""Metrics of a covariance estimate: the one home of PRIAL, its standard errors and the
quadratic-form Frobenius loss.

* PRIAL (percentage relative improvement in average loss; Ledoit & Wolf 2004, 2022):
  ``100 · (E‖S−Σ‖² − E‖Σ̂−Σ‖²) / (E‖S−Σ‖² − E‖FSOPT−Σ‖²)`` (:func:`prial`), its
  per-world normalised variant (:func:`normalised_prial`), and the same from stored
  quadratic forms (:func:`prial_of`, :func:`prial_with_se`).
* Standard errors of a ratio of means by the delta method (:func:`ratio_se`).
* ``wᵀGw − 2cᵀw + d`` (:func:`quadratic_form_loss`), the Frobenius loss of
  ``Σ̂(w)`` in O(K²) per sample.
* Plain matrix losses: :func:`frobenius_loss`, :func:`stein_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from shrinklab.core.validation import as_matrices

__all__ = [
    "prial",
    "normalised_prial",
    "frobenius_loss",
    "stein_loss",
    "prial_of",
    "normalised_prial_of",
    "quadratic_loss",
    "prial_with_se",
    "prial_se",
]


# --------------------------------------------------------------------------- losses
def _as_float(M: Any) -> torch.Tensor:
    """Tensor as is if floating, else a float64 copy (numpy / lists / integer tensors)."""
    if isinstance(M, torch.Tensor):
        return M if M.is_floating_point() else M.to(torch.float64)
    return torch.from_numpy(np.array(M, dtype=np.float64))


def _as_vector(v: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
    t = t.detach().to(torch.float64).reshape(-1)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def prial(loss_est: Any, loss_sample: Any, loss_fsopt: Any) -> float:
    """Percentage relative improvement in average loss (Ledoit & Wolf 2022).

    ``PRIAL = 100 · (E[L_S] − E[L_est]) / (E[L_S] − E[L_fsopt])`` with the
    expectations taken as means over the batch (Monte-Carlo replications): 0
    for the sample covariance, 100 for FSOPT.  Raises ``ValueError`` if
    ``E[L_S] = E[L_fsopt]``.
    """
    le = _as_vector(loss_est, "loss_est").mean()
    ls = _as_vector(loss_sample, "loss_sample").mean()
    lf = _as_vector(loss_fsopt, "loss_fsopt").mean()
    den = ls - lf
    if float(den) == 0.0:
        raise ValueError("PRIAL undefined: mean sample loss equals mean FSOPT loss")
    return float(100.0 * (ls - le) / den)


def normalised_prial(loss_est: Any, loss_sample: Any, loss_fsopt: Any) -> float:
    """PRIAL (%) of per-world *normalised* losses: ``100 · mean(1 − L_est/L_S) /
    mean(1 − L_fsopt/L_S)``.

    :func:`prial` pools raw losses (a ratio of means, as Ledoit & Wolf 2022 do over
    replications of *one* world); over a mixture of worlds that is dominated by the
    few worlds with the largest ``L_S`` and changes when one world's Σ is rescaled.
    Dividing each world's losses by its own ``L_S`` first makes every world weigh the
    same (scale invariant); equal to :func:`prial` when all ``L_S`` are equal.
    """
    ls = _as_vector(loss_sample, "loss_sample")
    if not bool((ls > 0).all()):
        raise ValueError("normalised PRIAL needs a positive sample loss for every world")
    le = _as_vector(loss_est, "loss_est") / ls
    lf = _as_vector(loss_fsopt, "loss_fsopt") / ls
    den = (1.0 - lf).mean()
    if float(den) == 0.0:
        raise ValueError("normalised PRIAL undefined: mean FSOPT loss equals the sample's")
    return float(100.0 * (1.0 - le).mean() / den)


def frobenius_loss(A: Any, B: Any) -> torch.Tensor:
    """Squared Frobenius distance ``‖A − B‖²_F`` per matrix: ``(B,)`` for ``(B,p,p)``, 0-d for ``(p,p)``."""
    At = _as_float(A)
    Bt = _as_float(B).to(At.device)
    if At.shape[-2:] != Bt.shape[-2:] or At.ndim < 2:
        raise ValueError(f"frobenius_loss: shapes {tuple(At.shape)} and {tuple(Bt.shape)} differ")
    dtype = torch.promote_types(At.dtype, Bt.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float64
    D = At.to(dtype) - Bt.to(dtype)
    return (D * D).sum((-2, -1))


def stein_loss(est: Any, sigma: Any) -> torch.Tensor:
    """Stein's loss normalised by dimension (James & Stein 1961; Ledoit & Wolf 2022).

    ``L = tr(Σ̂Σ⁻¹)/p − log det(Σ̂Σ⁻¹)/p − 1`` per matrix (``(B,)`` or 0-d);
    0 iff ``Σ̂ = Σ``; ``+inf`` if ``Σ̂`` is singular or not positive definite.
    ``sigma`` must be symmetric positive definite (``ValueError`` otherwise).
    """
    E = _as_float(est)
    batched = E.ndim == 3
    if E.ndim not in (2, 3) or E.shape[-1] != E.shape[-2]:
        raise ValueError(f"stein_loss: est must be (p,p) or (B,p,p); got {tuple(E.shape)}")
    E3 = E if batched else E.unsqueeze(0)
    Sig = as_matrices(sigma, like=E3, name="sigma")
    L, info = torch.linalg.cholesky_ex(Sig)
    if bool((info != 0).any()):
        raise ValueError("stein_loss: sigma must be positive definite")
    p = E3.shape[-1]
    Y = torch.linalg.solve_triangular(L, 0.5 * (E3 + E3.transpose(-1, -2)), upper=False)
    M = torch.linalg.solve_triangular(L, Y.transpose(-1, -2), upper=False)  # L⁻¹ Σ̂ L⁻ᵀ
    ev = torch.linalg.eigvalsh(0.5 * (M + M.transpose(-1, -2)))
    pos = (ev > 0).all(-1)
    logdet = torch.where(ev > 0, ev, torch.ones_like(ev)).log().sum(-1)
    loss = (ev.sum(-1) - logdet) / p - 1.0
    loss = torch.where(pos, loss, torch.full_like(loss, float("inf")))
    return loss if batched else loss[0]


# ------------------------------------------------------------------------ PRIAL
def quadratic_loss(w: Any, G: Any, c: Any, d: Any) -> torch.Tensor:
    """Frobenius loss of ``Σ̂(w)`` from the stored quadratic form, ``wᵀGw − 2cᵀw + d``
    per sample (``w (N,K)``, ``G (N,K,K)``, ``c (N,K)``, ``d (N,)``), in float64 on
    CPU (:func:`quadratic_form_loss`, shapes checked)."""
    w, G, c, d = (as_float64(v) for v in (w, G, c, d))
    check_quadratic_form(w, G, c, d)
    return quadratic_form_loss(w, G, c, d)


def as_float64(v: Any) -> torch.Tensor:
    t = v if torch.is_tensor(v) else torch.as_tensor(np.asarray(v))
    return t.detach().cpu().double()


def field_of(data: Any, name: str) -> Any:
    if isinstance(data, Mapping):
        return data[name]
    return getattr(data, name)


def prial_of(w: Any, data: Any) -> float:
    """PRIAL (%) of intensities ``w (N, K)`` on a dataset with fields ``G, c, d,
    loss_fsopt``: ``100 (mean d − mean L(w)) / (mean d − mean loss_fsopt)``
    (``d`` is the sample covariance's loss; Ledoit & Wolf 2022)."""

    G, c, d = field_of(data, "G"), field_of(data, "c"), field_of(data, "d")
    loss = quadratic_loss(w, G, c, d)
    return prial(loss, torch.as_tensor(np.asarray(d)).double(), field_of(data, "loss_fsopt"))


def normalised_prial_of(w: Any, data: Any) -> float:
    """PRIAL (%) of intensities ``w (N, K)`` on per-world normalised losses
    (:func:`shrinklab.core.metrics.normalised_prial`: every world weighs the same, scale
    invariant), for comparing models over a synthetic *distribution* of worlds, where
    :func:`prial_of` follows the few worlds with the largest ``‖S − Σ‖²``. It ranks
    models like the mean normalised loss, the training objective."""

    G, c, d = field_of(data, "G"), field_of(data, "c"), field_of(data, "d")
    return normalised_prial(quadratic_loss(w, G, c, d), as_float64(d), field_of(data, "loss_fsopt"))


# ----------------------------------------------------------------------- metrics
def ratio_of_means_se(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``R = mean a / mean b`` and its delta-method SE ``sd(a − R b) / (√n |mean b|)``
    (one home of the delta method: every PRIAL SE of the package comes from here)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal-length non-empty vectors; got {a.shape}, {b.shape}")
    n = len(a)
    R = a.mean() / b.mean()
    se = float(np.std(a - R * b, ddof=1) / (math.sqrt(n) * abs(b.mean()))) if n > 1 else math.nan
    return float(R), se


def prial_with_se(
    w: Any, data: Any, reference_w: Any = None
) -> tuple[float, float] | tuple[float, float, float, float]:
    """PRIAL (%) of intensities ``w (N, K)`` on ``data`` (``G, c, d, loss_fsopt``) and its
    standard error over the N samples (delta method: PRIAL is a ratio of means).

    With ``reference_w``, also the PRIAL difference ``PRIAL(w) − PRIAL(reference_w)``
    and its paired standard error (both on the same samples):
    returns ``(prial, se, delta, delta_se)``.
    """

    d = torch.as_tensor(np.asarray(data.d)).double()
    L = quadratic_loss(w, data.G, data.c, d).numpy()
    dn = d.numpy()
    f = torch.as_tensor(np.asarray(data.loss_fsopt)).double().numpy()
    b = dn - f
    if b.mean() == 0:
        raise ValueError("PRIAL undefined: mean sample loss equals mean FSOPT loss")
    r, se = ratio_of_means_se(dn - L, b)
    if reference_w is None:
        return 100 * r, 100 * se
    L0 = quadratic_loss(reference_w, data.G, data.c, d).numpy()
    dr, dse = ratio_of_means_se(L0 - L, b)
    return 100 * r, 100 * se, 100 * dr, 100 * dse


def prial_se(loss: Any, loss_sample: Any, loss_fsopt: Any) -> tuple[float, float]:
    """PRIAL (%) and its delta-method standard error over replications (module docstring)."""
    L, d, f = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (loss, loss_sample, loss_fsopt))
    return ratio_se(d - L, d - f)


def ratio_se(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``100 ā/b̄`` and its delta-method SE ``100 sd(a − R b)/(√N |b̄|)`` (a PRIAL from
    per-replication loss gains ``a`` and oracle gains ``b``)."""
    if np.asarray(b).size and np.asarray(b).mean() == 0:
        raise ValueError("PRIAL undefined: mean sample loss equals mean FSOPT loss")
    R, se = ratio_of_means_se(a, b)
    return float(100 * R), float(100 * se)


def quadratic_form_loss(
    w: torch.Tensor, G: torch.Tensor, c: torch.Tensor, d: torch.Tensor
) -> torch.Tensor:
    """``wᵀGw − 2cᵀw + d`` per row: the Frobenius loss ``‖Σ̂(w) − Σ‖²_F`` of
    ``Σ̂(w) = S + Σ_k w_k (T_k − S)`` from its quadratic form
    (:func:`shrinklab.core.targets.quadratic_form`). ``w (B, K)``, ``G (B, K, K)``,
    ``c (B, K)``, ``d (B,)``, one dtype. The one implementation of the formula: the
    training loss, the evaluation grids and :func:`quadratic_loss` call it."""
    return torch.einsum("bk,bkl,bl->b", w, G, w) - 2.0 * (c * w).sum(-1) + d


def check_quadratic_form(w: torch.Tensor, G: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> None:
    """``ValueError`` unless ``w (B,K)``, ``G (B,K,K)``, ``c (B,K)``, ``d (B,)``."""
    if w.ndim != 2 or G.shape != (*w.shape, w.shape[1]) or c.shape != w.shape:
        raise ValueError(
            f"expected w (B,K), G (B,K,K), c (B,K); got {tuple(w.shape)}, "
            f"{tuple(G.shape)}, {tuple(c.shape)}"
        )
    if d.shape != w.shape[:1]:
        raise ValueError(f"d must have shape ({w.shape[0]},), got {tuple(d.shape)}")
