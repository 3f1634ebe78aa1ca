"""Tests of shrinklab.training.finetune_stage: the finetune stage's recipe from its
params section (folds, optimiser settings, replay), shared by notebook 03 and the
asset-disjoint study."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from shrinklab.core.params.finetune import Finetune
from shrinklab.data import returns as data
from shrinklab.training.finetune_stage import (
    stage_config,
    stage_replay,
    stage_returns,
    stage_splits,
)


def _settings(**kw) -> Finetune:
    base = dict(seed=7, windows=[60], epochs=3, lr=2e-3, asset_subsets=1, n_folds=2)
    return Finetune(**(base | kw))


def test_stage_splits_are_the_last_walk_forward_folds_before_the_test_period():
    index = pd.bdate_range("2000-01-03", "2022-12-30")
    splits = stage_splits(index, _settings(n_folds=2))
    every = data.walk_forward_splits(index)
    assert [s.fold for s in splits] == [s.fold for s in every[-2:]]
    for s in splits:
        assert index[s.val[-1]] < data.TEST_START and index[s.train[-1]] < index[s.val[0]]
    assert len(stage_splits(index, _settings(n_folds=4))) == 4


def test_stage_config_carries_the_section():
    cfg = stage_config(_settings(), device="cpu")
    assert (cfg.lr, cfg.epochs, cfg.seed, cfg.device) == (2e-3, 3, 7, "cpu")
    assert (cfg.batch_size, cfg.patience, cfg.set_priors) == (64, 5, False)


def test_stage_replay_loads_the_worlds_only_when_it_is_on():
    calls = []

    def load():
        calls.append(1)
        return object()

    assert stage_replay(_settings(replay_weight=0.0), load) is None
    assert not calls  # λ = 0: nothing read
    spec = stage_replay(_settings(replay_weight=2.0, replay_batch=32), load)
    assert calls == [1] and (spec.weight, spec.batch_size, spec.seed) == (2.0, 32, 7)
    with pytest.raises(ValueError, match="replay_data"):
        stage_replay(_settings(replay_weight=1.0), None)


def _returns() -> pd.DataFrame:
    index = pd.bdate_range("2011-01-03", "2017-12-29")
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(0, 0.01, (len(index), 6)), index=index, columns=list("ABCDEF"))


def test_stage_returns_cut_the_test_period_and_add_derived_portfolios_when_asked():
    r = _returns()
    stocks = stage_returns(r, _settings())  # derived_per_stock = 0: the stocks only
    assert stocks.index[-1] < data.TEST_START and stocks.index[0] == r.index[0]
    pd.testing.assert_frame_equal(stocks, r.loc[stocks.index])
    both = stage_returns(r, _settings(derived_per_stock=0.5))
    assert list(both.columns[:6]) == list("ABCDEF") and both.shape[1] == 6 + 3
    pd.testing.assert_frame_equal(both.iloc[:, :6], stocks)
    # the derived columns are long-only portfolios of the stocks before 2016, seeded
    assert both.index.equals(stocks.index)
    pd.testing.assert_frame_equal(both, stage_returns(r, _settings(derived_per_stock=0.5)))
    other = stage_returns(r, _settings(derived_per_stock=0.5, seed=8))
    assert not other.iloc[:, 6:].equals(both.iloc[:, 6:])
    # nothing after 2015 reaches them: changing the test period leaves them unchanged
    r2 = r.copy()
    r2.loc[r2.index >= data.TEST_START] *= 50
    pd.testing.assert_frame_equal(stage_returns(r2, _settings(derived_per_stock=0.5)), both)


def test_weight_soup_averages_the_weights_of_networks_of_one_structure():
    import torch

    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.training.soup import weight_soup

    def net(seed):
        torch.manual_seed(seed)
        return MLShrinkageNetwork(input_dim=6, num_targets=3, hidden_dims=(8,)).eval()

    a, b, c = net(0), net(1), net(2)
    soup = weight_soup([a, b, c])
    for k, v in soup.state_dict().items():
        parts = [m.state_dict()[k] for m in (a, b, c)]
        if v.is_floating_point():
            torch.testing.assert_close(v, sum(parts) / 3, rtol=0, atol=1e-6)
    x = torch.randn(5, 6)
    # a soup of one network is that network; the inputs are not modified
    torch.testing.assert_close(weight_soup([a]).predict(x).alpha, a.predict(x).alpha)
    assert not torch.equal(soup.predict(x).alpha, a.predict(x).alpha)
    with pytest.raises(ValueError, match="at least one"):
        weight_soup([])
    # members trained for different numbers of steps: batch-norm counters differ
    a.train()(torch.randn(8, 6))
    counters = {k: v for k, v in weight_soup([a, b]).state_dict().items() if "num_batches" in k}
    assert counters and all(int(v) == 1 for v in counters.values())
    other = MLShrinkageNetwork(input_dim=6, num_targets=3, hidden_dims=(4,))
    with pytest.raises(ValueError, match="keys or shapes differ"):
        weight_soup([a, other])


def test_stage_finetune_soup_fine_tunes_each_seed_and_averages(tmp_path, monkeypatch):
    import torch

    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.training import finetune_stage as fs

    calls = []

    def fake(pretrained, returns, regimes, settings, out_dir, *, config, replay, monitor):
        calls.append((settings.seed, config.seed, Path(out_dir), returns.shape[1], monitor))
        torch.manual_seed(settings.seed)
        net = MLShrinkageNetwork(input_dim=4, num_targets=2, hidden_dims=(3,))
        return SimpleNamespace(model=net, epochs=settings.seed)

    monkeypatch.setattr(fs, "stage_finetune", fake)
    r = _returns()
    one, results = fs.stage_finetune_soup(None, r, None, _settings(), tmp_path, monitor="m")
    assert calls == [(7, 7, tmp_path, 6, "m")] and one is results[0].model  # as before
    calls.clear()
    soup, results = fs.stage_finetune_soup(
        None, r, None, _settings(soup_seeds=3, derived_per_stock=0.5), tmp_path, monitor="m"
    )
    assert [c[:2] for c in calls] == [(7, 7), (8, 8), (9, 9)]
    assert [c[2] for c in calls] == [tmp_path / f"seed_{s}" for s in (7, 8, 9)]
    assert [c[3] for c in calls] == [9, 9, 9] and [c[4] for c in calls] == ["m", None, None]
    key = next(k for k, v in soup.state_dict().items() if v.ndim == 2)  # a weight matrix
    w = [m.model.state_dict()[key] for m in results]
    assert not torch.equal(w[0], w[1])
    torch.testing.assert_close(soup.state_dict()[key], sum(w) / 3)


def test_stage_finetune_expert_fine_tunes_each_member_with_its_seed(tmp_path, one_thread):
    """Decision 0045: member ``i`` of the expert is the stage's fine-tuning with seed
    ``seed + i`` (compared with stage_finetune run directly); the ensemble's weights and
    calibration stay, and the expert passed in is untouched."""
    import torch

    from shrinklab.data.real_windows import build_windows
    from shrinklab.models.ensemble import EnsembleModel
    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.training.finetune_stage import stage_finetune, stage_finetune_expert

    index = pd.bdate_range("2001-01-01", "2016-06-30")
    rng = np.random.default_rng(5)
    f = rng.standard_t(5, size=(len(index), 1))
    X = 0.01 * (f * rng.uniform(0.5, 1.5, 5) + rng.normal(size=(len(index), 5)))
    r = pd.DataFrame(X, index=index, columns=list("ABCDE"))
    dim = build_windows(r.iloc[:200], window=60, horizon=21, step=21, features=True)
    dim = dim.full.features.shape[1]
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(MLShrinkageNetwork(dim, hidden_dims=(8,)))
    expert = EnsembleModel(members, member_weights=[0.25, 0.75], label="sp500")
    expert.set_temperature(1.7)
    before = {k: v.clone() for k, v in expert.state_dict().items()}
    settings = _settings(seed=4, epochs=1, derived_per_stock=0.4, n_folds=1, asset_subsets=0)
    tuned = stage_finetune_expert(expert, "sp500", r, None, settings, tmp_path / "e")
    assert isinstance(tuned, EnsembleModel) and tuned is not expert
    for k, v in expert.state_dict().items():  # the input is untouched
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(tuned.member_weights, expert.member_weights)
    assert float(tuned.temperature) == pytest.approx(1.7)
    for i, member in enumerate(members):
        s = _settings(seed=4 + i, epochs=1, derived_per_stock=0.4, n_folds=1, asset_subsets=0)
        ref = stage_finetune(member, stage_returns(r, s), None, s, tmp_path / f"ref{i}").model
        got = tuned.members[i].state_dict()
        for k, v in ref.state_dict().items():
            assert torch.equal(got[k], v), (i, k)
        moved = [not torch.equal(got[k], member.state_dict()[k]) for k in got]
        assert any(moved), f"member {i} was not fine-tuned"


def test_family_replay_worlds_keep_the_family_only():
    from shrinklab.training.finetune_stage import family_replay_worlds

    class Worlds:
        def __init__(self, families):
            self.families = list(families)

        def subset(self, idx):
            return Worlds([self.families[i] for i in idx])

    worlds = Worlds(["sp500", "factor", "sp500", "toeplitz"])
    assert family_replay_worlds(worlds, "sp500").families == ["sp500", "sp500"]
    assert family_replay_worlds(lambda: worlds, "factor").families == ["factor"]
    with pytest.raises(ValueError, match="no synthetic training worlds of family 'block'"):
        family_replay_worlds(worlds, "block")


def test_stage_finetune_expert_without_replay_worlds_says_so(tmp_path):
    from shrinklab.training.finetune_stage import stage_finetune_expert

    settings = _settings(replay_weight=1.0)
    with pytest.raises(ValueError, match="needs the synthetic training set"):
        stage_finetune_expert(object(), "sp500", _returns(), None, settings, tmp_path)
