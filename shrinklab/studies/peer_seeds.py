"""The learned peer's spread over its own training seeds (a report: it chooses nothing).

The pipeline trains the learned peer (RIEnet: Bongiorno, Manolakis & Mantegna 2025,
arXiv:2507.01918; stage ``peer``, decision 0019) once, at the ``peer`` section's seed,
and the README's headline compares ``final.pt`` with that one fit. On asset-disjoint
folds the peer's fits differ widely (research log, "The learned peer on stocks it has not
seen"), so one fit may say little about its recipe. :func:`seed_rows` retrains it at
other seeds, everything else as the section sets, and backtests each fit (GMV, rebalanced
every 21 days, :func:`shrinklab.evaluation.backtest.gmv_backtest`) on the 2016–2022 test
period of the 20 stocks and of the factor ETFs + index (notebook 6, sections 6.6 and
6.6.1) and, with ``french``, on Ken French's monthly universes before 2016 (notebook 6,
section 6.7; validation data); :func:`reference_rows` does the same once for ``final.pt``
and the classical estimators, which do not depend on the peer's seed. The test period is
a report: the peer's seed stays the section's, and nothing here may change a setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.params import load_section
from shrinklab.data import universes
from shrinklab.data.french_portfolios import FRENCH_START, french_universes
from shrinklab.data.returns import load_factor_returns
from shrinklab.evaluation import backtest
from shrinklab.evaluation.universe_backtest import fold_backtest
from shrinklab.models.registry import load_model
from shrinklab.training.rie_network import peer_config, train_rie_network

__all__ = [
    "test_universes",
    "universe_vols",
    "french_vols",
    "french_means",
    "reference_rows",
    "seed_rows",
    "seed_summary",
]

WINDOWS = (60, 120, 250)
"""The backtest's estimation windows (the ``evaluate`` section's)."""
FRENCH_WINDOWS = (36, 60, 120)
"""The estimation windows of Ken French's universes, in months (the ``evaluate`` section's)."""


def test_universes(processed: str | Path) -> dict[str, pd.DataFrame]:
    """The two daily universes of the test-period backtests, by name: ``stocks`` (the 20
    bundled S&P 500 stocks, on which both learned models were trained before 2016) and
    ``etf`` (the five factor ETFs and the index, on which neither was), with every day
    the files hold (the backtest uses only what precedes each rebalance date)."""
    processed = Path(processed)
    index = pd.read_parquet(processed / "sp500_market.parquet")["index_return"]
    return {
        "stocks": pd.read_parquet(processed / "sp500_returns.parquet"),
        "etf": universes.etf_returns(load_factor_returns(), index),
    }


def universe_vols(
    data: Mapping[str, pd.DataFrame],
    estimators: Mapping[str, Any],
    windows: Sequence[int] = WINDOWS,
) -> pd.DataFrame:
    """Annualised out-of-sample GMV volatility (%) of each estimator, per universe of
    ``data`` and window, on the test period: rows ``universe, window, estimator,
    ann_vol`` (the equal-weight portfolio left out)."""
    out = []
    for name, returns in data.items():
        result = backtest.gmv_backtest(returns, estimators, windows=tuple(windows))
        for window, df in result.returns.items():
            vol = 100 * df[list(estimators)].std(ddof=1) * np.sqrt(backtest.PERIODS_PER_YEAR)
            out += [
                {"universe": name, "window": int(window), "estimator": est, "ann_vol": float(v)}
                for est, v in vol.items()
            ]
    return pd.DataFrame(out)


def french_vols(
    estimators: Mapping[str, Any], windows: Sequence[int] = FRENCH_WINDOWS
) -> pd.DataFrame:
    """Ken French's monthly universes from :data:`FRENCH_START` to 2015 (GMV rebalanced
    monthly, :func:`shrinklab.evaluation.universe_backtest.fold_backtest`; ``estimators``
    must hold ``ledoit_wolf``): rows ``universe`` (the family, ``french <group>``), ``window``,
    ``estimator``, ``ann_vol`` and ``rel_vol`` (% against Ledoit–Wolf's volatility)."""
    rows = fold_backtest(french_universes(start=FRENCH_START), estimators, windows, rebalance=1)
    rows = rows[rows["estimator"] != "equal_weight"].rename(columns={"family": "universe"})
    return rows[["universe", "window", "estimator", "ann_vol", "rel_vol"]].reset_index(drop=True)


def reference_rows(root: str | Path, french: bool = False) -> pd.DataFrame:
    """:func:`universe_vols` (and with ``french`` :func:`french_vols`) of the classical
    estimators and the run's ``final.pt`` and ``rie_network.pt`` (the pipeline's peer,
    ``peer_pipeline``), ``root`` a pipeline run's repository root."""
    root = Path(root)
    estimators = {
        **backtest.classical_estimators(),
        "final": backtest.learned_estimator(load_model(root / "models" / "final.pt")),
        "peer_pipeline": backtest.batched(load_model(root / "models" / "rie_network.pt").estimate),
    }
    rows = universe_vols(test_universes(root / "data" / "processed"), estimators)
    return pd.concat([rows, french_vols(estimators)], ignore_index=True) if french else rows


def seed_rows(root: str | Path, seed: int, french: bool = False) -> pd.DataFrame:
    """The peer trained at ``seed`` by the run's ``peer`` section (its pre-2016 stock
    returns only), backtested by :func:`universe_vols` (and with ``french`` by
    :func:`french_vols`) as estimator ``peer``; also one row per window and estimator
    (``peer``, ``ledoit_wolf``) of its pre-2016 validation block (``universe``
    ``validation``, the training's early-stopping data). Columns ``seed`` and
    ``best_epoch`` say which fit each row is."""
    root = Path(root)
    torch.set_num_threads(1)
    config = peer_config(load_section("peer", root / "params.yaml"), seed)
    data = test_universes(root / "data" / "processed")
    result = train_rie_network(data["stocks"], config)
    peer = backtest.batched(result.model.estimate)
    rows = universe_vols(data, {"peer": peer})
    if french:
        lw = backtest.classical_estimators()["ledoit_wolf"]
        fr = french_vols({"ledoit_wolf": lw, "peer": peer})
        rows = pd.concat([rows, fr[fr["estimator"] == "peer"]], ignore_index=True)
    extra = [
        {
            "universe": "validation",
            "window": int(r.window),
            "estimator": est,
            "ann_vol": 100 * float(getattr(r, f"{est}_vol")),
        }
        for r in result.validation.itertuples()
        for est in ("peer", "ledoit_wolf")
    ]
    rows = pd.concat([rows, pd.DataFrame(extra)], ignore_index=True)
    return rows.assign(seed=int(seed), best_epoch=int(result.best_epoch))


def seed_summary(seeds: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per test universe and window: ``final.pt``'s and Ledoit–Wolf's volatility, the best
    classical estimator (after the fact), the pipeline's peer, and the peer over the
    seeds of ``seeds`` (rows of :func:`seed_rows`): mean, SE, min, max, the number of
    seeds and how many of them are below ``final``."""
    ref = reference.pivot_table(index=["universe", "window"], columns="estimator", values="ann_vol")
    classical = [c for c in backtest.classical_estimators() if c in ref.columns]
    peer = seeds[seeds["estimator"] == "peer"].pivot_table(
        index=["universe", "window"], columns="seed", values="ann_vol"
    )
    peer = peer.loc[peer.index.intersection(ref.index)]
    out = pd.DataFrame(
        {
            "final": ref["final"],
            "ledoit_wolf": ref["ledoit_wolf"],
            "best_classical": ref[classical].min(axis=1),
            "best_name": ref[classical].idxmin(axis=1),
            "peer_pipeline": ref["peer_pipeline"],
            "peer_mean": peer.mean(axis=1),
            "peer_se": peer.std(axis=1, ddof=1) / np.sqrt(peer.shape[1]),
            "peer_min": peer.min(axis=1),
            "peer_max": peer.max(axis=1),
            "seeds": peer.shape[1],
            "peer_below_final": peer.lt(ref["final"], axis=0).sum(axis=1),
        }
    ).loc[peer.index]
    return out


def french_means(seeds: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Ken French's cells (rows ``universe`` ``french …`` of :func:`french_vols`): per
    estimator of ``reference`` and per seed of ``seeds``' peer, the volatility relative to
    Ledoit–Wolf's (%) averaged over the cells (the headline's summary), with the number of
    cells; one row per name (``peer <seed>`` for the seeds)."""
    peer = seeds[seeds["estimator"] == "peer"]
    parts = [
        reference.assign(name=reference["estimator"].to_numpy()),
        peer.assign(name=("peer " + peer["seed"].astype(str)).to_numpy()),
    ]
    rows = pd.concat(parts, ignore_index=True)
    rows = rows[rows["universe"].str.startswith("french ")]
    out = rows.groupby("name", sort=False)["rel_vol"].agg(["mean", "size"])
    return out.rename(columns={"size": "cells"})
