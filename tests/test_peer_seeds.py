"""shrinklab.studies.peer_seeds and scripts/peer_seeds.py: the seed list, the volatility rows
against the backtest's own summary, the seed summary and Ken French's means against a direct
computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinklab.evaluation import backtest
from shrinklab.studies import peer_seeds
from tests._scripts import load_script

script = load_script("scripts/peer_seeds.py")


def test_parse_seeds_ranges_lists_and_errors():
    assert script.parse_seeds("0-3") == [0, 1, 2, 3]
    assert script.parse_seeds("8, 1-2,8") == [8, 1, 2]
    for bad in ("", " , ", "3-1"):
        with pytest.raises(ValueError):
            script.parse_seeds(bad)


def test_universe_vols_match_the_backtest_summary():
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2015-06-01", "2016-06-30")
    returns = pd.DataFrame(0.01 * rng.standard_normal((len(dates), 4)), index=dates)
    estimators = {
        k: v for k, v in backtest.classical_estimators().items() if k in ("sample", "ledoit_wolf")
    }
    data = {"u": returns}
    rows = peer_seeds.universe_vols(data, estimators, windows=(30, 60))
    assert set(rows["estimator"]) == set(estimators)  # equal weights left out
    summary = backtest.summarise(
        backtest.gmv_backtest(returns, estimators, windows=(30, 60)), reps=10
    ).table
    for r in rows.itertuples():
        assert r.universe == "u"
        assert r.ann_vol == pytest.approx(
            100 * summary.loc[(r.window, r.estimator), "ann_vol"], rel=1e-12
        )


def test_seed_summary_against_a_direct_computation():
    rng = np.random.default_rng(0)
    keys = [("stocks", 60), ("stocks", 250), ("etf", 60)]
    reference = pd.DataFrame(
        [
            {"universe": u, "window": w, "estimator": e, "ann_vol": 15 + rng.normal()}
            for u, w in keys
            for e in ("ledoit_wolf", "oas", "final", "peer_pipeline")
        ]
    )
    seeds = pd.DataFrame(
        [
            {
                "universe": u,
                "window": w,
                "estimator": "peer",
                "ann_vol": 15 + rng.normal(),
                "seed": s,
            }
            for u, w in [*keys, ("validation", 60)]
            for s in range(5)
        ]
    )
    table = peer_seeds.seed_summary(seeds, reference)
    assert set(table.index) == set(keys)  # the validation block is not a test universe
    ref = reference.set_index(["universe", "window", "estimator"])["ann_vol"]
    for u, w in keys:
        peer = seeds.query("universe == @u and window == @w")["ann_vol"].to_numpy()
        row = table.loc[(u, w)]
        assert row["peer_mean"] == pytest.approx(peer.mean())
        assert row["peer_se"] == pytest.approx(peer.std(ddof=1) / np.sqrt(5))
        assert (row["peer_min"], row["peer_max"]) == (peer.min(), peer.max())
        assert row["peer_below_final"] == int((peer < ref[(u, w, "final")]).sum())
        best = min(ref[(u, w, "ledoit_wolf")], ref[(u, w, "oas")])
        assert row["best_classical"] == best
        assert row["best_name"] == ("oas" if best == ref[(u, w, "oas")] else "ledoit_wolf")
        assert row["seeds"] == 5


def test_french_means_average_the_cells_per_estimator_and_seed():
    cells = [("french industries", 36), ("french industries", 60), ("french all", 36)]
    reference = pd.DataFrame(
        [
            {"universe": u, "window": w, "estimator": e, "rel_vol": v}
            for (u, w), v in zip(cells, (1.0, 2.0, 6.0))
            for e in ("final", "oas")
        ]
        + [{"universe": "stocks", "window": 60, "estimator": "final", "rel_vol": 99.0}]
    )
    seeds = pd.DataFrame(
        [
            {"universe": u, "window": w, "estimator": "peer", "rel_vol": s + i, "seed": s}
            for s in (3, 7)
            for i, (u, w) in enumerate(cells)
        ]
    )
    means = peer_seeds.french_means(seeds, reference)
    assert means.loc["final", "mean"] == pytest.approx(3.0)  # the stocks' row left out
    assert means.loc["final", "cells"] == 3
    assert means.loc["peer 3", "mean"] == pytest.approx(4.0)
    assert means.loc["peer 7", "mean"] == pytest.approx(8.0)


def test_has_french_reads_the_universe_column():
    daily = pd.DataFrame({"universe": ["stocks", "etf", "validation"]})
    assert not script.has_french(daily)
    assert script.has_french(pd.concat([daily, pd.DataFrame({"universe": ["french all"]})]))


def test_french_means_with_rows_concatenated_without_a_fresh_index():
    # seed_rows' frames concatenated as they come from the workers: index labels repeat
    one = pd.DataFrame({"universe": ["french all"], "window": [36], "estimator": ["peer"],
                        "rel_vol": [1.0]})  # fmt: skip
    seeds = pd.concat([one.assign(seed=1), one.assign(seed=2, rel_vol=3.0)])
    reference = pd.concat([one.assign(estimator="final"), one.assign(estimator="oas")])
    means = peer_seeds.french_means(seeds, reference)
    assert means.loc["peer 1", "mean"] == pytest.approx(1.0)
    assert means.loc["peer 2", "mean"] == pytest.approx(3.0)
    assert means.loc["final", "cells"] == 1
