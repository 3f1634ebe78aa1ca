"""Tests of shrinklab.data.real_windows: windows without look-ahead, fold boundaries, GMV weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.core.targets import combine, shrinkage_targets
from shrinklab.data import returns as data
from shrinklab.data.real_windows import (
    build_windows,
    gmv_weights,
    pad_assets,
    realised_gmv_variance,
    rebalance_positions,
    split_windows,
)


def _returns(n: int = 400, p: int = 6, seed: int = 0, start: str = "2000-01-03") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(p, p)) / np.sqrt(p)
    X = rng.standard_t(5, size=(n, p)) @ A.T * 0.01
    idx = pd.bdate_range(start, periods=n)
    return pd.DataFrame(X, index=idx, columns=[f"a{i}" for i in range(p)])


def _spd(p: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(p, p))
    return A @ A.T / p + 0.1 * np.eye(p)


# ------------------------------------------------------------------ windows
def test_windows_are_the_right_slices_and_statistics():
    r = _returns()
    W = build_windows(r, window=40, horizon=10, step=15, asset_subsets=2, seed=1, features=False)
    R = r.to_numpy()
    assert len(W) == 3 * len(W.full)
    for g in W:
        assert g.X.shape[1:] == (40, g.p) and g.realised.shape[1:] == (10, g.p)
        for b in range(len(g)):
            t, cols = g.positions[b], g.assets[b]
            assert g.dates[b] == r.index[t]
            np.testing.assert_array_equal(g.X[b].numpy(), R[t - 40 : t][:, cols])
            np.testing.assert_array_equal(g.realised[b].numpy(), R[t : t + 10][:, cols])
            ref = np.cov(R[t - 40 : t][:, cols], rowvar=False, bias=True)
            np.testing.assert_allclose(g.S[b].numpy(), ref, rtol=1e-12, atol=1e-16)
        # targets: batched result equals the per-window computation
        b = len(g) // 2
        np.testing.assert_allclose(
            g.targets[b].numpy(), shrinkage_targets(g.X[b]).numpy(), rtol=1e-10, atol=1e-15
        )


def test_no_look_ahead_perturbing_the_future_leaves_the_window_unchanged():
    r = _returns()
    kw = dict(window=50, horizon=21, step=21, asset_subsets=1, seed=3, features=True)
    base = build_windows(r, **kw)
    full = base.full
    for k in (0, len(full) // 2, len(full) - 1):
        t = int(full.positions[k])
        pert = r.copy()
        pert.iloc[t:] = pert.iloc[t:] * 3.0 + 0.05  # everything from day t on changes
        new = build_windows(pert, **kw)
        for g_old, g_new in zip(base, new, strict=True):
            same = g_old.positions == t
            for name in ("X", "S", "targets", "features"):
                a, b = getattr(g_old, name)[same], getattr(g_new, name)[same]
                assert torch.equal(a, b), name
            # the realised returns do see the perturbation (they are the future)
            if same.any():
                assert not torch.equal(g_old.realised[same], g_new.realised[same])


def test_regime_is_the_one_known_before_the_rebalance_date():
    r = _returns()
    regimes = pd.Series(np.arange(len(r)) % 3, index=r.index)
    W = build_windows(r, window=30, horizon=5, step=7, regimes=regimes, features=False)
    g = W.full
    np.testing.assert_array_equal(g.regime.numpy(), (g.positions - 1) % 3)
    # changing the regime on the rebalance date itself (not known yet) changes nothing
    shifted = regimes.copy()
    shifted.iloc[g.positions] = 2
    assert torch.equal(
        build_windows(r, 30, 5, 7, regimes=shifted, features=False).full.regime, g.regime
    )
    with pytest.raises(ValueError, match="no code"):
        build_windows(r, 30, 5, 7, regimes=regimes.iloc[100:], features=False)


def test_windows_stay_inside_walk_forward_folds_and_before_the_test_period():
    idx = pd.bdate_range("1995-01-02", "2017-06-30")
    r = pd.DataFrame(
        np.random.default_rng(0).normal(0, 0.01, (len(idx), 4)), index=idx, columns=list("abcd")
    )
    splits = data.walk_forward_splits(r.index, n_folds=3, val_years=2, gap=10)
    test_pos = data.test_positions(r.index)
    for split in splits:
        tr, va = split_windows(
            r,
            split,
            window=60,
            horizon=21,
            step=10,
            asset_subsets=1,
            min_assets=2,
            seed=0,
            features=False,
        )
        for g in tr:
            assert g.positions.min() - 60 >= split.train[0]
            assert g.positions.max() + 21 - 1 <= split.train[-1]
        for g in va:
            assert g.positions.min() >= split.val[0]
            assert g.positions.max() + 21 - 1 <= split.val[-1]
            assert g.positions.max() + 21 - 1 < test_pos[0]
            assert g.p == 4  # no subsets in validation
        # the last realised day of training precedes validation by the gap
        assert split.val[0] - (tr.full.positions.max() + 20) > 10
    # estimation_inside keeps the estimation window inside [start, end]
    v = splits[-1].val
    inside = build_windows(
        r, 60, 21, 5, r.index[v[0]], r.index[v[-1]], estimation_inside=True, features=False
    )
    assert inside.full.positions.min() - 60 >= v[0]


def test_rebalance_positions_and_errors():
    idx = pd.bdate_range("2001-01-01", periods=100)
    pos = rebalance_positions(idx, window=10, horizon=5, step=7, start=idx[20], end=idx[60])
    np.testing.assert_array_equal(pos, np.arange(20, 57, 7))
    assert pos[-1] + 5 - 1 <= 60
    r = _returns(100, 3)
    with pytest.raises(ValueError, match="no rebalance date"):
        build_windows(r, window=90, horizon=20, features=False)
    bad = r.copy()
    bad.iloc[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_windows(bad, 10, features=False)
    with pytest.raises(ValueError, match="min_assets"):
        build_windows(r, 10, asset_subsets=2, min_assets=3, features=False)
    with pytest.raises(ValueError, match="window"):
        build_windows(r, 1, features=False)
    with pytest.raises(ValueError, match="DataFrame"):
        build_windows(r.to_numpy(), 10, features=False)


def test_asset_subsets_are_seeded_and_within_bounds():
    r = _returns(300, 8)
    a = build_windows(r, 30, 10, 10, asset_subsets=3, min_assets=3, seed=5, features=False)
    b = build_windows(r, 30, 10, 10, asset_subsets=3, min_assets=3, seed=5, features=False)
    c = build_windows(r, 30, 10, 10, asset_subsets=3, min_assets=3, seed=6, features=False)
    ps = sorted(g.p for g in a)
    assert ps[0] >= 3 and ps[-1] == 8 and len(ps) > 2
    for ga, gb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ga.assets, gb.assets)
    assert any(
        ga.p != gc.p or not np.array_equal(ga.assets, gc.assets)
        for ga, gc in zip(a, c, strict=False)
    )
    for g in a:
        assert all(len(set(row)) == g.p for row in g.assets)  # no repeated asset
    # every date gets exactly 1 + asset_subsets windows
    counts = pd.Series(np.concatenate([g.positions for g in a])).value_counts()
    assert (counts == 4).all()


def test_features_are_finite_and_select_and_to_work():
    r = _returns(300, 5)
    W = build_windows(r, 60, 21, 21, features=True)
    g = W.full
    assert g.features.shape == (len(g), len(FEATURE_NAMES))
    assert torch.isfinite(g.features).all()
    # the batched features from precomputed parts equal extract_features window by window
    np.testing.assert_allclose(
        g.features.numpy(), extract_features(g.X).numpy(), rtol=1e-10, atol=1e-12
    )
    sub = g.select([0, 2])
    assert torch.equal(sub.X, g.X[[0, 2]]) and list(sub.dates) == [g.dates[0], g.dates[2]]
    f32 = g.to("cpu", torch.float32)
    assert f32.X.dtype == torch.float32 and f32.positions is g.positions


# ------------------------------------------------------------------ GMV weights
def test_gmv_weights_closed_form_and_sum_to_one():
    covs = np.stack([_spd(7, s) for s in range(5)])
    w = gmv_weights(covs).numpy()
    for b in range(5):
        x = np.linalg.inv(covs[b]) @ np.ones(7)
        np.testing.assert_allclose(w[b], x / x.sum(), atol=1e-10, rtol=0)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(gmv_weights(covs[2]).numpy(), w[2], atol=1e-14)
    # minimal variance among fully invested portfolios
    rng = np.random.default_rng(0)
    v = rng.normal(size=(200, 7))
    v /= v.sum(1, keepdims=True)
    var_w = w[0] @ covs[0] @ w[0]
    assert np.all(np.einsum("ki,ij,kj->k", v, covs[0], v) >= var_w - 1e-14)


def test_gmv_weights_singular_fallback_and_errors():
    # zero-variance asset: the pseudo-inverse gives it no weight; the rest is the GMV of
    # the non-singular block
    C = np.diag([1.0, 2.0, 0.0])
    np.testing.assert_allclose(gmv_weights(C).numpy(), [2 / 3, 1 / 3, 0.0], atol=1e-14)
    # rank-deficient sample covariance (p > n) matches numpy's pinv formula
    X = np.random.default_rng(1).normal(size=(4, 6))
    S = np.cov(X, rowvar=False, bias=True)
    x = np.linalg.pinv(S, rcond=1e-12, hermitian=True) @ np.ones(6)
    np.testing.assert_allclose(gmv_weights(S).numpy(), x / x.sum(), atol=1e-8)
    np.testing.assert_allclose(gmv_weights(np.zeros((3, 3))).numpy(), np.full(3, 1 / 3))
    # a mixed batch gives each matrix its own route
    mixed = np.stack([_spd(3, 0), C])
    np.testing.assert_allclose(gmv_weights(mixed).numpy()[1], [2 / 3, 1 / 3, 0.0], atol=1e-14)
    with pytest.raises(ValueError, match="square"):
        gmv_weights(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        gmv_weights(np.full((2, 2), np.nan))


def test_gmv_weights_are_differentiable():
    C = torch.tensor(_spd(4, 3), requires_grad=True)
    assert torch.autograd.gradcheck(lambda M: gmv_weights(0.5 * (M + M.T)), (C,))


def test_realised_gmv_variance_matches_numpy():
    r = _returns(200, 4)
    W = build_windows(r, 50, 21, 30, features=False).full
    v = realised_gmv_variance(W.S, W.realised).numpy()
    for b in range(len(W)):
        x = np.linalg.solve(W.S[b].numpy(), np.ones(4))
        port = W.realised[b].numpy() @ (x / x.sum())
        assert v[b] == pytest.approx(np.var(port, ddof=1), rel=1e-10)


def test_restrict_gives_the_windows_build_windows_gives_for_the_shorter_period():
    r = _returns(400, 5)
    master = build_windows(r, 40, 10, 7, end=r.index[-1], asset_subsets=1, min_assets=2, seed=2)
    cut = r.index[250]
    direct = build_windows(r, 40, 10, 7, end=cut, features=True).full
    sub = master.restrict(end=cut)
    full = sub.full
    np.testing.assert_array_equal(full.positions, direct.positions)
    assert torch.equal(full.X, direct.X) and torch.equal(full.features, direct.features)
    for g in sub:
        assert (g.last_dates <= cut).all()
        np.testing.assert_array_equal(g.last_dates, r.index[g.positions + 9])
    later = master.restrict(start=r.index[300])
    assert all((g.dates >= r.index[300]).all() for g in later)
    with pytest.raises(ValueError, match="no window"):
        master.restrict(end=r.index[10])


def test_padding_keeps_the_gmv_weights_and_realised_variance_exact():
    r = _returns(300, 6)
    W = build_windows(r, 40, 15, 20, asset_subsets=2, min_assets=3, seed=4, features=False)
    small = [g for g in W if g.p < 6][0]
    S2, T2, R2, mask = pad_assets(small.S, small.targets, small.realised, 6)
    assert S2.shape[-1] == 6 and mask.sum(1).eq(small.p).all()
    w = torch.full((len(small), 5), 0.1, dtype=torch.float64)
    ref = gmv_weights(combine(small.S, small.targets, w))
    got = gmv_weights(combine(S2, T2, w), mask=mask)
    np.testing.assert_allclose(got[:, : small.p].numpy(), ref.numpy(), atol=1e-12)
    assert (got[:, small.p :] == 0).all()
    np.testing.assert_allclose(
        realised_gmv_variance(S2, R2, mask=mask).numpy(),
        realised_gmv_variance(small.S, small.realised).numpy(),
        rtol=1e-10,
    )
    # the pseudo-inverse route (singular real block) also gives the padding no weight
    C = torch.tensor(np.diag([1.0, 2.0, 0.0, 5.0]))
    m = torch.tensor([True, True, True, False])
    np.testing.assert_allclose(gmv_weights(C, mask=m).numpy(), [2 / 3, 1 / 3, 0, 0], atol=1e-14)
    with pytest.raises(ValueError, match="mask"):
        gmv_weights(C, mask=torch.ones(3, dtype=torch.bool))


def test_before_test_keeps_exactly_the_dates_before_the_test_period():
    idx = pd.date_range("2015-12-28", "2016-01-06", freq="D")
    frame = pd.DataFrame({"a": np.arange(len(idx), dtype=float)}, index=idx)
    got = data.before_test(frame)
    assert list(got.index) == list(idx[idx < pd.Timestamp("2016-01-01")])
    assert got.index.max() < data.TEST_START
    # what lies in the test period cannot change the result
    shaken = frame.copy()
    shaken.loc[shaken.index >= data.TEST_START, "a"] = 1e9
    pd.testing.assert_frame_equal(data.before_test(shaken), got)
    pd.testing.assert_series_equal(data.before_test(frame["a"]), got["a"])
    with pytest.raises(TypeError, match="DatetimeIndex"):
        data.before_test(frame.reset_index(drop=True))
