"""Decision 0021's measurements for scripts (shrinklab/studies/deploy_rule.py) at smoke size:
the helper equals the steps written out by hand, reads its inputs from a folder of
pipeline outputs, and caches the fold rows."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.params import load_section
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data import dataset, universes
from shrinklab.data import returns as data
from shrinklab.evaluation import backtest, compression, universe_backtest
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.studies import deploy_rule

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = deploy_rule.FoldSpec(n_splits=1, draws=1, windows=(60,), start="2014-01-02")
ACCURACY = ["prial", "norm_prial", "gain_kept", "gain_kept_worst_family", "parameters"]


def _net(seed: int) -> MLShrinkageNetwork:
    torch.manual_seed(seed)
    net = MLShrinkageNetwork(len(FEATURE_NAMES), len(TARGET_NAMES), hidden_dims=(16, 8))
    return net.eval()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder like the pipeline's outputs: processed/ with the returns, the market
    frame and 160 synthetic validation worlds."""
    root = tmp_path_factory.mktemp("rule")
    processed = root / "processed"
    processed.mkdir()
    data.load_returns().to_parquet(processed / "sp500_returns.parquet")
    market = data.load_index_returns().rename("index_return").to_frame()
    market.to_parquet(processed / "sp500_market.parquet")
    valid = dataset.build_training_set(160, 1, {"p_max": 20, "batch_size": 64}, progress=False)
    valid.save(processed / "synthetic_valid.pt")
    return root


def test_load_rule_data_reads_the_folder_and_cuts_the_test_period(root):
    full = deploy_rule.load_rule_data(root)
    cut = deploy_rule.load_rule_data(root, cut_test=True)
    pd.testing.assert_frame_equal(full.returns, data.load_returns(), check_freq=False)
    assert full.returns.index.max() >= data.TEST_START
    for frame in (cut.returns, cut.market, cut.factor_returns):
        assert frame.index.max() < data.TEST_START
    pd.testing.assert_frame_equal(
        cut.returns, full.returns[full.returns.index < data.TEST_START], check_freq=False
    )
    assert len(full.valid) == 160


def test_rule_inputs_equal_the_steps_by_hand_and_cache_the_rows(root, tmp_path):
    rule_data = deploy_rule.load_rule_data(root)
    models = {"ensemble": _net(0), "finetuned": _net(1)}
    table, rows = deploy_rule.rule_inputs(rule_data, models, models, folds=SMALL, repeats=1)

    # the reference: the steps scripts/deploy_rule_folds.py used to write out
    valid = rule_data.valid
    lw = dataset.classical_intensities(valid)["ledoit_wolf"]
    ref_table = compression.tradeoff_table(
        models, valid, lw_intensities=lw, reference="ensemble", repeats=1
    )
    folds = universes.cross_universe_folds(
        rule_data.returns,
        rule_data.factor_returns,
        rule_data.market["index_return"],
        seed=2021,
        n_splits=1,
        draws=1,
        start="2014-01-02",
    )
    est = {
        **backtest.classical_estimators(),
        **{n: backtest.learned_estimator(m) for n, m in models.items()},
    }
    ref_rows = universe_backtest.fold_backtest(folds, est, (60,))

    pd.testing.assert_frame_equal(table[ACCURACY], ref_table[ACCURACY])  # latency differs
    pd.testing.assert_frame_equal(rows, ref_rows)
    assert table.loc["ensemble", "gain_kept"] == pytest.approx(1.0)
    assert set(rows["estimator"]) >= {"ensemble", "finetuned", "ledoit_wolf"}
    assert rows["fold"].nunique() == len(folds) and set(rows["window"]) == {60}

    cache = tmp_path / "fold_rows.csv"
    _, first = deploy_rule.rule_inputs(rule_data, models, models, folds=SMALL, rows_file=cache)
    assert cache.exists()
    pd.testing.assert_frame_equal(first, ref_rows)
    other = {"ensemble": models["ensemble"], "finetuned": _net(2)}  # the cache wins
    _, again = deploy_rule.rule_inputs(rule_data, other, other, folds=SMALL, rows_file=cache)
    pd.testing.assert_frame_equal(again, pd.read_csv(cache))
    assert again["rel_vol"].to_numpy() == pytest.approx(ref_rows["rel_vol"].to_numpy(), rel=1e-12)

    with pytest.raises(ValueError, match="reference"):
        deploy_rule.rule_inputs(rule_data, {"x": models["finetuned"]}, {}, folds=SMALL)

    # fold_rows with Ledoit–Wolf alone: the same rows for the estimators it keeps
    lw_only = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    few = deploy_rule.fold_rows(rule_data, models, folds=SMALL, classical=lw_only)
    assert set(few["estimator"]) == {"ledoit_wolf", "ensemble", "finetuned", "equal_weight"}
    kept = ref_rows[ref_rows["estimator"].isin(set(few["estimator"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(few.reset_index(drop=True), kept)


def test_fold_spec_reads_the_compress_section():
    c = load_section("compress")
    spec = deploy_rule.FoldSpec.from_section(c)
    assert spec == deploy_rule.FoldSpec(
        c.fold_seed, c.fold_splits, c.fold_draws, tuple(c.fold_windows), c.fold_start
    )
    assert deploy_rule.FoldSpec().start == universes.STOCK_START


def test_rule_holdout_draws_the_selection_grid_sections_holdout(tmp_path, monkeypatch):
    """The rule scripts' holdout is notebook 09's: the run's selection_grid sizes, cached
    under the run's build/studies."""
    import shutil
    from pathlib import Path

    shutil.copy(Path(__file__).parents[1] / "params.yaml", tmp_path / "params.yaml")
    calls = []
    monkeypatch.setattr(deploy_rule, "holdout_set", lambda *a, **k: calls.append((a, k)) or "H")
    assert deploy_rule.rule_holdout(tmp_path) == "H"
    section = load_section("selection_grid", tmp_path / "params.yaml")
    assert calls == [
        (
            (tmp_path / "build" / "studies", section.p_max, section.batch_size),
            {"n": section.holdout_size},
        )
    ]
