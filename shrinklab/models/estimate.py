"""The learned shrinkage estimate of returns under a loaded model: features, the model's
``(α, π)`` and ``Σ̂ = S + Σ_k α π_k (T_k − S)`` (volatilities rescaled by the pre-tested
timing of :mod:`shrinklab.core.volatility_timing` when the model file carries it), for one
sample (NumPy on CPU, or torch) and for every rolling window of a return series (batched). The scikit-learn and skfolio
estimators of :mod:`shrinklab.sklearn` call these; the formulas live in
:mod:`shrinklab.core` (targets: Ledoit & Wolf 2003, 2004, 2022)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.core.features import features_of
from shrinklab.core.linalg import sample_cov_from_demeaned
from shrinklab.core.qis import qis_estimate
from shrinklab.core.sample_stats import sample_stats
from shrinklab.core.targets import (
    TARGET_NAMES,
    constant_correlation_target,
    diagonal_target,
    identity_target,
    single_factor_target,
)
from shrinklab.core.validation import as_returns
from shrinklab.core.volatility_timing import finish_covariance
from shrinklab.core.xp import ops
from shrinklab.models.numpy_forward import numpy_predict

__all__ = [
    "MLShrinkageEstimate",
    "RollingEstimate",
    "ml_shrinkage_estimate",
    "numpy_estimate",
    "rolling_estimate",
    "torch_device",
]

# One buffer per thread for the target differences T − S of a single fit (reused across
# fits: a fresh K p² allocation costs its page faults each time, about as much as the
# arithmetic done in it at p = 400); at most _WORKSPACE_MAX_BYTES are kept.
_WORKSPACE = threading.local()
_WORKSPACE_MAX_BYTES = 1 << 26

# On CPU ``rolling_estimate`` works through at most this many windows per batched pass: the
# per-window arrays of a chunk then stay in cache between the passes over them (at p = 20,
# window 60: about 6 % faster than one pass over 1,941 windows; the fixed cost per pass,
# about 1.5 ms, is then small against the chunk's work). A chunk's returns ``(windows, n, p)``
# also stay within _CHUNK_BYTES (the few arrays of that size a pass makes stay near cache
# size at large window × p), and the chunks are made equal (no small last one). Smaller
# chunks are not faster in general: at window 250, p = 20 (84 windows, 3.4 MB arrays) a
# fresh process page-faults on those arrays in every pass (about 3,400 faults) and two
# passes of 42 are about a third faster, but after other work (bench/fit.py, which runs
# the loop of fit in between) there are no faults and the second pass's fixed cost makes
# two passes about 15 % slower than one.
_CHUNK_WINDOWS = 256
_CHUNK_BYTES = 4 << 20


def torch_device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a valid torch device: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


# --------------------------------------------------------------------------- the estimate
@dataclass
class MLShrinkageEstimate:
    """One fitted estimate: ``covariance (p, p)``, ``location (p,)``, ``alpha``,
    ``weights`` (``π``, ``(K,)``), ``log_var`` (log predicted variance of ``α``),
    ``target_names``, ``features (F,)`` (all numpy / float)."""

    covariance: np.ndarray
    location: np.ndarray
    alpha: float
    weights: np.ndarray
    log_var: float
    target_names: tuple[str, ...]
    features: np.ndarray


def _uncentered_targets(Xt: torch.Tensor, names: tuple[str, ...]) -> tuple[torch.Tensor, Any]:
    """``S = XᵀX/n`` and the targets built from it (for ``assume_centered=True``)."""
    S = sample_cov_from_demeaned(Xt)
    N = Xt.shape[-2]
    builders = {
        "identity": lambda: identity_target(S),
        "diagonal": lambda: diagonal_target(S),
        "constant_correlation": lambda: constant_correlation_target(S)[0],
        "single_factor": lambda: single_factor_target(Xt, S)[0],
        # qis_estimate(S=S', N=N') works with n = N' − 1 and S'·N'/n; with N' = N + 1
        # and S' = S·N/(N+1) that is QIS of S itself with effective sample size N.
        "qis": lambda: qis_estimate(S=S * (N / (N + 1)), N=N + 1),
    }
    return S, torch.stack([builders[k]() for k in names], dim=1)


def _target_indices(names: tuple[str, ...]) -> list[int] | slice:
    """Where the model's targets are in :data:`TARGET_NAMES` (a slice, so no copy of the
    targets, when they are all of them in that order)."""
    unknown = [k for k in names if k not in TARGET_NAMES]
    if unknown:
        raise ValueError(f"model targets {unknown} are not among {TARGET_NAMES}")
    if tuple(names) == tuple(TARGET_NAMES):
        return slice(None)
    return [TARGET_NAMES.index(k) for k in names]


def _workspace(Xt: Any) -> Any:
    """This thread's buffer for ``T − S`` of one sample ``Xt (1, n, p)`` or ``(n, p)`` (a
    NumPy array for a NumPy ``Xt``; ``None`` if it would exceed ``_WORKSPACE_MAX_BYTES``)."""
    p = Xt.shape[-1]
    shape = (1, len(TARGET_NAMES), p, p)
    if 8 * len(TARGET_NAMES) * p * p > _WORKSPACE_MAX_BYTES:
        return None
    if isinstance(Xt, np.ndarray):
        buf = getattr(_WORKSPACE, "np_buf", None)
        if buf is None or buf.shape != shape:
            buf = _WORKSPACE.np_buf = np.empty(shape)
        return buf
    buf = getattr(_WORKSPACE, "buf", None)
    if buf is None or buf.shape != shape or buf.device != Xt.device or buf.dtype != Xt.dtype:
        with torch.inference_mode(False):  # a normal tensor (it outlives this call)
            buf = torch.empty(shape, dtype=Xt.dtype, device=Xt.device)
        _WORKSPACE.buf = buf
    return buf


def _pick(D: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """The model's targets (``names``) out of ``D`` in :data:`TARGET_NAMES` order (no copy
    when they are all of them in that order)."""
    idx = _target_indices(names)
    return D if isinstance(idx, slice) else D[:, idx]


def _predict(model: nn.Module, feats: Any, names: tuple[str, ...], device) -> tuple:
    """``(alpha (B,), weights (B, K), log_var (B,))`` float64 of ``model`` on ``feats``: the
    float64 NumPy forward (:mod:`shrinklab.models.numpy_forward`) where it covers the
    model, else ``model.predict``. ``fit`` and ``fit_rolling`` both come here. NumPy
    ``feats`` (a single fit) give NumPy arrays, tensors give tensors on ``device``."""
    if isinstance(feats, np.ndarray):
        fast = numpy_predict(model, feats)
        if fast is None:
            with torch.inference_mode():
                out = model.predict(torch.from_numpy(feats))
            fast = tuple(t.detach().cpu().to(torch.float64).numpy() for t in out[:3])
        alpha, weights, log_var = (np.asarray(a, dtype=np.float64) for a in fast)
        _check_weights(weights, feats.shape[0], names)
        return alpha.reshape(-1), weights, log_var.reshape(-1)
    fast = numpy_predict(model, feats.cpu().numpy()) if feats.device.type == "cpu" else None
    out = model.predict(feats) if fast is None else tuple(map(torch.from_numpy, fast))
    alpha = out[0].detach().to(device, torch.float64).reshape(-1)
    weights = out[1].detach().to(device, torch.float64)
    _check_weights(weights, feats.shape[0], names)
    return alpha, weights, out[2].detach().reshape(-1)


def _numpy(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.cpu().numpy()


def _check_weights(weights: Any, B: int, names: tuple[str, ...]) -> None:
    if tuple(weights.shape) != (B, len(names)):
        raise ValueError(
            f"model predicts {tuple(weights.shape[1:])} target weights but has targets {names}"
        )


def _combine(S: torch.Tensor, D: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``S + Σ_k w_k D_k`` for the differences ``D_k = T_k − S`` ``(B, K, p, p)`` (one
    matrix-vector product per sample), symmetrised, with zero-variance assets kept at zero
    variance and covariance (the package's contract; the scaled-identity target alone
    would give them the average variance)."""
    xp = ops(S)
    B, K = w.shape
    cov = (xp.to(w, S)[:, None] @ D.reshape(B, K, -1)).reshape(S.shape)  # Σ_k w_k D_k
    cov += S  # in place: no further p × p temporaries
    cov = cov + xp.mT(cov)
    cov *= 0.5
    flat = xp.diagonal(S) == 0
    if bool(flat.any()):
        cov = xp.masked_fill(cov, flat[:, :, None] | flat[:, None, :], 0.0)
    return cov


