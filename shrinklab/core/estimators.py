"""Classical covariance estimators, oracles and losses -- batched torch.

Every estimator takes returns ``X`` of shape ``(n, p)`` or ``(B, n, p)`` (numpy,
torch or pandas), computes in float64 on the device of ``X`` and returns the
same batch shape; ``return_shrinkage=True`` returns ``(cov, intensity)`` with
``intensity`` of shape ``(B,)`` (or a 0-d tensor), ``None`` for QIS.

Conventions (those of the authors' published code): the data are demeaned; the
sample covariance uses the divisor ``n`` (as scikit-learn's
``EmpiricalCovariance``, and Ledoit & Wolf's ``covCor`` / ``covMarket``);
QIS uses the divisor ``n − 1`` as in Ledoit & Wolf's ``QIS`` code.  Constant
columns keep zero covariance everywhere and zero variance except under
shrinkage to the scaled identity (LW, OAS; as scikit-learn) -- see
:mod:`shrinklab._validation`.
"""

from __future__ import annotations

from typing import Any

import torch

from shrinklab.core.linalg import matvecs, row_times
from shrinklab.core.qis import qis_from_returns
from shrinklab.core.simplex_qp import (
    multi_target_weights,
    multi_target_weights_array,
    solve_simplex_qp,
    solve_simplex_qp_array,
)
from shrinklab.core.targets import (
    TARGET_NAMES,
    constant_correlation_target,
    quadratic_form,
    single_factor_target,
    stack_targets,
)
from shrinklab.core.validation import as_matrices, as_returns, center, unbatch
from shrinklab.core.xp import ops

__all__ = [
    "sample_covariance",
    "ledoit_wolf",
    "oas",
    "lw_constant_correlation",
    "lw_single_factor",
    "qis",
    "shrinkage_intensities",
    "fsopt",
    "oracle_weights",
    "multi_target_weights",
    "solve_simplex_qp",
    "solve_simplex_qp_array",
    "multi_target_weights_array",
    "CLASSICAL_ESTIMATORS",
]


Result = torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]


