"""Tests of shrinklab.core.features against direct numpy / scipy / scikit-learn computations.

Tolerances: entries recomputed independently agree to 1e-10 (relative, float64);
invariances (asset permutation, scaling) hold to 1e-8 relative (eigen-solver
round-off); temporal-neutrality bounds are statistical (stated at each check).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.covariance import OAS, LedoitWolf

from shrinklab.core import estimators
from shrinklab.core.features import (
    FEATURE_NAMES,
    FEATURE_SCHEMA,
    RECENT_FRACTION,
    SPECTRUM_QUANTILES,
    classical_intensities,
    extract_features,
    features_from_parts,
    schema_for,
    target_gram,
    target_sq_distances,
)
from shrinklab.core.targets import TARGET_NAMES, shrinkage_targets

F = len(FEATURE_NAMES)
IDX = {k: i for i, k in enumerate(FEATURE_NAMES)}
# Features also invariant to rescaling each asset by its own positive factor.
PER_ASSET_INVARIANT = [
    "log_p_over_n",
    "log_n",
    "corr_mean",
    "corr_std",
    "kurt_mean",
    "kurt_median",
    "kurt_market",
    "log_vol_ratio_recent",
    "sq_autocorr_market",
]
TEMPORAL = ["log_vol_ratio_recent", "sq_autocorr_market"]


def _factor_returns(B: int, n: int, p: int, seed: int, df: float | None = None) -> np.ndarray:
    """Returns with one common factor (correlated assets), optionally Student-t tails."""
    rng = np.random.default_rng(seed)
    beta = 0.5 + rng.random((B, 1, p))
    f = rng.standard_normal((B, n, 1))
    e = rng.standard_normal((B, n, p)) * (0.5 + rng.random((B, 1, p)))
    X = f * beta + e
    if df is not None:
        X = X * np.sqrt(df / rng.chisquare(df, size=(B, n, 1)))
    return X


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


# --------------------------------------------------------------------------- schema/shape
def test_names_and_schema():
    assert len(set(FEATURE_NAMES)) == F
    assert FEATURE_SCHEMA == schema_for(FEATURE_NAMES)
    assert FEATURE_SCHEMA.startswith("v1-") and len(FEATURE_SCHEMA) == 13
    assert schema_for(FEATURE_NAMES[:-1]) != FEATURE_SCHEMA
    assert "regime" not in " ".join(FEATURE_NAMES)  # regime goes to the network embedding
    assert [f"dist_{k}" for k in TARGET_NAMES] == [n for n in FEATURE_NAMES if n[:5] == "dist_"]


@pytest.mark.parametrize("p", [5, 50, 200])
@pytest.mark.parametrize("n", [10, 120])
def test_same_length_for_any_p_n(p, n):
    X = _factor_returns(2, n, p, seed=p + n)
    out = extract_features(X)
    assert out.shape == (2, F) and out.dtype == torch.float64
    assert bool(torch.isfinite(out).all())
    assert extract_features(X[0]).shape == (1, F)
    assert math.isclose(float(out[0, IDX["log_p_over_n"]]), math.log(p / n), rel_tol=1e-12)
    assert math.isclose(float(out[0, IDX["log_n"]]), math.log(n), rel_tol=1e-12)


def test_accepts_numpy_torch_pandas_identically():
    import pandas as pd

    X = _factor_returns(1, 40, 6, seed=3)[0]
    a = extract_features(X)
    b = extract_features(torch.as_tensor(X))
    c = extract_features(pd.DataFrame(X))
    assert torch.equal(a, b)
    assert _rel(c, a) < 1e-12  # a DataFrame is column-major: BLAS round-off only


# --------------------------------------------------------------------------- edge cases
def _edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((60, 8))
    const = X.copy()
    const[:, [1, 5]] = 3.0
    all_const = np.full((30, 4), 2.5)
    dup = X.copy()
    dup[:, 3] = dup[:, 2]
    stale_end = X.copy()
    stale_end[-15:, :] = X.mean(0)  # recent rows exactly at the mean: zero recent variance
    return {
        "constant_columns": const,
        "all_constant": all_const,
        "p_gt_n": rng.standard_normal((10, 40)),
        "n_10": rng.standard_normal((10, 5)),
        "n_2": rng.standard_normal((2, 6)),
        "p_1": rng.standard_normal((25, 1)),
        "duplicate_columns": dup,
        "one_huge_outlier": np.where(np.arange(60)[:, None] == 7, 1e6, X),
        "heavy_tails_df2": X * np.sqrt(2.05 / rng.chisquare(2.05, size=(60, 1))),
        "tiny_scale": X * 1e-150,
        "stale_recent_window": stale_end,
    }


@pytest.mark.parametrize("case", list(_edge_cases()))
def test_finite_on_edge_cases(case):
    X = _edge_cases()[case]
    out = extract_features(X)
    assert out.shape == (1, F)
    bad = [FEATURE_NAMES[i] for i in torch.nonzero(~torch.isfinite(out[0])).flatten().tolist()]
    assert not bad, f"non-finite features {bad} for {case}"
    assert bool(torch.isfinite(out.float()).all())  # float32-ready


def test_constant_columns_are_left_out_of_cross_sectional_stats():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((80, 6))
    Xc = np.concatenate([X, np.full((80, 2), 1.7)], axis=1)
    a, b = extract_features(X)[0], extract_features(Xc)[0]
    for name in ("corr_mean", "corr_std", "logvar_std", "kurt_mean", "kurt_median", "kurt_market"):
        assert math.isclose(float(a[IDX[name]]), float(b[IDX[name]]), rel_tol=1e-10, abs_tol=1e-12)
    zero = extract_features(np.full((20, 3), 4.0))[0]
    assert float(zero.abs()[2:].max()) <= 1.0  # no spurious huge values when S = 0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="non-finite"):
        extract_features(np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="at least 2 observations"):
        extract_features(np.ones((1, 3)))
    X = _factor_returns(2, 20, 4, seed=0)
    with pytest.raises(ValueError, match="regime"):
        extract_features(X, regime=[0, 1, 2])
    with pytest.raises(ValueError, match="integer"):
        extract_features(X, regime=[0.5, 1.0])
    # a valid regime is accepted and does not change the columns
    assert torch.equal(extract_features(X, regime=[0, 2]), extract_features(X))


# --------------------------------------------------------------------------- invariances
def test_invariant_to_asset_permutation():
    X = _factor_returns(3, 70, 12, seed=1, df=5.0)
    X[1, :, 4] = 0.3  # a constant column moves with the permutation too
    perm = np.random.default_rng(2).permutation(12)
    a, b = extract_features(X), extract_features(X[:, :, perm])
    assert _rel(b, a) < 1e-8


@pytest.mark.parametrize("c", [1e-4, 3.0, -2.0, 1e5, 1e-150, 1e150])
def test_invariant_to_scaling_returns(c):
    X = _factor_returns(3, 50, 9, seed=4)
    a, b = extract_features(X), extract_features(c * X)
    assert _rel(b, a) < 1e-8


def test_per_asset_scaling_invariance_of_marked_features():
    X = _factor_returns(2, 90, 7, seed=6)
    d = np.exp(np.random.default_rng(7).normal(size=7))
    a, b = extract_features(X), extract_features(X * d)
    cols = [IDX[k] for k in PER_ASSET_INVARIANT]
    assert _rel(b[:, cols], a[:, cols]) < 1e-8
    # ... while spectrum-based ones do change (the documented difference is real)
    assert abs(float(b[0, IDX["top_share"]] - a[0, IDX["top_share"]])) > 1e-3


def test_only_temporal_features_depend_on_row_order():
    X = _factor_returns(2, 100, 8, seed=8)
    rows = np.random.default_rng(9).permutation(100)
    a, b = extract_features(X), extract_features(X[:, rows])
    other = [i for i, k in enumerate(FEATURE_NAMES) if k not in TEMPORAL]
    assert _rel(b[:, other], a[:, other]) < 1e-8
    assert (
        float((b[:, [IDX[k] for k in TEMPORAL]] - a[:, [IDX[k] for k in TEMPORAL]]).abs().max())
        > 1e-6
    )


# --------------------------------------------------------------------------- values
def test_values_against_direct_numpy():
    X = _factor_returns(2, 64, 10, seed=12, df=6.0)
    X[1, :, 3] = -1.0  # constant column in the second sample
    out = extract_features(X).numpy()
    for b in range(2):
        x = X[b]
        n, p = x.shape
        xc = x - x.mean(0)
        S = xc.T @ xc / n
        lam = np.linalg.eigvalsh(S).clip(min=0)
        f = dict(zip(FEATURE_NAMES, out[b], strict=True))
        share = lam / lam.sum()
        np.testing.assert_allclose(f["top_share"], lam.max() / lam.sum(), rtol=1e-10)
        nz = share[share > 0]
        np.testing.assert_allclose(
            f["eff_rank_ratio"], np.exp(-(nz * np.log(nz)).sum()) / p, rtol=1e-10
        )
        qs = np.quantile(lam / lam.mean(), SPECTRUM_QUANTILES)
        got = [f[f"spec_q{round(100 * q):02d}"] for q in SPECTRUM_QUANTILES]
        np.testing.assert_allclose(got, qs, rtol=1e-10)
        edge = lam.mean() * (1 + np.sqrt(p / n)) ** 2
        np.testing.assert_allclose(f["mp_exceed_frac"], (lam > edge).mean(), rtol=0, atol=0)
        np.testing.assert_allclose(f["mp_top_log_ratio"], np.log(lam.max() / edge), rtol=1e-10)
        keep = x.std(0) > 0
        R = np.corrcoef(x[:, keep], rowvar=False)
        off = R[~np.eye(R.shape[0], dtype=bool)]
        np.testing.assert_allclose(f["corr_mean"], off.mean(), rtol=1e-10)
        np.testing.assert_allclose(f["corr_std"], off.std(), rtol=1e-10)
        np.testing.assert_allclose(f["logvar_std"], np.log(x[:, keep].var(0)).std(), rtol=1e-10)
        k = scipy.stats.kurtosis(x[:, keep], axis=0, fisher=True, bias=True)
        np.testing.assert_allclose(f["kurt_mean"], k.mean(), rtol=1e-10)
        np.testing.assert_allclose(f["kurt_median"], np.sort(k)[(len(k) - 1) // 2], rtol=1e-10)
        z = (xc[:, keep] / x[:, keep].std(0)).sum(1) / p
        np.testing.assert_allclose(
            f["kurt_market"], scipy.stats.kurtosis(z, fisher=True, bias=True), rtol=1e-10
        )
        m = max(2, math.ceil(RECENT_FRACTION * n))
        ratio = (xc[-m:, keep] ** 2).mean(0) / (xc[:, keep] ** 2).mean(0)
        np.testing.assert_allclose(
            f["log_vol_ratio_recent"], 0.5 * np.log(ratio.mean()), rtol=1e-10
        )
        y = z**2 - (z**2).mean()
        np.testing.assert_allclose(
            f["sq_autocorr_market"], (y[1:] * y[:-1]).sum() / (y * y).sum(), rtol=1e-10
        )
        T = shrinkage_targets(x).numpy()
        d = np.sqrt(((T - S) ** 2).sum((1, 2))) / np.sqrt((S * S).sum())
        np.testing.assert_allclose([f[f"dist_{t}"] for t in TARGET_NAMES], d, rtol=1e-10)


def test_intensities_match_scikit_learn_and_estimators():
    X = _factor_returns(2, 40, 15, seed=13)
    out = extract_features(X).numpy()
    for b in range(2):
        np.testing.assert_allclose(
            out[b, IDX["int_lw"]], LedoitWolf().fit(X[b]).shrinkage_, rtol=1e-10
        )
        np.testing.assert_allclose(out[b, IDX["int_oas"]], OAS().fit(X[b]).shrinkage_, rtol=1e-10)
    _, s_cc = estimators.lw_constant_correlation(X, return_shrinkage=True)
    _, s_sf = estimators.lw_single_factor(X, return_shrinkage=True)
    np.testing.assert_allclose(out[:, IDX["int_cc"]], s_cc.numpy(), rtol=1e-12)
    np.testing.assert_allclose(out[:, IDX["int_sf"]], s_sf.numpy(), rtol=1e-12)


def test_features_from_parts_reuses_given_pieces():
    from shrinklab.core.linalg import sample_cov_from_demeaned
    from shrinklab.core.targets import quadratic_form
    from shrinklab.core.validation import demean

    X = torch.as_tensor(_factor_returns(3, 30, 7, seed=14))
    Xc = demean(X)
    S = sample_cov_from_demeaned(Xc)
    evals, _ = torch.linalg.eigh(S)
    T = shrinkage_targets(X)
    G, _, _ = quadratic_form(S, T, torch.eye(7, dtype=torch.float64).expand(3, 7, 7))
    dist = torch.diagonal(G, dim1=-2, dim2=-1)
    assert _rel(dist, target_sq_distances(S, T)) < 1e-12
    assert _rel(G, target_gram(S, T)) < 1e-12
    got = features_from_parts(X, Xc, S, evals, G, classical_intensities(X))
    assert _rel(got, extract_features(X)) < 1e-10
    with pytest.raises(ValueError, match="target_gram"):
        features_from_parts(X, Xc, S, evals, G[:, :3, :3], classical_intensities(X))


def _simplex_qp_slsqp(G: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Independent reference: min wᵀGw − 2cᵀw over w ≥ 0, Σw ≤ 1 by SciPy's SLSQP."""
    from scipy.optimize import minimize

    K = len(c)
    res = minimize(
        lambda w: w @ G @ w - 2 * c @ w,
        np.full(K, 0.5 / K),
        jac=lambda w: 2 * G @ w - 2 * c,
        bounds=[(0, None)] * K,
        constraints=[{"type": "ineq", "fun": lambda w: 1 - w.sum(), "jac": lambda w: -np.ones(K)}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    )
    return res.x


def test_multi_target_features_solve_the_qp_of_the_targets_geometry():
    """mt_<target> = argmin wᵀGw − 2ĉᵀw (w ≥ 0, Σw ≤ 1) over identity, constant
    correlation, single factor and QIS, with G the exact Gram of T_k − S and
    ĉ_k = ρ̂_k G_kk (ρ̂: LW, CC, SF intensities; 1 for QIS): SLSQP at 1e-6."""
    from shrinklab.core.linalg import sample_cov_from_demeaned
    from shrinklab.core.validation import demean

    rng = np.random.default_rng(21)
    Xs = [_factor_returns(2, 40, 12, seed=22), rng.standard_normal((2, 30, 50))]
    Xs.append(rng.standard_t(4, size=(2, 60, 8)) * rng.uniform(0.5, 3, size=8))
    for X in Xs:
        X = torch.as_tensor(X)
        f = extract_features(X).numpy()
        S = sample_cov_from_demeaned(demean(X))
        G = target_gram(S, shrinkage_targets(X)).numpy()
        ints = classical_intensities(X).numpy()
        rho = {"identity": ints[:, 0], "constant_correlation": ints[:, 2],
               "single_factor": ints[:, 3], "qis": np.ones(len(X))}  # fmt: skip
        idx = [TARGET_NAMES.index(k) for k in rho]
        for b in range(len(X)):
            Gu = G[b][np.ix_(idx, idx)]
            c = np.array([rho[k][b] for k in rho]) * np.diag(Gu)
            ref = _simplex_qp_slsqp(Gu / np.trace(Gu), c / np.trace(Gu))
            got = [f[b, IDX[f"mt_{k}"]] for k in rho]
            np.testing.assert_allclose(got, ref, atol=1e-6)
            assert 0 <= sum(got) <= 1 + 1e-12
    # scale invariance (the features are c-invariant): same weights for 1e3·X
    X = torch.as_tensor(Xs[0])
    cols = [IDX[f"mt_{k}"] for k in rho]
    np.testing.assert_allclose(
        extract_features(1e3 * X)[:, cols], extract_features(X)[:, cols], atol=1e-10
    )


# --------------------------------------------------------------------------- semantics
def test_temporal_features_neutral_on_iid_and_informative_on_regimes():
    rng = np.random.default_rng(15)
    n, p = 2000, 10
    iid = rng.standard_normal((n, p))
    f = extract_features(iid)[0]
    # i.i.d.: log ratio sd ≈ sqrt(2/(0.2 n p))/2 ≈ 0.016, autocorr sd ≈ 1/sqrt(n) ≈ 0.022
    assert abs(float(f[IDX["log_vol_ratio_recent"]])) < 0.08
    assert abs(float(f[IDX["sq_autocorr_market"]])) < 0.1
    shock = iid.copy()
    shock[-400:] *= 3.0  # last 20 % three times as volatile
    g = extract_features(shock)[0]
    assert float(g[IDX["log_vol_ratio_recent"]]) > math.log(3.0) - 0.5
    # volatility clustering: slowly varying common scale
    vol = np.exp(np.cumsum(rng.normal(scale=0.15, size=n)) * 0.5)
    vol = vol / vol.mean()
    h = extract_features(iid * vol[:, None])[0]
    assert float(h[IDX["sq_autocorr_market"]]) > 0.2


def test_spectrum_features_detect_a_strong_factor():
    rng = np.random.default_rng(16)
    noise = rng.standard_normal((200, 40))
    factor = noise + 2.0 * rng.standard_normal((200, 1))
    a, b = extract_features(noise)[0], extract_features(factor)[0]
    # Pure noise: λ_max sits at the MP edge up to Tracy-Widom fluctuations (over 200
    # seeds the log ratio ranged in [-0.11, 0.06] and at most one eigenvalue exceeded).
    assert float(a[IDX["mp_exceed_frac"]]) <= 1 / 40
    assert abs(float(a[IDX["mp_top_log_ratio"]])) < 0.2
    assert float(b[IDX["mp_exceed_frac"]]) >= 1 / 40
    assert float(b[IDX["mp_top_log_ratio"]]) > 2.0
    assert float(b[IDX["top_share"]]) > 0.5 > float(a[IDX["top_share"]])
    assert float(b[IDX["corr_mean"]]) > 0.6


def test_targets_from_parts_equals_shrinkage_targets():
    from shrinklab.core.features import targets_from_parts
    from shrinklab.core.validation import center

    for shape in ((3, 40, 6), (2, 8, 15)):  # p < n and p > n (QIS Gram route)
        X = torch.as_tensor(_factor_returns(*shape, seed=shape[2]))
        X[0, :, 1] = 0.25  # a constant column
        Xc, S = center(X)
        assert _rel(targets_from_parts(Xc, S), shrinkage_targets(X)) < 1e-12


def test_shared_eigh_targets_and_reused_cc_sf_targets_equal_the_direct_ones():
    """targets_from_parts with the eigh of S (QIS without its own eigh) equals
    shrinkage_targets (1e-10); intensities_from_targets (CC / SF targets reused)
    equals classical_intensities (1e-12), incl. p > n and a constant column."""
    from shrinklab.core.features import intensities_from_targets, targets_from_parts
    from shrinklab.core.validation import center

    for shape in ((4, 40, 6), (3, 8, 15), (2, 30, 30)):
        X = torch.as_tensor(_factor_returns(*shape, seed=shape[1], df=5.0))
        X[0, :, 1] = 0.25  # a constant column
        Xc, S = center(X)
        extras: dict = {}
        T = targets_from_parts(Xc, S, torch.linalg.eigh(S), extras)
        assert set(extras) == {"rbar", "sf_parts"}
        assert _rel(T, shrinkage_targets(X)) < 1e-10
        got = intensities_from_targets(Xc, S, T, extras)
        assert _rel(got, classical_intensities(X)) < 1e-12
        assert bool((got[:, 2:] > 0).any())  # CC / SF intensities not all clipped to 0


def test_window_sizes_invert_the_size_features():
    """``window_sizes`` reads ``n`` and ``p`` back from ``log_n`` and ``log_p_over_n``."""
    from shrinklab.core.features import window_sizes

    rng = np.random.default_rng(3)
    rows = [extract_features(rng.standard_normal((n, p))) for n, p in ((50, 7), (250, 30), (3, 40))]
    n, p = window_sizes(torch.cat(rows))
    np.testing.assert_array_equal(n, [50, 250, 3])
    np.testing.assert_array_equal(p, [7, 30, 40])
    with pytest.raises(ValueError, match="features must be"):
        window_sizes(np.zeros((2, 5)))
