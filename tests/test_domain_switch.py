"""shrinklab.studies.domain_switch: decision 0066's distance, switch and rule."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import mahalanobis

from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.data.universes import Universe
from shrinklab.models.network import ShrinkageOutput
from shrinklab.studies import domain_switch as ds
from tests._one_factor import one_factor_returns


def test_feature_distance_is_scipys_mahalanobis_on_standardised_features():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((300, 4)) @ rng.standard_normal((4, 4)) + [1.0, -2.0, 0.0, 5.0]
    ref[:, 3] *= 100.0  # scales differ: standardised first
    d = ds.FeatureDistance(ref, ridge=0.05)
    mu, sd = ref.mean(0), ref.std(0)
    Z = (ref - mu) / sd
    VI = np.linalg.inv(np.cov(Z, rowvar=False) + 0.05 * np.eye(4))
    x = rng.standard_normal((5, 4)) * 3
    expected = [mahalanobis((xi - mu) / sd, np.zeros(4), VI) ** 2 for xi in x]
    np.testing.assert_allclose(d(x), expected, rtol=1e-12)
    np.testing.assert_allclose(d(torch.as_tensor(x, dtype=torch.float32)), d(x.astype(np.float32)))
    # the reference's mean is at distance 0; a constant column is ignored, not a NaN
    const = np.column_stack([ref, np.full(300, 7.0)])
    dc = ds.FeatureDistance(const)
    assert dc(const.mean(0, keepdims=True))[0] == pytest.approx(0.0, abs=1e-20)
    assert np.isfinite(dc(const)).all()


def test_feature_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="N > F"):
        ds.FeatureDistance(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="finite"):
        ds.FeatureDistance(np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="ridge"):
        ds.FeatureDistance(np.random.default_rng(0).standard_normal((10, 2)), ridge=0)
    d = ds.FeatureDistance(np.random.default_rng(0).standard_normal((10, 2)))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        d(np.zeros((3, 3)))


class _Const:
    """predict: every row gets intensity ``alpha`` on one target (``k``)."""

    def __init__(self, alpha: float, k: int, extra=None) -> None:
        self.alpha, self.k, self.extra = alpha, k, extra or {}

    def predict(self, features, regime=None):
        n = len(features)
        w = torch.zeros(n, 5)
        w[:, self.k] = 1.0
        return ShrinkageOutput(torch.full((n,), self.alpha), w, torch.full((n,), float(self.k)))


def test_domain_switch_serves_far_rows_with_the_far_model():
    rng = np.random.default_rng(1)
    d = ds.FeatureDistance(rng.standard_normal((200, 2)))
    x = np.array([[0.0, 0.0], [10.0, 0.0], [0.5, -0.5], [0.0, -9.0]])
    s = ds.DomainSwitch(_Const(0.3, 0, {"volatility_timing": 0.5}), _Const(0.7, 4), d, tau=9.0)
    far = d(x) > 9.0
    assert far.tolist() == [False, True, False, True]
    out = s.predict(x)
    np.testing.assert_array_equal(out.alpha.numpy(), np.where(far, 0.7, 0.3).astype(np.float32))
    assert out.weights[:, 4].tolist() == far.astype(float).tolist()
    assert out.log_var.tolist() == [0.0] * 4  # the near model's everywhere
    assert s.extra == {"volatility_timing": 0.5}  # the near model's attributes pass through
    back = pickle.loads(pickle.dumps(s))  # the fold backtest's workers get it pickled
    torch.testing.assert_close(back.predict(x).intensities, out.intensities)
    with pytest.raises(ValueError, match="tau"):
        ds.DomainSwitch(_Const(0.3, 0), _Const(0.7, 4), d, tau=float("nan"))


def test_window_features_are_the_backtests_windows():
    idx = pd.bdate_range("2001-01-01", periods=400)
    r = pd.DataFrame(one_factor_returns(400, 5, 3), index=idx)
    u = Universe("halves", "h", r, idx[130])
    f = ds.window_features([u], windows=(60, 120), step=21)
    ends60 = list(range(130, 400, 21))  # both windows fit before the first date
    assert (f.window == 60).sum() == len(ends60) and (f.window == 120).sum() == len(ends60)
    last = f[f.window == 120].iloc[-1][list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    t = ends60[-1]
    np.testing.assert_allclose(last, extract_features(r.to_numpy()[t - 120 : t])[0].numpy())
    assert set(f.family) == {"halves"} and set(f.fold) == {"h"}
    with pytest.raises(ValueError, match="no universe"):
        ds.window_features([Universe("x", "x", r.iloc[:50], idx[0])], windows=(60,))


def _rows(family, keys, vols):
    return pd.DataFrame(
        [{"family": family, "fold": f, "window": w, "estimator": e, "ann_vol": v}
         for (f, w, e), v in zip(keys, vols, strict=True)]
    )  # fmt: skip


def _gains(values, ses):
    return pd.DataFrame({"rep": 0, "scenario": [f"s{i}" for i in range(len(values))],
                         "prial_gain_B_minus_A": values, "se": ses})  # fmt: skip


def test_rule_0066_by_hand():
    keys = [(f"u{i}", 60, e) for i in range(3) for e in ("final", "switch")]
    funds = _rows("funds", keys, [10.0, 9.9, 10.0, 9.8, 10.0, 10.0])  # −1, −2, 0 %: −1 ± 0.58
    sk = [(f"h{i}", 60, e) for i in range(2) for e in ("final", "switch", "oas")]
    stock = _rows("halves", sk, [9.0, 9.0018, 9.5, 9.0, 9.0054, 9.5])  # +0.02, +0.06 %
    ek = [("etf", 60, e) for e in ("final", "switch", "oas")]
    folds = pd.concat([stock, _rows("etf", ek, [9.0, 8.0, 9.5])])  # the ETF gain is not counted
    french = _rows("french", [("c", 36, "final"), ("c", 36, "switch"), ("d", 36, "final"),
                              ("d", 36, "switch")], [10.0, 10.0, 10.0, 10.02])  # fmt: skip
    grids, stress = _gains([0.2, -0.1], [0.3, 0.4]), _gains([-1.0, 0.0], [1.0, 1.0])
    r = ds.rule_0066(funds, folds, french, grids, stress, valid=(-0.1, 0.2))
    assert r["funds_rel_vol_pct"] == pytest.approx(-1.0)
    assert r["funds_rel_vol_se"] == pytest.approx(1 / np.sqrt(3))
    assert r["folds_stock_rel_vol_pct"] == pytest.approx(0.04, abs=1e-9)
    assert r["folds_stock_rel_vol_se"] == pytest.approx(0.02, abs=1e-9)
    assert not r["rule2_folds"]  # 0.04 + 0.02 > 0.05
    assert r["folds_new_misses"] == []
    assert r["french_rel_vol_pct"] == pytest.approx(0.1) and r["rule3_french"]  # 0.1 <= SE 0.1
    assert r["grids_gain"] == pytest.approx(0.05) and r["grids_se"] == pytest.approx(0.25)
    assert r["stress_gain"] == pytest.approx(-0.5) and r["stress_se"] == pytest.approx(
        np.sqrt(2) / 2
    )
    assert r["rule1_funds"] and r["rule4_grids"] and r["rule5_stress"] and r["rule6_valid"]
    assert not r["adopt"]
    better = folds.copy()
    better.loc[(better.fold == "h1") & (better.estimator == "switch"), "ann_vol"] = 9.0018
    assert ds.rule_0066(funds, better, french, grids, stress, valid=(-0.1, 0.2))["adopt"]
    miss = better.copy()
    miss.loc[(miss.fold == "h1") & (miss.estimator == "switch"), "ann_vol"] = 10.0
    r = ds.rule_0066(funds, miss, french, grids, stress, valid=(-0.1, 0.2))
    assert r["folds_new_misses"] == ["halves 60"] and not r["adopt"]
    assert not ds.rule_0066(funds, better, french, grids, stress, valid=(-0.3, 0.2))["adopt"]


def test_fund_universes_of_a_subset_of_stocks():
    idx = pd.bdate_range("2001-01-01", periods=900)
    r = pd.DataFrame(one_factor_returns(900, 10, 6), index=idx, columns=list("abcdefghij"))
    us = ds.fund_universes_of(r, (4, 6), 2, 11)
    assert [u.p for u in us] == [4, 4, 6, 6] and {u.family for u in us} == {"funds"}
    assert len({u.name for u in us}) == 4
    # the last asset is the equal-weight index of the stocks
    np.testing.assert_allclose(us[0].returns["index"], r.mean(axis=1).to_numpy())
