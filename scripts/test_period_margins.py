"""The deployed model against every other estimator on the 2016–2022 test period (a
report; it chooses nothing)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/test_period_margins.py <root> [--seed S]

``root`` is a pipeline run's repository root (``params.yaml``, ``models/final.pt``,
``models/rie_network.pt``, ``data/processed/sp500_returns.parquet``). The GMV backtest of
``06_evaluation`` (20 stocks, rebalanced every 21 days, the evaluate section's windows) for
``final.pt``, the learned peer and the classical estimators; for each window, ``final.pt``'s
annualised volatility minus each other estimator's, in points, with the paired
stationary-bootstrap 95 % interval and SE of :func:`shrinklab.evaluation.backtest.
bootstrap_vol_difference` (blocks of 21 days, 2,000 replications, the evaluate section's
seed). The headline states whether ``final.pt`` is lowest; this table says by how much,
and whether the gap to the closest estimator is beyond sampling noise. About a minute.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from shrinklab.core.params import load_section
from shrinklab.evaluation import backtest
from shrinklab.models.registry import load_model

LEARNED = "ML (final)"
PEER = "RIEnet peer"


def margins(
    results: backtest.BacktestResult, learned: str = LEARNED, seed: int = 5
) -> pd.DataFrame:
    """``learned`` minus every other estimator, per window: ``diff``, ``ci_low``,
    ``ci_high``, ``se`` (points of annualised volatility), sorted by ``diff`` (the closest
    rival of a model that is lowest comes first with a negative difference)."""
    rows = []
    for window, df in results.returns.items():
        if learned not in df.columns:
            raise ValueError(f"{learned!r} is not among the estimators {list(df.columns)}")
        for other in df.columns.drop(learned):
            bs = backtest.bootstrap_vol_difference(
                df[learned].to_numpy(), df[other].to_numpy(), seed=seed
            )
            rows.append({"window": int(window), "other": other,
                         **{k: 100 * bs[k] for k in ("diff", "ci_low", "ci_high", "se")}})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["window", "diff"], ascending=[True, False])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--seed", type=int, default=None, help="default: the evaluate section's")
    a = ap.parse_args(argv)
    section = load_section("evaluate", a.root / "params.yaml")
    returns = pd.read_parquet(a.root / "data" / "processed" / "sp500_returns.parquet")
    peer = load_model(a.root / "models" / "rie_network.pt")
    estimators = {
        **backtest.classical_estimators(),
        LEARNED: backtest.learned_estimator(load_model(a.root / "models" / "final.pt")),
        PEER: backtest.batched(peer.estimate),
    }
    res = backtest.gmv_backtest(returns, estimators, windows=tuple(section.windows))
    pd.set_option("display.width", 200)
    seed = section.seed if a.seed is None else a.seed
    print(margins(res, seed=seed).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