def numpy_estimate(model: nn.Module, X: np.ndarray) -> MLShrinkageEstimate:
    """:func:`ml_shrinkage_estimate` (centred) in NumPy float64 end to end for returns
    ``X (n, p)`` already validated (finite float64, ``n ≥ 2``): the same code as the torch
    path (:mod:`shrinklab.core.xp`), without torch's cost per operation."""
    names = tuple(getattr(model, "target_names", None) or TARGET_NAMES)
    with np.errstate(divide="ignore", invalid="ignore"):  # masked 0/0, log 0 (as torch)
        stats = sample_stats(X, differences=True, workspace=_workspace(X), numpy=True)
        feats = features_of(stats)
    alpha, weights, log_var = _predict(model, feats, names, None)
    cov = stats.unscale(_combine(stats.S, _pick(stats.D, names), alpha[:, None] * weights))[0]
    cov = finish_covariance(model, cov, X)
    return MLShrinkageEstimate(
        covariance=cov,
        location=X.mean(0),
        alpha=float(alpha[0]),
        weights=weights[0],
        log_var=float(log_var[0]),
        target_names=names,
        features=feats[0],
    )


@torch.inference_mode()
def ml_shrinkage_estimate(
    model: nn.Module, X: Any, *, assume_centered: bool = False, device: Any = "cpu"
) -> MLShrinkageEstimate:
    """``Σ̂ = S + Σ_k α π_k (T_k − S)`` for returns ``X (n, p)`` with ``(α, π)`` from ``model``
    (with the pre-tested volatility timing when the model file carries it:
    :func:`shrinklab.core.volatility_timing.finish_covariance`, decision 0047).

    ``model`` is anything with ``predict(features, regime=None) -> ShrinkageOutput``
    and a ``target_names`` attribute (default :data:`shrinklab.core.targets.TARGET_NAMES`).
    One validation, one centring and one eigendecomposition serve the features and the
    targets (:class:`shrinklab.core.sample_stats.SampleStats`, holding ``T − S``). Runs
    under ``torch.inference_mode`` (no autograd bookkeeping per operation).
    """
    Xt, batched = as_returns(X, device=torch_device(device))
    if batched:
        raise ValueError(f"X must be 2-D (n_samples, n_assets); got shape {tuple(Xt.shape)}")
    names = tuple(getattr(model, "target_names", None) or TARGET_NAMES)
    stats = sample_stats(Xt, differences=True, workspace=_workspace(Xt))
    feats = features_of(stats)
    alpha, weights, log_var = _predict(model, feats, names, Xt.device)
    w = alpha[:, None] * weights
    if assume_centered:
        S, T = _uncentered_targets(Xt, names)
        location = torch.zeros(Xt.shape[-1], dtype=Xt.dtype)
        cov = _combine(S, T - S.unsqueeze(1), w)[0]
    else:
        cov = stats.unscale(_combine(stats.S, _pick(stats.D, names), w))[0]
        location = Xt[0].mean(0)
    cov = finish_covariance(model, cov, Xt[0])
    return MLShrinkageEstimate(
        covariance=cov.cpu().numpy(),
        location=location.cpu().numpy(),
        alpha=float(alpha[0]),
        weights=weights[0].cpu().numpy(),
        log_var=float(log_var[0]),
        target_names=names,
        features=feats[0].cpu().numpy(),
    )


