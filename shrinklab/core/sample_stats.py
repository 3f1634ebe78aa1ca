"""One sample's statistics, built once and shared by the features, the targets and
the estimator (:class:`SampleStats`).

A fit needs the validated returns, their centring, the sample covariance ``S``, one
eigendecomposition of ``S`` (spectrum features and the QIS target), the five targets
and the features. :func:`sample_stats` computes each of the statistics once; it is the
one home of these steps: :func:`shrinklab.core.features.extract_features` is
:func:`shrinklab.core.features.features_of` of it, and the estimator builds its targets
from the same eigendecomposition instead of a second one. The targets are built by
:func:`targets_from_parts` / :func:`targets_from_stats` (also used by the training-set
builder, which computes its statistics in cache-sized pieces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shrinklab.core import linalg, qis
from shrinklab.core import targets as _targets
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.core.validation import as_returns, center
from shrinklab.core.xp import ops

__all__ = ["SampleStats", "sample_stats", "targets_from_parts", "targets_from_stats"]


@dataclass(frozen=True)
class SampleStats:
    """The statistics of a batch of return samples.

    Each sample is scaled by ``2^−e`` so that ``max |x| ∈ [0.5, 1)`` (exact in floating
    point; the features are scale-invariant, and no fourth moment can overflow);
    :meth:`unscale` turns a covariance of the scaled returns back into the units of the
    returns (``× 4^e``, exact). ``X (B, n, p)`` scaled returns, ``exponent (B,)``,
    ``Xc`` centred, ``S`` the sample covariance (divisor ``n``), ``evals, evecs`` its
    eigendecomposition (for ``p ≥ n`` only the eigenvalues, from the ``n × n`` Gram
    matrix, and ``evecs = None``), ``T (B, K, p, p)`` the targets of
    :data:`shrinklab.core.targets.TARGET_NAMES` and ``extras`` what the classical
    intensities reuse. Built with ``differences=True`` (the estimator) it holds
    ``D (B, K, p, p) = T − S`` instead of ``T`` (``T = None``), written in one pass per
    target: the target Gram and the combination need only the differences.
    """

    X: torch.Tensor
    exponent: torch.Tensor
    Xc: torch.Tensor
    S: torch.Tensor
    evals: torch.Tensor
    evecs: torch.Tensor | None
    T: torch.Tensor | None
    extras: dict
    D: torch.Tensor | None = None

    def unscale(self, M: torch.Tensor) -> torch.Tensor:
        """``M (B, …, p, p)`` of the scaled returns in the units of the returns."""
        e = 2 * self.exponent
        return ops(M).ldexp(M, e.reshape(-1, *([1] * (M.ndim - 1))))


def sample_stats(
    X: Any, differences: bool = False, workspace: Any = None, numpy: bool = False
) -> SampleStats:
    """:class:`SampleStats` of returns ``X`` (``(n, p)`` or ``(B, n, p)``, validated by
    :func:`shrinklab.core.validation.as_returns`); with ``differences`` the targets are
    kept as ``D = T − S`` (``SampleStats.D``, ``T = None``), written into ``workspace``
    when it is an array of ``D``'s shape, dtype and device (a caller reusing one buffer
    across calls saves the page faults of a fresh ``K p²`` allocation).

    With ``numpy`` every statistic is a NumPy float64 array, computed by the same code
    (:mod:`shrinklab.core.xp`): ``X`` must then be a finite float64 array already
    validated by the caller (the estimator's single fit: no torch overhead per op)."""
    if numpy:
        Xt = np.asarray(X, dtype=np.float64)
        Xt = Xt[None] if Xt.ndim == 2 else Xt
    else:
        Xt, _ = as_returns(X)
    xp = ops(Xt)
    Xs, e = xp.scale_to_unit(Xt)
    Xc, S = center(Xs)
    N, p = Xc.shape[-2:]
    if p >= N:
        # p > n = N − 1: S has rank at most N − 1; its spectrum is that of the N × N Gram
        # matrix XcXcᵀ/N padded with zeros, and the QIS target takes its Gram route
        # (Ledoit & Wolf 2022; as the QIS estimator does): O(N³ + N²p) instead of an
        # O(p³) eigendecomposition of S.
        # One eigh of the Gram matrix serves the spectrum and (no constant column) QIS.
        mu, V = xp.eigh(linalg.gram(xp.mT(Xc)))
        evals = xp.cat([xp.zeros((*mu.shape[:-1], p - N), mu), mu / N], dim=-1)
        evecs, eig = None, None
        flat = bool((xp.diagonal(S) == 0).any())
        gram_eig = None if flat else (mu, V)
    else:
        evals, evecs = xp.eigh(S)
        eig, gram_eig = (evals, evecs), None
    extras: dict = {}
    parts = _targets.market_parts(Xc)
    if not differences:
        T = targets_from_stats(S, N, parts, eig, extras, Xc, gram_eig=gram_eig)
        return SampleStats(Xs, e, Xc, S, evals, evecs, T, extras)
    shape = (S.shape[0], len(TARGET_NAMES), p, p)
    fits = workspace is not None and tuple(workspace.shape) == shape
    same_kind = fits and type(workspace) is type(S) and workspace.dtype == S.dtype
    if same_kind and (xp.name == "numpy" or workspace.device == S.device):
        D = workspace
    else:
        D = xp.empty(shape, S)
    targets_from_stats(S, N, parts, eig, extras, Xc, out=D, minus=S, gram_eig=gram_eig)
    return SampleStats(Xs, e, Xc, S, evals, evecs, None, extras, D)


def _qis_target(S: torch.Tensor, ctx: dict) -> torch.Tensor:
    if ctx.get("gram_eig") is not None:
        return qis.qis_from_gram_eigh(ctx["Xc"], *ctx["gram_eig"])
    if ctx["eig"] is None:
        if isinstance(S, np.ndarray):  # the torch route (p ≥ N with a constant column)
            Xc, St = torch.from_numpy(ctx["Xc"]), torch.from_numpy(S)
            return qis.qis_estimate(Xc, St, ctx["N"]).numpy()
        return qis.qis_estimate(ctx["Xc"], S, ctx["N"])
    return qis.qis_from_eig(ctx["eig"][0], ctx["eig"][1], S, ctx["N"])


def _cc_target(S: torch.Tensor, ctx: dict) -> torch.Tensor:
    F, rbar = _targets.constant_correlation_target(S)
    ctx["rbar"] = rbar
    return F


def _sf_target(S: torch.Tensor, ctx: dict) -> torch.Tensor:
    return _targets.single_factor_from_parts(S, ctx["sf_parts"])


# The targets of TARGET_NAMES from S and a context (N, the eigh of S or None, the
# single-factor market parts, Xc or None), by the public builders of shrinklab.core.targets.
_TARGET_BUILDERS = {
    "identity": lambda S, ctx: _targets.identity_target(S),
    "diagonal": lambda S, ctx: _targets.diagonal_target(S),
    "constant_correlation": _cc_target,
    "single_factor": _sf_target,
    "qis": _qis_target,
}


def _identity_minus_s(S: torch.Tensor, out: torch.Tensor) -> None:
    """``(tr S / p) I − S`` into ``out`` (the same floating-point operations as
    ``identity_target(S) − S``, without the ``p × p`` target)."""
    xp = ops(S)
    xp.neg_out(S, out)
    var = xp.diagonal(S)
    mu = xp.sum(var, -1, keepdim=True) / S.shape[-1]
    xp.sub_into_diagonal(mu, var, out)


def _diagonal_minus_s(S: torch.Tensor, out: torch.Tensor) -> None:
    """``diag(S) − S`` into ``out`` (off-diagonal ``−S``, zero diagonal)."""
    xp = ops(S)
    xp.neg_out(S, out)
    xp.zero_diagonal_(out)


# T_k − S written directly for the targets that are S's diagonal (bit for bit the
# difference of the built target and S; tested).
_DIFFERENCE_BUILDERS = {"identity": _identity_minus_s, "diagonal": _diagonal_minus_s}


def targets_from_parts(
    Xc: torch.Tensor,
    S: torch.Tensor,
    eig: tuple[torch.Tensor, torch.Tensor] | None = None,
    extras: dict | None = None,
) -> torch.Tensor:
    """``shrinkage_targets`` ``(B, K, p, p)`` from demeaned returns and ``S`` already computed.

    Same result as :func:`shrinklab.core.targets.shrinkage_targets` (tested), without
    validating and centring ``X`` again; ``Xc, S`` as from
    :func:`shrinklab._validation.center`.  ``eig = torch.linalg.eigh(S)``, if
    given, is reused by the QIS target (:func:`shrinklab.core.qis.qis_from_eig`)
    instead of a second eigendecomposition.  If ``extras`` is a dict it receives
    ``"rbar"`` (constant-correlation target) and ``"sf_parts"`` (single-factor
    market series), for :func:`intensities_from_targets`.
    """
    return targets_from_stats(S, Xc.shape[-2], _targets.market_parts(Xc), eig, extras, Xc)


def targets_from_stats(
    S: torch.Tensor,
    N: int,
    sf_parts: dict[str, torch.Tensor],
    eig: tuple[torch.Tensor, torch.Tensor] | None,
    extras: dict | None = None,
    Xc: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    names: tuple[str, ...] = TARGET_NAMES,
    minus: torch.Tensor | None = None,
    gram_eig: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """:func:`targets_from_parts` from ``S``, the number of rows ``N`` and the market
    parts (:func:`shrinklab.core.targets.market_parts`): no returns needed when ``eig`` is
    given (otherwise QIS uses ``Xc``).  With ``out (B, ≥ K, p, p)`` the targets are
    written into ``out[:, :K]`` (returned), as ``T_k − minus`` if ``minus (B, p, p)`` is
    given (one pass instead of a copy and a subtraction).  ``names`` (default all, in
    :data:`TARGET_NAMES` order) picks which targets are built; the constant-correlation
    one is needed for ``extras``. ``gram_eig = torch.linalg.eigh(Xc Xcᵀ)`` (``p ≥ N``, no
    constant column), if given, is reused by QIS (:func:`shrinklab.core.qis.qis_from_gram_eigh`)."""
    missing = [k for k in names if k not in _TARGET_BUILDERS]
    if missing:  # pragma: no cover - guards a change of TARGET_NAMES
        raise ValueError(f"no builder for targets {missing}")
    xp = ops(S)
    ctx = {"N": N, "eig": eig, "sf_parts": sf_parts, "Xc": Xc, "gram_eig": gram_eig}
    if out is None:
        T = xp.stack([_TARGET_BUILDERS[k](S, ctx) for k in names], dim=1)
    else:
        for i, k in enumerate(names):
            if minus is None:
                xp.copy_into(out[:, i], _TARGET_BUILDERS[k](S, ctx))
            elif minus is S and k in _DIFFERENCE_BUILDERS:
                _DIFFERENCE_BUILDERS[k](S, out[:, i])
            else:
                xp.sub_out(_TARGET_BUILDERS[k](S, ctx), minus, out[:, i])
        T = out[:, : len(names)]
    if extras is not None:
        extras["rbar"] = ctx["rbar"]
        extras["sf_parts"] = sf_parts
    return T
