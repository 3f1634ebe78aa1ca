"""One sample's statistics, built once and shared by the features, the targets and
the estimator (:class:`SampleStats`).

A fit needs the validated returns, their centring, the sample covariance ``S``, one
eigendecomposition of ``S`` (spectrum features and the QIS target), the five targets
and the features. :func:`sample_stats` computes each once, with the same operations as
:func:`shrinklab.core.features.extract_features` (whose features
:func:`features_of` reproduces exactly), so the estimator builds its targets from the
same eigendecomposition instead of a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from shrinklab.core.features import (
    features_from_parts,
    intensities_from_targets,
    target_gram,
    targets_from_parts,
)
from shrinklab.core.validation import as_returns, center

__all__ = ["SampleStats", "features_of", "sample_stats"]


@dataclass(frozen=True)
class SampleStats:
    """The statistics of a batch of return samples.

    Each sample is scaled by ``2^−e`` so that ``max |x| ∈ [0.5, 1)`` (exact in floating
    point; the features are scale-invariant, and no fourth moment can overflow);
    :meth:`unscale` turns a covariance of the scaled returns back into the units of the
    returns (``× 4^e``, exact). ``X (B, n, p)`` scaled returns, ``exponent (B,)``,
    ``Xc`` centred, ``S`` the sample covariance (divisor ``n``), ``evals, evecs`` its
    eigendecomposition, ``T (B, K, p, p)`` the targets of
    :data:`shrinklab.core.targets.TARGET_NAMES` and ``extras`` what the classical
    intensities reuse.
    """

    X: torch.Tensor
    exponent: torch.Tensor
    Xc: torch.Tensor
    S: torch.Tensor
    evals: torch.Tensor
    evecs: torch.Tensor
    T: torch.Tensor
    extras: dict

    def unscale(self, M: torch.Tensor) -> torch.Tensor:
        """``M (B, …, p, p)`` of the scaled returns in the units of the returns."""
        e = 2 * self.exponent
        return torch.ldexp(M, e.reshape(-1, *([1] * (M.ndim - 1))))


def sample_stats(X: Any) -> SampleStats:
    """:class:`SampleStats` of returns ``X`` (``(n, p)`` or ``(B, n, p)``, validated by
    :func:`shrinklab.core.validation.as_returns`)."""
    Xt, _ = as_returns(X)
    m = Xt.abs().amax(dim=(-2, -1))
    e = torch.where(m > 0, torch.frexp(m)[1], 0).to(Xt.dtype)
    Xs = torch.ldexp(Xt, -e[:, None, None])
    Xc, S = center(Xs)
    evals, evecs = torch.linalg.eigh(S)
    extras: dict = {}
    T = targets_from_parts(Xc, S, (evals, evecs), extras)
    return SampleStats(Xs, e, Xc, S, evals, evecs, T, extras)


def features_of(stats: SampleStats) -> torch.Tensor:
    """The features ``(B, F)`` of :func:`shrinklab.core.features.extract_features`,
    from a :class:`SampleStats`."""
    return features_from_parts(
        stats.X,
        stats.Xc,
        stats.S,
        stats.evals,
        target_gram(stats.S, stats.T),
        intensities_from_targets(stats.Xc, stats.S, stats.T, stats.extras),
    )