@dataclass
class RollingEstimate:
    """Estimates of :meth:`MLShrinkageCovariance.fit_rolling`, one per window end:
    ``index`` (the row label of the last observation each window holds),
    ``covariances (D, p, p)``, ``alpha (D,)``, ``weights (D, K)`` with ``target_names``."""

    index: Any
    covariances: np.ndarray
    alpha: np.ndarray
    weights: np.ndarray
    target_names: tuple[str, ...]


@torch.inference_mode()
def rolling_estimate(
    model: nn.Module,
    returns: Any,
    window: int,
    step: int = 1,
    device: Any = "cpu",
    max_bytes: int = 1 << 28,
    devolatilise: bool = False,
) -> RollingEstimate:
    """:func:`ml_shrinkage_estimate` of every window ``returns[t − window : t]`` for
    ``t = window, window + step, …`` in batched passes (one model call per chunk of
    windows: their targets within ``max_bytes``, on CPU at most ``_CHUNK_WINDOWS`` and their
    returns within ``_CHUNK_BYTES``). With ``devolatilise`` each window is divided by its
    assets' standard deviations (divisor ``window``; 1 for a constant column) and its
    covariance scaled back, as ``MLShrinkageCovariance(devolatilise=True).fit``."""
    index = getattr(returns, "index", None)
    values = np.asarray(returns, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"returns must be 2-D (n_samples, n_assets); got shape {values.shape}")
    n, p = values.shape
    window, step = int(window), int(step)
    if window < 2 or step < 1:
        raise ValueError(f"need window >= 2 and step >= 1; got window={window}, step={step}")
    if window > n:
        raise ValueError(f"window {window} is longer than the {n} rows of returns")
    if not np.isfinite(values).all():
        raise ValueError("returns contain NaN or inf")
    ends = np.arange(window, n + 1, step)
    values = np.ascontiguousarray(values)
    rows = values.strides[0]
    names = tuple(getattr(model, "target_names", None) or TARGET_NAMES)
    dev = torch_device(device)
    chunk = max(1, int(max_bytes // (8 * (len(TARGET_NAMES) + 3) * p * p)))
    if dev.type == "cpu":  # cache-sized chunks (an accelerator wants large batches)
        chunk = min(chunk, _CHUNK_WINDOWS, max(1, _CHUNK_BYTES // (8 * window * p)))
        n_chunks = math.ceil(len(ends) / chunk)
        chunk = math.ceil(len(ends) / n_chunks)  # equal chunks, as few as the cap allows
    covs, alphas, weights = [], [], []
    for start in range(0, len(ends), chunk):
        stop_ends = ends[start : start + chunk]
        # the chunk's windows (D, window, p) as a read-only view of ``values`` (no copy:
        # the first step, scale_to_unit, writes a scaled copy anyway)
        Xb = np.lib.stride_tricks.as_strided(
            values[stop_ends[0] - window :],
            shape=(len(stop_ends), window, p),
            strides=(step * rows, rows, values.strides[1]),
            writeable=False,
        )
        scale = None
        if devolatilise:
            sd = Xb.std(axis=1)
            scale = np.where(sd > 0, sd, 1.0)
            Xb = Xb / scale[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):  # NumPy on CPU, as fit
            if dev.type == "cpu":
                stats = sample_stats(Xb, differences=True, numpy=True)
            else:
                Xb = torch.as_tensor(np.ascontiguousarray(Xb), device=dev)
                stats = sample_stats(Xb, differences=True)
            feats = features_of(stats)
        alpha, wts, _ = _predict(model, feats, names, dev)
        cov = stats.unscale(_combine(stats.S, _pick(stats.D, names), alpha[:, None] * wts))
        cov = _numpy(finish_covariance(model, cov, Xb))
        covs.append(cov if scale is None else scale[:, :, None] * cov * scale[:, None, :])
        alphas.append(_numpy(alpha))
        weights.append(_numpy(wts))
    labels = ends - 1 if index is None else index[ends - 1]
    return RollingEstimate(
        labels, np.concatenate(covs), np.concatenate(alphas), np.concatenate(weights), names
    )
