"""shrinklab.studies.switch_parts: the fresh real universes the rule scripts of decisions
0067-0073 judge on, against the two calls they stand for."""

from __future__ import annotations

import pandas as pd

from shrinklab.data import returns as data
from shrinklab.data import universes
from shrinklab.studies.deploy_rule import RuleData
from shrinklab.studies.domain_switch import fund_universes_of
from shrinklab.studies.fund_switch import FUND_SIZES
from shrinklab.studies.switch_parts import fresh_universes


def test_fresh_universes_are_the_funds_and_folds_of_their_seeds():
    r = data.before_test(data.load_returns())
    market = data.before_test(data.load_index_returns()).to_frame("index_return")
    rd = RuleData(r, market, data.before_test(data.load_factor_returns()), valid=None)
    funds, folds = fresh_universes(rd, 11, 13)
    ref_funds = fund_universes_of(r, FUND_SIZES, 4, 11)
    ref_folds = universes.cross_universe_folds(
        r, rd.factor_returns, market["index_return"], seed=13
    )
    assert [u.name for u in funds] == [u.name for u in ref_funds]
    assert [u.name for u in folds] == [u.name for u in ref_folds]
    assert folds[-1].family == "etf" and len(funds) == 4 * len(FUND_SIZES)
    for a, b in zip(funds + folds, ref_funds + ref_folds, strict=True):
        pd.testing.assert_frame_equal(a.returns, b.returns)
    other, _ = fresh_universes(rd, 12, 13)
    assert not all(a.returns.equals(b.returns) for a, b in zip(funds, other, strict=True))
