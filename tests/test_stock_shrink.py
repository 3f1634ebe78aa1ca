"""shrinklab.studies.stock_shrink (decision 0071): the stock discriminant's classes, the
candidate built on the bundled switched model, and the rule's parts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from _one_factor import load_bundled, one_factor_returns

from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.data.universes import Universe
from shrinklab.models.switched import towards_diagonal
from shrinklab.studies import stock_shrink as ss

bundled = pytest.fixture(scope="module")(load_bundled)


def _stocks(seed: int) -> pd.DataFrame:
    dates = pd.bdate_range("2004-01-01", periods=1600)  # about 60 windows: more than features
    return pd.DataFrame(one_factor_returns(1600, 12, seed), index=dates)


def _training_set(rng: np.random.Generator) -> SimpleNamespace:
    """Two families of i.i.d. Gaussian worlds, one with a common factor, as features."""
    iid = [rng.standard_normal((120, int(rng.integers(8, 20)))) for _ in range(80)]
    fac = [one_factor_returns(120, int(rng.integers(8, 20)), 50 + s) for s in range(80)]
    feats = torch.cat([extract_features(x) for x in iid + fac])
    return SimpleNamespace(
        family=np.repeat([1, 0], 80), family_names=["factor", "iid"], features=feats
    )


def test_stock_discriminant_has_one_class_per_family_and_picks_stock_windows():
    rng = np.random.default_rng(0)
    train = _training_set(rng)
    sets = ss.family_feature_sets(train)
    assert [len(x) for x in sets] == [80, 80]  # "factor" first (name order), then "iid"
    u = Universe("halves", "h", _stocks(1), pd.Timestamp("2005-01-03"))
    disc = ss.stock_discriminant(train, [u], windows=(120,))
    assert disc.num_classes == 3 and disc.num_features == len(FEATURE_NAMES)
    fresh = _stocks(2).to_numpy()
    real = torch.cat([extract_features(fresh[i : i + 120]) for i in range(0, 560, 40)])
    iid = torch.cat([extract_features(rng.standard_normal((120, 12))) for _ in range(14)])
    # the stock class is fitted to these windows' kind: it must win there more often than
    # on i.i.d. windows, which their own class explains
    assert (disc.score(real) > 0).mean() > (disc.score(iid) > 0).mean()


def test_candidate_shares_the_switched_model_and_shrinks_only_the_picked_rows(bundled):
    rng = np.random.default_rng(3)
    x = torch.cat([extract_features(one_factor_returns(120, 15, s)) for s in range(6)])
    x = torch.cat(
        [x, torch.cat([extract_features(rng.standard_normal((120, 15))) for _ in range(6)])]
    )
    base = bundled.predict(x)
    fake = ss.stock_discriminant(
        SimpleNamespace(family=np.zeros(40, int), family_names=["iid"],
                        features=x.repeat(4, 1)[:40] + 0.1 * torch.randn(40, x.shape[1], generator=torch.Generator().manual_seed(1)).to(x.dtype)),
        [Universe("halves", "h", _stocks(4), pd.Timestamp("2005-01-03"))], windows=(120,),
    )  # fmt: skip
    cand = ss.with_stock_shrinkage(bundled, fake, -1e9, 0.2)  # every window not far
    assert cand.near is bundled.near and cand.far_general is bundled.far_general
    assert cand.far_scale == bundled.far_scale and cand.extra == bundled.extra
    rows = ~bundled.is_far(x)
    np.testing.assert_array_equal(cand.is_stock(x).numpy(), rows.numpy())
    ref = towards_diagonal(base, rows, 0.2)
    torch.testing.assert_close(cand.predict(x).intensities, ref.intensities)
    with pytest.raises(TypeError, match="SwitchedModel"):
        ss.with_stock_shrinkage(bundled.near, fake, 0.0, 0.1)


def _rows(families: list[str], folds: int, base: float, cand: float) -> pd.DataFrame:
    rows = []
    for f in families:
        for k in range(folds):
            for w in (60, 120, 250):
                noise = 0.01 * ((k * 7 + w) % 5)
                rows.append(
                    {
                        "family": f,
                        "fold": f"{f}{k}",
                        "window": w,
                        "estimator": "final",
                        "ann_vol": base + noise,
                    }
                )
                rows.append({"family": f, "fold": f"{f}{k}", "window": w, "estimator": "switch", "ann_vol": cand + noise})  # fmt: skip
    return pd.DataFrame(rows)


def _gains(mean: float) -> pd.DataFrame:
    return pd.DataFrame({"rep": range(4), "scenario": list("abcd"),
                         "prial_gain_B_minus_A": mean, "se": 0.1})  # fmt: skip


def test_rule_adopts_only_when_every_part_holds():
    folds = pd.concat(
        [_rows(["halves", "portfolios"], 4, 15.0, 14.9), _rows(["etf"], 1, 12.0, 12.0)]
    )
    disjoint = _rows(["halves"], 4, 16.0, 15.9).assign(split="s0a")
    funds = _rows(["funds"], 4, 15.0, 15.0)
    french = _rows(["french all"], 1, 14.0, 14.0)
    good = ss.rule_0071(folds, disjoint, funds, french, _gains(0.0), _gains(0.0))
    assert good["adopt"] and good["folds_rel_vol_pct"] < 0
    bad_french = ss.rule_0071(folds, disjoint, funds, _rows(["french all"], 1, 14.0, 14.1),
                              _gains(0.0), _gains(0.0))  # fmt: skip
    assert not bad_french["adopt"] and not bad_french["rule4_french"] and bad_french["rule1_folds"]
    worse_cell = pd.concat([folds, _rows(["mixtures"], 4, 15.0, 15.01)])
    assert not ss.rule_0071(worse_cell, disjoint, funds, french, _gains(0.0), _gains(0.0))[
        "rule1_folds"
    ]
    assert not ss.rule_0071(folds, disjoint, funds, french, _gains(-1.0), _gains(0.0))[
        "rule5_grids"
    ]
    flat = disjoint.assign(ann_vol=16.0)
    assert not ss.rule_0071(folds, flat, funds, french, _gains(0.0), _gains(0.0))["rule2_disjoint"]


def test_single_stock_class_is_pre_2016_subsets_of_the_given_stocks():
    dates = pd.bdate_range("2012-01-02", "2017-12-29")
    r = pd.DataFrame(np.random.default_rng(1).standard_normal((len(dates), 10)), index=dates)
    r.columns = [f"s{i}" for i in range(10)]
    klass = ss.single_stock_class(r, 5)
    # sizes up to the 10 columns: 5 and 8 twice, 10 once; no date of the test period
    assert [u.p for u in klass] == [5, 5, 8, 8, 10]
    assert all(u.returns.index.max() < pd.Timestamp("2016-01-01") for u in klass)
    assert all(set(u.returns.columns) <= set(r.columns) for u in klass)
    same = ss.single_stock_class(r, 5)
    assert [list(u.returns.columns) for u in same] == [list(u.returns.columns) for u in klass]
