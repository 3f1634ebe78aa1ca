"""The finetune stage's soup members (decision 0042) trained in worker processes are
bit-identical to members fine-tuned in turn in the kernel (with its one torch thread)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.core.params.finetune import Finetune
from shrinklab.data.real_windows import build_windows
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training.finetune_stage import stage_finetune_soup

pytestmark = pytest.mark.usefixtures("one_thread")


def _returns() -> pd.DataFrame:
    index = pd.bdate_range("2001-01-01", "2016-06-30")
    rng = np.random.default_rng(3)
    f = rng.standard_t(5, size=(len(index), 1))
    X = 0.01 * (f * rng.uniform(0.5, 1.5, 5) + rng.normal(size=(len(index), 5)))
    return pd.DataFrame(X, index=index, columns=list("ABCDE"))


def _settings(workers: int) -> Finetune:
    return Finetune(
        seed=4, windows=[60], epochs=1, lr=3e-3, asset_subsets=0, n_folds=1,
        derived_per_stock=0.4, soup_seeds=2, workers=workers,
    )  # fmt: skip


def test_two_workers_give_the_same_soup_and_members(tmp_path):
    r = _returns()
    F = build_windows(r.iloc[:200], window=60, horizon=21, step=21, features=True)
    torch.manual_seed(0)
    pretrained = MLShrinkageNetwork(F.full.features.shape[1], hidden_dims=(8,))
    one, seq = stage_finetune_soup(pretrained, r, None, _settings(1), tmp_path / "seq")
    two, par = stage_finetune_soup(pretrained, r, None, _settings(2), tmp_path / "par")
    assert [m.epochs for m in seq] == [m.epochs for m in par]
    for a, b in zip([one] + [m.model for m in seq], [two] + [m.model for m in par]):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    # the two seeds differ, so the comparison above could fail
    key = next(k for k, v in one.state_dict().items() if v.ndim == 2)
    assert not torch.equal(seq[0].model.state_dict()[key], seq[1].model.state_dict()[key])
    # each worker wrote its seed's checkpoints where the sequential run does
    for s in (4, 5):
        assert any((tmp_path / "par" / f"seed_{s}").rglob("checkpoint.pt"))


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        Finetune(workers=0)


def test_experts_started_in_the_background_equal_the_stage_fine_tuning(tmp_path):
    """The compression stage starts its experts' fine-tunings in background processes
    (``start_finetune_experts``) and distils meanwhile: each expert is bit-identical to
    ``stage_finetune_expert``'s, whatever the caller does to its objects in between."""
    from shrinklab.models.ensemble import EnsembleModel
    from shrinklab.training.finetune_stage import stage_finetune_expert, start_finetune_experts

    r = _returns()
    dim = build_windows(r.iloc[:200], window=60, horizon=21, step=21, features=True)
    dim = dim.full.features.shape[1]
    experts = {}
    for family, seeds in (("sp500", (0, 1)), ("factor", (2,))):
        members = []
        for s in seeds:
            torch.manual_seed(s)
            members.append(MLShrinkageNetwork(dim, hidden_dims=(8,)))
        experts[family] = EnsembleModel(members, label=family)
    saved = {k: v.clone() for k, v in experts["sp500"].state_dict().items()}
    pending = start_finetune_experts(experts, r, None, _settings(2), tmp_path / "bg")
    with torch.no_grad():  # the caller changes its expert while the fine-tunings run
        for p in experts["sp500"].parameters():
            p.add_(1.0)
    got = pending.result()
    assert pending.result() is got and list(got) == ["sp500", "factor"]
    experts["sp500"].load_state_dict(saved)
    for family, expert in experts.items():
        ref = stage_finetune_expert(expert, family, r, None, _settings(1), tmp_path / family)
        sa, sb = ref.state_dict(), got[family].state_dict()
        assert list(sa) == list(sb)
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (family, key)
    # checkpoints where stage_finetune_expert writes them, one folder per family and member
    assert any((tmp_path / "bg" / "sp500" / "member_1").rglob("checkpoint.pt"))
    assert any((tmp_path / "bg" / "factor" / "member_0").rglob("checkpoint.pt"))


def test_start_in_processes_returns_the_items_in_order():
    from shrinklab.training.parallel import start_in_processes

    items = [[3, 1], [2], [5, 5, 5]]
    for workers in (1, 2):
        pending = start_in_processes(sum, items, workers)
        items[0].append(100)  # pickled on the call: later changes do not reach the work
        assert pending.result() == [4, 2, 15]
        items[0].pop()
    with pytest.raises(ValueError, match="workers"):
        start_in_processes(sum, items, 0)
