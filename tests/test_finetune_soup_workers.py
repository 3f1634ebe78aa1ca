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
