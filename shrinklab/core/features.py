"""p-agnostic features of a returns sample: a fixed-length vector for any ``(p, n)``.

:func:`extract_features` maps returns ``X (B, n, p)`` to ``(B, F)`` float64
features, ``F = len(FEATURE_NAMES)`` whatever ``p`` and ``n`` are, so that one
network serves any number of assets and observations (``docs/architecture.md``;
``docs/decisions/0001-one-p-agnostic-network.md``).  Everything is batched (no Python loop over
samples) and reuses one sample covariance ``S`` (divisor ``n`` after demeaning,
as in :mod:`shrinklab.core.estimators`) and one eigen-decomposition per batch (its
eigenvalues for the spectrum, its eigenvectors for the QIS target);
:func:`features_from_parts` takes precomputed pieces so that the training-set
builder (:mod:`shrinklab.data.dataset`) computes nothing twice.

Notation: ``Xc`` demeaned returns, ``S = XcᵀXc / n``, ``λ`` its eigenvalues,
``λ̄ = tr S / p``, ``s_i² = S_ii``, ``R`` the sample correlation.  Assets with
zero variance (constant columns) are left out of every cross-sectional average
(the 0/0 = 0 convention of :mod:`shrinklab._validation`); a statistic with
nothing to average is 0, so every feature is finite on every valid input.

Features and their invariances (``P`` = permuting assets, ``c`` = multiplying
all returns by one ``c ≠ 0``, ``D`` = multiplying each asset by its own ``d_i > 0``).
All features are ``P`` and ``c`` invariant; those marked ``D`` are also invariant
to per-asset rescaling.

==========================  ===========================================================  ===
``log_p_over_n``            ``log(p / n)``                                               D
``log_n``                   ``log n``                                                    D
``spec_q05`` … ``spec_q95`` quantiles 5/25/50/75/95 % of ``λ / λ̄`` (linear interpolation)
``top_share``               ``λ_max / Σλ``
``eff_rank_ratio``          ``exp(H(λ/Σλ)) / p``, Shannon entropy ``H`` (Roy & Vetterli
                            2007, "The effective rank", EUSIPCO)
``mp_exceed_frac``          share of ``λ`` above the Marchenko–Pastur edge
                            ``λ̄ (1 + √(p/n))²`` (Marchenko & Pastur 1967; the noise
                            variance estimated by ``λ̄``)
``mp_top_log_ratio``        ``log(λ_max / edge)``
``corr_mean``               mean off-diagonal sample correlation                         D
``corr_std``                their standard deviation                                     D
``logvar_std``              standard deviation of ``log s_i²`` across assets
``kurt_mean``               mean over assets of the excess kurtosis ``m4/m2² − 3``       D
``kurt_median``             its median (lower median for an even count)                  D
``kurt_market``             excess kurtosis of the equal-weight portfolio of
                            standardised returns ``mean_i x_ti / s_i``                   D
``int_lw``                  Ledoit–Wolf (2004, JMVA) intensity
``int_oas``                 OAS intensity (Chen, Wiesel, Eldar & Hero 2010)
``int_cc``                  constant-correlation intensity (Ledoit & Wolf 2004, JPM)
``int_sf``                  single-factor intensity (Ledoit & Wolf 2003, JEF)
``dist_<target>``           ``‖T_k − S‖_F / ‖S‖_F`` for the K targets of
                            :data:`shrinklab.core.targets.TARGET_NAMES`
``mt_<target>``             multi-target shrinkage intensities towards identity,
                            constant correlation, single factor and QIS
                            (:func:`multi_target_intensities`; Lancewicki & Aladjem
                            2014): the simplex QP with the exact target Gram
                            ``G_kl = ⟨T_k − S, T_l − S⟩`` and ``ĉ_k = ρ̂_k G_kk``
                            (``ρ̂`` = ``int_lw``, ``int_cc``, ``int_sf``, and 1 for QIS)
``log_vol_ratio_recent``    ``½ log mean_i(v_i^recent / v_i)``: variance of the last 20 %
                            of the rows (at least 2) over the whole window, per asset    D
``sq_autocorr_market``      lag-1 autocorrelation of ``m_t²``, ``m_t`` the standardised
                            equal-weight portfolio (volatility clustering)               D
==========================  ===========================================================  ===

The intensities are those of :mod:`shrinklab.core.estimators` (``return_shrinkage=True``),
computed in O(np + p²) by :func:`shrinklab.core.estimators.shrinkage_intensities`,
and are invariant to ``P`` and ``c`` (the single-factor one through its
equal-weight market, which a permutation leaves unchanged).  The two temporal
features depend on the *row order* of ``X`` (the only ones that do): on i.i.d.
synthetic data they are ≈ 0 (neutral), on real returns they carry volatility
regimes and clustering (Engle 1982; Bollerslev 1986).  The market-regime label
is not a feature column: it goes to the network's embedding separately
(``MLShrinkageNetwork.forward(x, regime)``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch

from shrinklab.core import estimators, linalg
from shrinklab.core.sample_stats import (
    SampleStats,
    sample_stats,
    targets_from_parts,
    targets_from_stats,
)
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.core.validation import as_returns, center
from shrinklab.core.xp import ops

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_SCHEMA",
    "SPECTRUM_QUANTILES",
    "CLASSICAL_POINTS",
    "INTENSITY_NAMES",
    "RECENT_FRACTION",
    "extract_features",
    "window_sizes",
    "features_of",
    "targets_from_stats",
    "features_from_parts",
    "classical_intensities",
    "target_sq_distances",
    "target_gram",
    "difference_gram",
    "multi_target_intensities",
    "MULTI_TARGET_SOURCES",
    "MULTI_TARGET_NAMES",
    "schema_for",
    "targets_from_parts",
    "intensities_from_targets",
]


SPECTRUM_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


RECENT_FRACTION: float = 0.2


INTENSITY_NAMES: tuple[str, ...] = ("int_lw", "int_oas", "int_cc", "int_sf")


# Each classical estimator as a point of the family: (intensity feature, target it
# shrinks towards); QIS has no intensity (weight 1 on its own target). Used for the
# classical baselines of the training set and for the network's anchors.
CLASSICAL_POINTS: dict[str, tuple[str | None, str]] = {
    "ledoit_wolf": ("int_lw", "identity"),
    "oas": ("int_oas", "identity"),
    "lw_constant_correlation": ("int_cc", "constant_correlation"),
    "lw_single_factor": ("int_sf", "single_factor"),
    "qis": (None, "qis"),
}


# Multi-target shrinkage (estimators.multi_target_weights): the targets that take part,
# each with the feature holding its single-target intensity estimate (None: QIS,
# trusted along its own direction, ρ̂ = 1). The diagonal target has no classical
# intensity here and is left out.
MULTI_TARGET_SOURCES: dict[str, str | None] = {
    "identity": "int_lw",
    "constant_correlation": "int_cc",
    "single_factor": "int_sf",
    "qis": None,
}


MULTI_TARGET_NAMES: tuple[str, ...] = tuple(f"mt_{k}" for k in MULTI_TARGET_SOURCES)

# Which of TARGET_NAMES take part in the multi-target intensities (K booleans).
_MULTI_TARGET_USE: tuple[bool, ...] = tuple(k in MULTI_TARGET_SOURCES for k in TARGET_NAMES)


FEATURE_NAMES: tuple[str, ...] = (
    "log_p_over_n",
    "log_n",
    *(f"spec_q{round(100 * q):02d}" for q in SPECTRUM_QUANTILES),
    "top_share",
    "eff_rank_ratio",
    "mp_exceed_frac",
    "mp_top_log_ratio",
    "corr_mean",
    "corr_std",
    "logvar_std",
    "kurt_mean",
    "kurt_median",
    "kurt_market",
    *INTENSITY_NAMES,
    *(f"dist_{k}" for k in TARGET_NAMES),
    *MULTI_TARGET_NAMES,
    "log_vol_ratio_recent",
    "sq_autocorr_market",
)


def schema_for(names: tuple[str, ...] | list[str], version: int = 1) -> str:
    """Schema string ``"v<version>-<10 hex of sha1(names)>"`` of a feature list."""
    return f"v{version}-" + hashlib.sha1(",".join(names).encode()).hexdigest()[:10]


FEATURE_SCHEMA: str = schema_for(FEATURE_NAMES)


# Floor of the recent/whole variance ratio before its log (a window whose last rows
# are all exactly at the mean, e.g. stale prices); scale-free, so invariances hold.
_RATIO_FLOOR = 1e-12


# --------------------------------------------------------------------------- helpers
def _safe_div(num: Any, den: Any) -> Any:
    """``num / den`` where ``den != 0``, else 0 (torch or NumPy)."""
    return ops(num).safe_div(num, den)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, dims) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``x`` over ``mask`` (0 where empty) and the count, both kept dims."""
    xp = ops(x)
    cnt = xp.sum(xp.to(mask, x), dims, keepdim=True)
    return _safe_div(xp.sum(xp.where(mask, x, 0.0), dims, keepdim=True), cnt), cnt