def _prepare(X: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    Xt, batched = as_returns(X)
    Xc, S = center(Xt)
    return Xc, S, batched


def _finish(cov: torch.Tensor, shrink: torch.Tensor | None, batched: bool, flag: bool) -> Result:
    cov = unbatch(cov, batched)
    if not flag:
        return cov
    return cov, unbatch(shrink, batched)


def _safe_div(num: torch.Tensor, den: torch.Tensor, fill: float) -> torch.Tensor:
    xp = ops(num)
    ok = den != 0
    return xp.where(ok, num / xp.where(ok, den, xp.ones_like(den)), fill)


def _blend(S: torch.Tensor, F: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    s = s[:, None, None]
    return torch.lerp(S, F, s.expand_as(S))


def _blend_identity(S: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``(1 − s) S + s μ I`` in one pass over ``S``."""
    out = S * (1 - s)[:, None, None]
    out.diagonal(dim1=-2, dim2=-1).add_((s * mu)[:, None])
    return out


# --------------------------------------------------------------------------- estimators
def sample_covariance(X: Any, *, return_shrinkage: bool = False) -> Result:
    """Sample covariance of demeaned returns with divisor ``n`` (maximum likelihood).

    Equals ``numpy.cov(x, rowvar=False, bias=True)`` and scikit-learn's
    ``empirical_covariance``.  The intensity (with ``return_shrinkage``) is 0.
    """
    _, S, batched = _prepare(X)
    return _finish(
        S, torch.zeros(S.shape[0], dtype=S.dtype, device=S.device), batched, return_shrinkage
    )


def _fourth_moments(
    Xc: torch.Tensor,
    S: torch.Tensor,
    Y2: torch.Tensor | None = None,
    sum_y4: torch.Tensor | None = None,
    row2: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """O(np + p²) moments shared by the LW, constant-correlation and single-factor intensities.

    ``Y2 = Xc∘Xc``, ``row2_t = Σ_i x_ti²``,
    ``sum_pi = Σ_ij (1/n Σ_t x_ti² x_tj²) = 1/n Σ_t row2_t²`` (the ``π̂``-type
    sum of Ledoit & Wolf without the ``(B, p, p)`` matrix ``Y2ᵀY2``),
    ``ss = ‖S‖²_F``, ``pihat = sum_pi − ss`` and
    ``rho_diag = Σ_i (1/n Σ_t x_ti⁴ − s_ii²)``.  ``Y2``, ``sum_y4 = Σ_ti x_ti⁴`` ``(B,)``
    and ``row2`` ``(B, n)`` may be given by a caller that has them.
    """
    xp = ops(S)
    B, n, p = Xc.shape
    Y2 = Xc * Xc if Y2 is None else Y2
    row2 = Y2.sum(-1) if row2 is None else row2  # (B, n)
    var = xp.diagonal(S)
    if sum_y4 is None:
        flat = Y2.reshape(B, 1, n * p)
        sum_y4 = (flat @ xp.mT(flat)).reshape(B)  # Σ_ti x_ti⁴, no temporary
    sum_pi = (row2 * row2).sum(-1) / n
    ss = (S * S).sum((-2, -1))
    return {
        "n": n,
        "Y2": Y2,
        "row2": row2,
        "var": var,
        "sum_pi": sum_pi,
        "ss": ss,
        "pihat": sum_pi - ss,
        "rho_diag": sum_y4 / n - (var * var).sum(-1),
    }


def _lw_intensity(
    Xc: torch.Tensor | None, S: torch.Tensor, mom: dict | None = None
) -> torch.Tensor:
    """Ledoit–Wolf (2004, JMVA) intensity ``s (B,)`` as in scikit-learn's ``ledoit_wolf_shrinkage``.

    ``Xc`` may be ``None`` when the moments ``mom`` (:func:`_fourth_moments`) are given."""
    xp = ops(S)
    p = S.shape[-1]
    n = Xc.shape[-2] if mom is None else mom["n"]
    if mom is None:
        row2 = (Xc * Xc).sum(-1)
        sum_pi = (row2 * row2).sum(-1) / n
        delta_ = (S * S).sum((-2, -1))
    else:
        sum_pi, delta_ = mom["sum_pi"], mom["ss"]
    mu = xp.diagonal(S).sum(-1) / p
    beta = (sum_pi - delta_) / (p * n)  # (Σ_t row2_t² / n − ‖S‖²) / (p n)
    delta = (delta_ - 2.0 * mu * (mu * p) + p * mu * mu) / p
    beta = xp.minimum(beta, delta)
    s = _safe_div(beta, delta, 0.0)
    s = xp.where(beta == 0, xp.zeros_like(s), s)
    return xp.zeros_like(s) if p == 1 else s


def _oas_intensity(S: torch.Tensor, n: int, ss: torch.Tensor | None = None) -> torch.Tensor:
    """OAS (Chen et al. 2010) intensity ``s (B,)`` in scikit-learn's form (``ss = ‖S‖²_F``)."""
    xp = ops(S)
    p = S.shape[-1]
    mu = xp.diagonal(S).sum(-1) / p
    alpha = ((S * S).sum((-2, -1)) if ss is None else ss) / (p * p)
    num = alpha + mu * mu
    den = (n + 1) * (alpha - mu * mu / p)
    s = xp.where(den > 0, xp.minimum(_safe_div(num, den, 1.0), xp.ones_like(num)), 1.0)
    return xp.zeros_like(s) if p == 1 else s


def _cc_intensity(
    Xc: torch.Tensor | None,
    S: torch.Tensor,
    F: torch.Tensor | None,
    rbar: torch.Tensor,
    mom: dict | None = None,
    proj: tuple[torch.Tensor, torch.Tensor] | None = None,
    gamma: torch.Tensor | None = None,
) -> torch.Tensor:
    """Constant-correlation intensity of Ledoit & Wolf (2004, "Honey"; ``covCor``) in O(np + p²).

    ``κ̂ = (π̂ − ρ̂)/γ̂``, ``s = clip(κ̂/n, 0, 1)``.  The off-diagonal ``ρ̂`` term
    ``r̄ Σ_{i≠j} (s_j/s_i) θ_ij`` with ``θ_ij = 1/n Σ_t x_ti³ x_tj − s_ii s_ij``
    is summed without forming ``θ``: its full double sum is
    ``1/n Σ_t (Σ_i x_ti³/s_i)(Σ_j x_tj s_j) − sᵀSs`` and its diagonal is
    ``rho_diag`` (``s`` = standard deviations; zero-variance assets drop out).
    ``proj = (Σ_i x_ti³/s_i, Σ_j x_tj s_j)`` if the caller has them (then ``Xc`` may be
    ``None``).
    """
    xp = ops(S)
    mom = _fourth_moments(Xc, S) if mom is None else mom
    n = mom["n"]
    sd = xp.sqrt(xp.clamp_min(mom["var"], 0))
    if proj is None:
        pos = sd > 0
        inv_sd = xp.where(pos, 1.0 / xp.where(pos, sd, xp.ones_like(sd)), 0.0)
        proj = (_matvec(mom["Y2"] * Xc, inv_sd), _matvec(Xc, sd))
    sSs = (row_times(sd, S) * sd).sum(-1)
    theta_sum = (proj[0] * proj[1]).sum(-1) / n - sSs - mom["rho_diag"]
    rho = mom["rho_diag"] + rbar * theta_sum
    gamma = _sq_dist(S, F) if gamma is None else gamma
    kappa = _safe_div(mom["pihat"] - rho, gamma, 0.0)
    return xp.clip(kappa / n, 0.0, 1.0)


def _sq_dist(S: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """``γ̂ = ‖S − F‖²_F`` per sample."""
    D = S - F
    return D.square_().sum((-2, -1))


def _matvec(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``A v`` for ``A (B, r, c)``, ``v (B, c)`` -> ``(B, r)`` (as ``vᵀAᵀ``: faster on CPU)."""
    return row_times(v, A.transpose(-1, -2))


def _sf_intensity(
    Xc: torch.Tensor | None,
    S: torch.Tensor,
    F: torch.Tensor | None,
    parts: dict,
    mom: dict | None = None,
    proj: tuple[torch.Tensor, torch.Tensor] | None = None,
    gamma: torch.Tensor | None = None,
) -> torch.Tensor:
    """Single-factor intensity of Ledoit & Wolf (2003, JEF; ``covMarket``) in O(np + p²).

    ``s = clip((π̂ − ρ̂)/γ̂ / n, 0, 1)``.  With the market ``m_t``, ``c = cov(x, m)``,
    ``v = var(m)`` and ``y_t = Σ_j x_tj c_j``, the off-diagonal sums of the
    authors' ``v1 = 1/n Y2ᵀZ − c∘S`` and ``v3 = 1/n ZᵀZ − v S`` (``Z = x∘m``)
    are ``Σ_ij v1_ij c_j = 1/n Σ_t row2_t m_t y_t − cᵀSc`` and
    ``Σ_ij v3_ij c_i c_j = 1/n Σ_t m_t² y_t² − v cᵀSc``, minus their diagonals
    ``1/n Σ_t m_t Σ_i x_ti³ c_i − Σ_i c_i² s_ii`` and
    ``1/n Σ_t m_t² Σ_i x_ti² c_i² − v Σ_i c_i² s_ii``.
    ``proj = (y, Σ_i x_ti³ c_i, Σ_i x_ti² c_i²)`` if the caller has them (then ``Xc``
    may be ``None``).
    """
    xp = ops(S)
    mom = _fourth_moments(Xc, S) if mom is None else mom
    n = mom["n"]
    m, covmkt, varmkt = parts["m"], parts["covmkt"], parts["varmkt"]
    var = mom["var"]
    c2 = covmkt * covmkt
    if proj is None:
        Y2 = mom["Y2"]
        proj = (_matvec(Xc, covmkt), _matvec(Y2 * Xc, covmkt), _matvec(Y2, c2))
    y, y3, y2c2 = proj
    cSc = (row_times(covmkt, S) * covmkt).sum(-1)
    c2var = (c2 * var).sum(-1)
    m2 = m * m
    full1 = (mom["row2"] * m * y).sum(-1) / n - cSc
    diag1 = (m * y3).sum(-1) / n - c2var
    full3 = (m2 * y * y).sum(-1) / n - varmkt * cSc
    diag3 = (m2 * y2c2).sum(-1) / n - varmkt * c2var
    roff1, roff3 = full1 - diag1, full3 - diag3
    ok = varmkt > 0
    safe_var = xp.where(ok, varmkt, xp.ones_like(varmkt))
    rho_off = xp.where(ok, 2 * roff1 / safe_var - roff3 / safe_var**2, 0.0)
    gamma = _sq_dist(S, F) if gamma is None else gamma
    kappa = _safe_div(mom["pihat"] - (mom["rho_diag"] + rho_off), gamma, 0.0)
    return xp.clip(kappa / n, 0.0, 1.0)


def shrinkage_intensities(
    Xc: torch.Tensor, S: torch.Tensor, targets: tuple | None = None
) -> torch.Tensor:
    """The four classical intensities ``(B, 4)`` (LW, OAS, constant correlation, single factor).

    From already validated demeaned returns ``Xc (B, n, p)`` and ``S = XcᵀXc/n``
    (:func:`shrinklab._validation.center`), in O(np + p²) per sample with the
    fourth-moment sums and the projections of ``Xc`` and ``Xc³`` shared: the
    same values as :func:`ledoit_wolf`, :func:`oas`,
    :func:`lw_constant_correlation` and :func:`lw_single_factor` with
    ``return_shrinkage=True`` (Ledoit & Wolf 2004 JMVA; Chen et al. 2010;
    Ledoit & Wolf 2004 JPM; Ledoit & Wolf 2003 JEF).  ``targets = (F_cc, r̄,
    F_sf, parts)`` from :func:`shrinklab.core.targets.constant_correlation_target` and
    :func:`shrinklab.core.targets.single_factor_target`, if the caller has them.
    """
    if targets is None:
        F_cc, rbar = constant_correlation_target(S)
        F_sf, parts = single_factor_target(Xc, S)
    else:
        F_cc, rbar, F_sf, parts = targets
    stats = intensity_stats(Xc, S, parts["covmkt"])
    return intensities_from_stats(stats, S, (F_cc, rbar, F_sf, parts))


def intensity_stats(
    Xc: torch.Tensor,
    S: torch.Tensor,
    covmkt: torch.Tensor,
    Y2: torch.Tensor | None = None,
    sum_y4: torch.Tensor | None = None,
    x_proj: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """Every sum over the returns that :func:`intensities_from_stats` needs, O(np) per sample.

    ``Xc (B, n, p)`` demeaned returns, ``S = XcᵀXc/n``, ``covmkt (B, p)`` the
    single-factor market covariances (:func:`shrinklab.core.targets.market_parts`).
    Returns the fourth-moment sums of :func:`_fourth_moments` (without the
    ``(B, n, p)`` array) and the projections ``proj_cc``, ``proj_sf`` of
    :func:`_cc_intensity` / :func:`_sf_intensity`: vectors of length ``n`` or
    ``p`` only, so a caller can compute them in cache-sized pieces of the batch
    and concatenate them (``torch.cat`` along dim 0 of every entry but ``n``).
    A caller that has ``Y2 = Xc∘Xc``, ``sum_y4 = Σ_ti x_ti⁴`` and ``x_proj = (Xc σ,
    Xc covmkt)`` (``σ`` the standard deviations) may pass them; ``Y2`` is then
    overwritten (with ``Xc³``).  Each product of an ``n × p`` array with vectors is one
    skinny GEMM (:func:`shrinklab.core.linalg.matvecs`; the row sums of ``Y2`` ride along).
    """
    xp = ops(S)
    Y2 = Xc * Xc if Y2 is None else Y2
    c2 = covmkt * covmkt
    y2c2, row2 = matvecs(Y2, c2, xp.ones_like(c2))
    mom = _fourth_moments(Xc, S, Y2, sum_y4, row2)
    sd = xp.sqrt(xp.clamp_min(mom["var"], 0))
    pos = sd > 0
    inv_sd = xp.where(pos, 1.0 / xp.where(pos, sd, xp.ones_like(sd)), 0.0)
    # Xc³ is formed in place of Xc² once Xc² is no longer needed (one (B, n, p) temporary).
    x_sd, x_c = matvecs(Xc, sd, covmkt) if x_proj is None else x_proj
    Y3 = xp.mul_(mom.pop("Y2"), Xc)
    x3_isd, x3_c = matvecs(Y3, inv_sd, covmkt)
    return {**mom, "proj_cc": (x3_isd, x_sd), "proj_sf": (x_c, x3_c, y2c2)}


def intensities_from_stats(
    stats: dict, S: torch.Tensor, targets: tuple, gamma: tuple | None = None
) -> torch.Tensor:
    """:func:`shrinkage_intensities` ``(B, 4)`` from :func:`intensity_stats` and the
    targets ``(F_cc, r̄, F_sf, parts)``, in O(p²) per sample (no returns needed).

    ``gamma = (‖S − F_cc‖², ‖S − F_sf‖²)`` if the caller has them (e.g. the diagonal
    of :func:`shrinklab.core.targets.quadratic_form`'s ``G``); then ``F_cc``, ``F_sf``
    may be ``None``."""
    F_cc, rbar, F_sf, parts = targets
    g_cc, g_sf = (None, None) if gamma is None else gamma
    n = stats["n"]
    return ops(S).stack(
        [
            _lw_intensity(None, S, stats),
            _oas_intensity(S, n, stats["ss"]),
            _cc_intensity(None, S, F_cc, rbar, stats, stats["proj_cc"], g_cc),
            _sf_intensity(None, S, F_sf, parts, stats, stats["proj_sf"], g_sf),
        ],
        dim=-1,
    )


def ledoit_wolf(X: Any, *, return_shrinkage: bool = False) -> Result:
    """Linear shrinkage to the scaled identity of Ledoit & Wolf (2004).

    Ledoit, O. & Wolf, M. (2004) "A well-conditioned estimator for
    large-dimensional covariance matrices", J. Multivariate Anal. 88, 365-411.
    ``Σ̂ = (1 − s) S + s (tr S/p) I`` with ``s = min(β̂, δ̂)/δ̂``; identical to
    scikit-learn's ``LedoitWolf(assume_centered=False)`` (``s = 0`` for p = 1
    or when ``β̂ = 0``).
    """
    Xc, S, batched = _prepare(X)
    p = Xc.shape[-1]
    mu = torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) / p
    s = _lw_intensity(Xc, S)
    return _finish(_blend_identity(S, mu, s), s, batched, return_shrinkage)


def oas(X: Any, *, return_shrinkage: bool = False) -> Result:
    """Oracle approximating shrinkage to the scaled identity (Chen et al. 2010).

    Chen, Y., Wiesel, A., Eldar, Y. C. & Hero, A. O. (2010) "Shrinkage
    algorithms for MMSE covariance estimation", IEEE Trans. Signal Process.
    58(10), 5016-5029; in the form of scikit-learn's ``OAS`` (which it matches):
    ``s = min((ᾱ + μ²) / ((n + 1)(ᾱ − μ²/p)), 1)`` with ``ᾱ = mean(S²)``,
    ``μ = tr S/p``; ``s = 1`` when the denominator is not positive, ``s = 0`` for p = 1.
    """
    Xc, S, batched = _prepare(X)
    n, p = Xc.shape[-2:]
    mu = torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) / p
    s = _oas_intensity(S, n)
    return _finish(_blend_identity(S, mu, s), s, batched, return_shrinkage)


def lw_constant_correlation(X: Any, *, return_shrinkage: bool = False) -> Result:
    """Shrinkage to the constant-correlation target (Ledoit & Wolf 2004, "Honey").

    Ledoit, O. & Wolf, M. (2004) "Honey, I shrunk the sample covariance
    matrix", J. Portfolio Management 30(4), 110-119; computed as in the
    authors' ``covCor`` code (divisor ``n``): ``κ̂ = (π̂ − ρ̂)/γ̂``,
    ``s = clip(κ̂/n, 0, 1)``, with ``π̂`` and ``ρ̂`` summed in O(np + p²)
    (no ``(p, p)`` fourth-moment matrices).  Zero-variance assets are left out of
    the average correlation and of ``ρ̂`` (0/0 = 0); ``s = 0`` when ``γ̂ = 0``
    (target = S).
    """
    Xc, S, batched = _prepare(X)
    F, rbar = constant_correlation_target(S)
    s = _cc_intensity(Xc, S, F, rbar)
    return _finish(_blend(S, F, s), s, batched, return_shrinkage)


def lw_single_factor(X: Any, *, return_shrinkage: bool = False) -> Result:
    """Shrinkage to the single-index (market) target (Ledoit & Wolf 2003).

    Ledoit, O. & Wolf, M. (2003) "Improved estimation of the covariance matrix
    of stock returns with an application to portfolio selection", J. Empirical
    Finance 10(5), 603-621; computed as in the authors' ``covMarket`` code
    (equal-weighted market, divisor ``n``): ``s = clip((π̂ − ρ̂)/γ̂ / n, 0, 1)``,
    with ``π̂`` and ``ρ̂`` summed in O(np + p²); ``s = 0`` when ``γ̂ = 0``.
    """
    Xc, S, batched = _prepare(X)
    F, parts = single_factor_target(Xc, S)
    s = _sf_intensity(Xc, S, F, parts)
    return _finish(_blend(S, F, s), s, batched, return_shrinkage)


def qis(X: Any, *, return_shrinkage: bool = False) -> Result:
    """Quadratic-inverse shrinkage, QIS (Ledoit & Wolf 2022).

    Ledoit, O. & Wolf, M. (2022) "Quadratic shrinkage for large covariance
    matrices", Bernoulli 28(3), 1519-1547.  Nonlinear shrinkage of the sample
    eigenvalues (eigenvectors kept, trace preserved) following the authors'
    published code: divisor ``n − 1`` after demeaning, handles ``p > n``.  A
    constant column keeps zero variance/covariance (QIS is applied to the other
    assets).  With ``return_shrinkage`` the intensity is ``None``.
    """
    Xt, batched = as_returns(X)
    return _finish(qis_from_returns(Xt), None, batched, return_shrinkage)


# --------------------------------------------------------------------------- oracles
def fsopt(X: Any, sigma: Any) -> torch.Tensor:
    """Finite-sample optimal rotation-equivariant estimator ``U diag(uᵢᵀΣuᵢ) Uᵀ``.

    ``U`` are the eigenvectors of the sample covariance (Ledoit & Wolf 2012,
    "Nonlinear shrinkage estimation of large-dimensional covariance matrices",
    Ann. Statist. 40(2); the "FSOPT" reference of the PRIAL in Ledoit & Wolf
    2022).  ``sigma`` is ``(p, p)`` (shared) or ``(B, p, p)``.  When ``p > n`` the
    basis of the sample null space is the one returned by ``torch.linalg.eigh``.
    """
    Xc, S, batched = _prepare(X)
    Sig = as_matrices(sigma, like=S, name="sigma")
    _, U = torch.linalg.eigh(S)
    d = (U * (Sig @ U)).sum(-2)  # uᵢᵀ Σ uᵢ
    out = (U * d.unsqueeze(-2)) @ U.transpose(-1, -2)
    return unbatch(0.5 * (out + out.transpose(-1, -2)), batched)


def oracle_weights(X: Any, sigma: Any) -> torch.Tensor:
    """Multi-target oracle weights ``w* (B, K)`` (or ``(K,)``).

    ``w* = argmin ‖S + Σ_k w_k (T_k − S) − Σ‖_F`` over ``w ≥ 0, Σw ≤ 1``, with the
    targets :data:`shrinklab.core.targets.TARGET_NAMES`; solved exactly by
    :func:`solve_simplex_qp` on the quadratic form of
    :func:`shrinklab.core.targets.quadratic_form`.
    """
    Xc, S, batched = _prepare(X)
    Sig = as_matrices(sigma, like=S, name="sigma")
    T = stack_targets(Xc, S, TARGET_NAMES)
    G, c, _ = quadratic_form(S, T, Sig)
    return unbatch(solve_simplex_qp(G, c), batched)


CLASSICAL_ESTIMATORS: dict[str, Any] = {
    "sample": sample_covariance,
    "ledoit_wolf": ledoit_wolf,
    "oas": oas,
    "constant_correlation": lw_constant_correlation,
    "single_factor": lw_single_factor,
    "qis": qis,
}


"""The classical estimators by report name (batched: ``f(X (B, n, p)) -> (B, p, p)``);
the one registry used by :mod:`shrinklab.evaluation` and :mod:`shrinklab.evaluation.backtest`."""
