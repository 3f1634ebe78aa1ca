"""shrinklab.studies.fund_switch: decision 0067's rule by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinklab.studies import fund_switch as fs


def _rows(family, keys, vols, split=None):
    df = pd.DataFrame(
        [{"family": family, "fold": f, "window": w, "estimator": e, "ann_vol": v}
         for (f, w, e), v in zip(keys, vols, strict=True)]
    )  # fmt: skip
    return df if split is None else df.assign(split=split)


def _gains(values, ses):
    return pd.DataFrame({"rep": 0, "scenario": [f"s{i}" for i in range(len(values))],
                         "prial_gain_B_minus_A": values, "se": ses})  # fmt: skip


def test_rule_0067_by_hand():
    fk = [(f"u{i}", 60, e) for i in range(3) for e in ("final", "switch")]
    funds = _rows("funds", fk, [10.0, 9.9, 10.0, 9.8, 10.0, 10.0])  # −1, −2, 0: −1 ± 0.58
    dk = [("h", 60, e) for e in ("final_fit", "switch")]
    disjoint = pd.concat([
        _rows("halves", dk, [10.0, 10.001], split="s0a"),   # +0.01 %
        _rows("halves", dk, [10.0, 10.003], split="s0b"),   # +0.03 % (same fold name, other split)
        _rows("funds", dk, [10.0, 9.9], split="s0a"),       # −1 %, reported only
    ])  # fmt: skip
    ok = [("a", 60, e) for e in ("final", "switch", "oas")]
    folds = _rows("halves", ok, [9.0, 9.1, 9.5])
    french = _rows("french", [("c", 36, "final"), ("c", 36, "switch"), ("d", 36, "final"),
                              ("d", 36, "switch")], [10.0, 10.0, 10.0, 10.0])  # fmt: skip
    grids, stress = _gains([0.2, -0.1], [0.3, 0.4]), _gains([-1.0, 0.0], [1.0, 1.0])
    r = fs.rule_0067(funds, disjoint, folds, french, grids, stress, valid=(0.0, 0.1))
    assert r["funds_rel_vol_pct"] == pytest.approx(-1.0)
    assert r["disjoint_stock_folds"] == 2 and r["disjoint_funds"] == 1
    assert r["disjoint_stock_rel_vol_pct"] == pytest.approx(0.02, abs=1e-9)
    assert r["disjoint_stock_rel_vol_se"] == pytest.approx(0.01, abs=1e-9)
    assert r["disjoint_funds_rel_vol_pct"] == pytest.approx(-1.0)
    assert r["rule2_disjoint"] and r["folds_new_misses"] == [] and r["adopt"]
    worse = disjoint.copy()
    worse.loc[(worse.split == "s0b") & (worse.estimator == "switch"), "ann_vol"] = 10.01
    assert not fs.rule_0067(funds, worse, folds, french, grids, stress, (0.0, 0.1))["adopt"]
    miss = folds.assign(ann_vol=[9.0, 9.6, 9.5])  # the switch above the best classical
    r = fs.rule_0067(funds, disjoint, miss, french, grids, stress, (0.0, 0.1))
    assert r["folds_new_misses"] == ["halves 60"] and not r["adopt"]
    assert np.isfinite(r["grids_gain"])


def test_synthetic_features_picks_the_families():
    class _Set:
        family_names = ["sp500", "diversified", "resampled"]
        family = np.array([0, 1, 2, 1])
        features = np.arange(8.0).reshape(4, 2)

    out = fs.synthetic_features(_Set(), ["diversified"])
    np.testing.assert_array_equal(out, [[2.0, 3.0], [6.0, 7.0]])
    with pytest.raises(ValueError, match="no world"):
        fs.synthetic_features(_Set(), ["toeplitz"])