def _masked_mean_std(
    x: torch.Tensor, mask: torch.Tensor, dims
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population standard deviation ``(B,)`` of ``x`` over ``mask`` (0 where empty)."""
    xp = ops(x)
    mean, cnt = _masked_mean(x, mask, dims)
    dev = xp.where(mask, x - mean, 0.0)
    var = _safe_div(xp.sum(dev * dev, dims, keepdim=True), cnt)
    B = x.shape[0]
    return mean.reshape(B), xp.sqrt(xp.clamp_min(var, 0)).reshape(B)


def _excess_kurtosis(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Excess kurtosis ``m4/m2² − 3`` of demeaned ``y`` along dim -2, and the mask ``m2 > 0``."""
    y2 = y * y
    xp = ops(y)
    m2 = xp.mean(y2, -2)
    m4 = xp.mean(y2 * y2, -2)
    ok = m2 > 0
    return _safe_div(m4, m2 * m2) - 3.0 * ops(y).to(ok, y), ok


def classical_intensities(X: Any) -> torch.Tensor:
    """Shrinkage intensities ``(B, 4)`` of LW, OAS, constant-correlation and single-factor.

    The values of :mod:`shrinklab.core.estimators` with ``return_shrinkage=True``
    (Ledoit & Wolf 2004 JMVA; Chen et al. 2010; Ledoit & Wolf 2004 JPM; Ledoit &
    Wolf 2003 JEF), computed once from one centring by
    :func:`shrinklab.core.estimators.shrinkage_intensities`; ``X`` is ``(B, n, p)``.
    """
    Xt, _ = as_returns(X)
    Xc, S = center(Xt)
    return estimators.shrinkage_intensities(Xc, S)


def intensities_from_targets(
    Xc: torch.Tensor, S: torch.Tensor, T: torch.Tensor, extras: dict
) -> torch.Tensor:
    """:func:`shrinklab.core.estimators.shrinkage_intensities` reusing the constant-correlation
    and single-factor targets of ``T = targets_from_parts(Xc, S, ..., extras)``."""
    return estimators.shrinkage_intensities(Xc, S, _intensity_targets(T, extras))


def _intensity_targets(T: torch.Tensor, extras: dict) -> tuple:
    """``(F_cc, r̄, F_sf, parts)`` for the intensities, from ``T`` and ``extras``."""
    k_cc = TARGET_NAMES.index("constant_correlation")
    k_sf = TARGET_NAMES.index("single_factor")
    return T[:, k_cc], extras["rbar"], T[:, k_sf], extras["sf_parts"]


def target_gram(S: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``G_kl = ⟨T_k − S, T_l − S⟩_F`` ``(B, K, K)`` for ``S (B, p, p)``, ``T (B, K, p, p)``
    (the ``G`` of :func:`shrinklab.core.targets.quadratic_form`, which needs no ``Σ``)."""
    return difference_gram(T - S.unsqueeze(1))


def difference_gram(D: torch.Tensor) -> torch.Tensor:
    """:func:`target_gram` from the differences ``D = T − S`` ``(B, K, p, p)`` (for a
    caller that keeps them, e.g. to combine the estimate from them)."""
    M = D.reshape(*D.shape[:-2], -1)
    return linalg.symmetrize(M @ ops(M).mT(M))


def target_sq_distances(S: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``‖T_k − S‖²_F`` ``(B, K)``: the diagonal of :func:`target_gram`."""
    return torch.diagonal(target_gram(S, T), dim1=-2, dim2=-1)


def multi_target_intensities(G: torch.Tensor, intensities: torch.Tensor) -> torch.Tensor:
    """Multi-target shrinkage intensities ``(B, K)`` (:func:`shrinklab.core.estimators.
    multi_target_weights`) over the targets of :data:`MULTI_TARGET_SOURCES`, from the
    target Gram ``G`` (:func:`target_gram`) and the classical intensities ``(B, 4)``
    (:func:`classical_intensities`, in the order of :data:`INTENSITY_NAMES`)."""
    xp = ops(G)
    rho = xp.ones_like(G[:, 0])
    for target, source in MULTI_TARGET_SOURCES.items():
        if source is not None:
            rho[:, TARGET_NAMES.index(target)] = xp.to(
                intensities[:, INTENSITY_NAMES.index(source)], G
            )
    return estimators.multi_target_weights_array(G, rho, _MULTI_TARGET_USE)


# --------------------------------------------------------------------------- features
def features_from_parts(
    X: torch.Tensor,
    Xc: torch.Tensor,
    S: torch.Tensor,
    evals: torch.Tensor,
    target_gram: torch.Tensor,
    intensities: torch.Tensor,
) -> torch.Tensor:
    """Features ``(B, F)`` from precomputed pieces (no recomputation of ``S`` or eigenvalues).

    Parameters
    ----------
    X : ``(B, n, p)`` validated returns (only its shape is used here).
    Xc : ``(B, n, p)`` demeaned returns (:func:`shrinklab._validation.center`).
    S : ``(B, p, p)`` sample covariance ``XcᵀXc / n``.
    evals : ``(B, p)`` eigenvalues of ``S`` (any order).
    target_gram : ``(B, K, K)`` ``⟨T_k − S, T_l − S⟩_F`` in the order of ``TARGET_NAMES``
        (:func:`target_gram`, or the ``G`` of :func:`shrinklab.core.targets.quadratic_form`).
    intensities : ``(B, 4)`` from :func:`classical_intensities`.
    """
    B, K = X.shape[0], len(TARGET_NAMES)
    if target_gram.shape != (B, K, K):
        raise ValueError(f"target_gram must be (B, {K}, {K}); got {tuple(target_gram.shape)}")
    if intensities.shape != (B, len(INTENSITY_NAMES)):
        raise ValueError(
            f"intensities must be (B, {len(INTENSITY_NAMES)}); got {tuple(intensities.shape)}"
        )
    return features_from_stats(feature_stats(Xc, S), S, evals, target_gram, intensities)


def _inverse_sd(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(var, pos, 1/sd)`` of ``S``'s diagonal (``1/sd = 0`` for zero-variance assets)."""
    xp = ops(S)
    var = xp.diagonal(S)
    sd = xp.sqrt(xp.clamp_min(var, 0))
    return var, sd > 0, _safe_div(xp.ones_like(sd), sd)


def feature_stats(
    Xc: torch.Tensor,
    S: torch.Tensor,
    X2: torch.Tensor | None = None,
    m2: torch.Tensor | None = None,
    x_isd: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The sums over the returns that the features need, O(np) per sample.

    Per asset the second and fourth moments ``m2``, ``m4`` and the second moment
    of the recent rows ``recent``; per row the equal-weight portfolio of
    standardised returns ``mkt`` (before demeaning); and ``n``.  Only vectors,
    so a caller may compute them on cache-sized pieces of a batch and
    concatenate them along dim 0 (:func:`features_from_stats` needs no ``Xc``).
    ``X2 = Xc∘Xc`` (only read), ``m2 = X2.mean(-2)`` and ``x_isd = Xc σ⁻¹`` (``σ⁻¹``
    the inverse standard deviations, 0 for constant columns) may be given by a caller
    that has them.
    """
    n, p = Xc.shape[-2:]
    m = min(n, max(2, math.ceil(RECENT_FRACTION * n)))
    X2 = Xc * Xc if X2 is None else X2
    xp = ops(Xc)
    m2 = xp.mean(X2, -2) if m2 is None else m2
    recent = xp.mean(X2[:, n - m :], -2)
    m4 = xp.mean(X2 * X2, -2)
    if x_isd is None:
        x_isd = linalg.matvecs(Xc, _inverse_sd(S)[2])[0]
    mkt = x_isd / p  # (B, n)
    return {"n": n, "m2": m2, "recent": recent, "m4": m4, "mkt": mkt}


def features_from_stats(
    stats: dict[str, Any],
    S: Any,
    evals: Any,
    target_gram: Any,
    intensities: Any,
) -> Any:
    """:func:`features_from_parts` from :func:`feature_stats` (O(p²) per sample); torch
    tensors or NumPy arrays (:mod:`shrinklab.core.xp`)."""
    xp = ops(S)
    n, p = stats["n"], S.shape[-1]
    B = S.shape[0]
    cols: list[Any] = [xp.full(B, math.log(p / n), S), xp.full(B, math.log(n), S)]

    # -- spectrum
    lam = xp.sort(xp.clamp_min(xp.to(evals, S), 0))
    tr = lam.sum(-1)
    lbar = tr / p
    lam_n = _safe_div(lam, xp.expand_as(lbar[..., None], lam))
    cols += list(xp.quantile_sorted(lam_n, SPECTRUM_QUANTILES, S))  # lam_n ascending
    share = _safe_div(lam, xp.expand_as(tr[..., None], lam))
    cols.append(share[:, -1])
    ent = -(xp.where(share > 0, share * xp.log(share), xp.zeros_like(share))).sum(-1)
    cols.append(xp.where(tr > 0, xp.exp(ent) / p, xp.zeros_like(ent)))
    edge = lbar * (1.0 + math.sqrt(p / n)) ** 2
    cols.append(xp.mean(xp.to((lam > edge[..., None]) & (tr > 0)[..., None], S), -1))
    top_ratio = _safe_div(lam[:, -1], edge)
    cols.append(xp.log(xp.where(top_ratio > 0, top_ratio, xp.ones_like(top_ratio))))

    # -- correlations and variances
    var, pos, inv_sd = _inverse_sd(S)
    # Off-diagonal correlation moments without forming R or a pair mask:
    # Σ_ij R_ij = sdinvᵀ S sdinv, Σ_ij R_ij² = (sdinv²)ᵀ (S∘S) (sdinv²), minus the diagonal.
    S2 = S * S
    inv2 = inv_sd * inv_sd
    r_diag = var * inv2  # 1 for varying assets, 0 for constant ones
    r_sum = (linalg.row_times(inv_sd, S) * inv_sd).sum(-1) - r_diag.sum(-1)
    r_sq = (linalg.row_times(inv2, S2) * inv2).sum(-1) - (r_diag * r_diag).sum(-1)
    k = xp.to(pos.sum(-1), S)
    pairs = k * (k - 1)
    r_mean = _safe_div(r_sum, pairs)
    cols += [r_mean, xp.sqrt(xp.clamp_min(_safe_div(r_sq, pairs) - r_mean * r_mean, 0))]
    logv = xp.log(xp.where(pos, var, xp.ones_like(var)))
    cols.append(_masked_mean_std(logv, pos, -1)[1])

    # -- tails
    m2, m4 = stats["m2"], stats["m4"]
    kok = m2 > 0
    kurt = _safe_div(m4, m2 * m2) - 3.0 * xp.to(kok, S)
    cols.append(_masked_mean(kurt, kok, -1)[0][..., 0])
    med = xp.nanmedian_lower(xp.where(kok, kurt, xp.full_like(kurt, math.nan)))
    cols.append(xp.nan_to_num(med, nan=0.0))
    # equal-weight portfolio of standardised returns (constant columns weigh 0)
    mkt = stats["mkt"]
    mkt = mkt - xp.mean(mkt, -1, keepdim=True)
    cols.append(_excess_kurtosis(mkt[..., None])[0][..., 0])

    # -- classical intensities and target distances
    cols += list(xp.to(intensities, S).T)
    snorm = xp.sqrt(S2.sum((-2, -1)))
    gram = xp.to(target_gram, S)
    sq_dist = xp.clamp_min(xp.diagonal(gram), 0)
    cols += list(_safe_div(xp.sqrt(sq_dist), snorm[..., None]).T)
    mt = multi_target_intensities(gram, intensities)
    cols += [mt[:, TARGET_NAMES.index(k)] for k in MULTI_TARGET_SOURCES]

    # -- temporal (row order): recent vs whole-window variance, volatility clustering
    ratio = _safe_div(stats["recent"], m2)
    mean_ratio = _masked_mean(ratio, pos, -1)[0][..., 0]
    any_pos = pos.any(-1)
    cols.append(
        xp.where(any_pos, 0.5 * xp.log(xp.clamp_min(mean_ratio, _RATIO_FLOOR)), xp.zeros_like(tr))
    )
    y = mkt * mkt
    y = y - xp.mean(y, -1, keepdim=True)
    cols.append(_safe_div((y[:, 1:] * y[:, :-1]).sum(-1), (y * y).sum(-1)))

    out = xp.stack(cols, dim=-1)
    if out.shape[-1] != len(FEATURE_NAMES):  # pragma: no cover - internal consistency
        raise RuntimeError(f"built {out.shape[-1]} features, expected {len(FEATURE_NAMES)}")
    return out


def _validate_regime(regime: Any, B: int) -> None:
    r = torch.as_tensor(regime)
    if r.ndim > 1 or (r.ndim == 1 and r.shape[0] != B):
        raise ValueError(f"regime must be a scalar or have shape ({B},); got {tuple(r.shape)}")
    if r.is_floating_point() or r.is_complex() or r.dtype == torch.bool:
        raise ValueError(f"regime must hold integer codes; got dtype {r.dtype}")
    if bool((r < 0).any()):
        raise ValueError("regime codes must be >= 0")


def extract_features(X: Any, regime: Any = None) -> torch.Tensor:
    """Fixed-length features of returns ``X``: ``(B, F)`` float64 for ``(B, n, p)``.

    ``X`` is ``(n, p)`` or ``(B, n, p)`` (numpy, torch or pandas; validated by
    :func:`shrinklab._validation.as_returns`); a 2-D input gives ``(1, F)``.
    ``F = len(FEATURE_NAMES)`` for every ``p`` and ``n``; the columns are
    documented in the module docstring.  The output is finite for every valid
    input (constant columns, ``p > n``, ``n = 2``) and ready for ``float32``.

    Each sample is first scaled by a power of two (exact; the features are
    scale-invariant) so that extreme magnitudes cannot overflow.

    ``regime`` (optional integer codes, scalar or ``(B,)``) is only validated:
    the market regime is *not* a feature column, it is passed to the network
    separately (``model.predict(features, regime)``).
    """
    stats = sample_stats(X)
    if regime is not None:
        _validate_regime(regime, stats.X.shape[0])
    return features_of(stats)


def features_of(stats: SampleStats) -> torch.Tensor:
    """The features ``(B, F)`` of :func:`extract_features` from the :class:`SampleStats`
    of the returns (what the estimator shares with its targets). From stats holding the
    differences ``D = T − S`` (``sample_stats(X, differences=True)``) the target Gram is
    ``D``'s and the classical intensities take ``‖S − F‖²`` from its diagonal (as the
    training-set builder does; equal to round-off, tested)."""
    if stats.D is None:
        G = target_gram(stats.S, stats.T)
        inten = intensities_from_targets(stats.Xc, stats.S, stats.T, stats.extras)
        return features_from_parts(stats.X, stats.Xc, stats.S, stats.evals, G, inten)
    G = difference_gram(stats.D)
    k_cc = TARGET_NAMES.index("constant_correlation")
    k_sf = TARGET_NAMES.index("single_factor")
    sf = stats.extras["sf_parts"]
    Xc = stats.Xc
    X2 = Xc * Xc  # one Xc∘Xc for both: feature_stats reads it, intensity_stats then overwrites it
    f_stats = feature_stats(Xc, stats.S, X2)
    inten = estimators.intensities_from_stats(
        estimators.intensity_stats(Xc, stats.S, sf["covmkt"], X2),
        stats.S,
        (None, stats.extras["rbar"], None, sf),
        gamma=(G[:, k_cc, k_cc], G[:, k_sf, k_sf]),
    )
    return features_from_stats(f_stats, stats.S, stats.evals, G, inten)


def window_sizes(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(n, p)`` of feature rows ``(B, F)`` in the order of :data:`FEATURE_NAMES`: the
    window length and the number of assets, from ``log_n`` and ``log_p_over_n``, rounded
    to whole numbers (float64 arrays)."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu()
    F = np.asarray(features, dtype=np.float64)
    if F.ndim != 2 or F.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"features must be (B, {len(FEATURE_NAMES)}), got {F.shape}")
    log_n = F[:, FEATURE_NAMES.index("log_n")]
    log_p = log_n + F[:, FEATURE_NAMES.index("log_p_over_n")]
    return np.rint(np.exp(log_n)), np.rint(np.exp(log_p))
