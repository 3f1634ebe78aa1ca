"""Members trained in worker processes are bit-identical to members trained in turn."""

from __future__ import annotations

import pytest
import torch

from shrinklab.training.config import TrainConfig
from shrinklab.training.ensembles import train_multi_seed
from shrinklab.training.parallel import MemberJob, train_members
from tests._tiny_sets import F, K, tiny_set

MC = {"input_dim": F, "num_targets": K, "hidden_dims": (16, 8)}


def _cfg() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=64, lr=3e-3, device="cpu", amp=None, patience=100)


@pytest.fixture(scope="module")
def sets():
    return tiny_set(192, F, K, seed=10), tiny_set(128, F, K, seed=11)


def test_two_workers_give_byte_identical_members(tmp_path, sets):
    tr, va = sets
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting, so that both runs do the same arithmetic
    try:
        jobs = [MemberJob(MC, s, tr, va, _cfg(), tmp_path / "seq" / f"m{s}") for s in (3, 4)]
        sequential = train_members(jobs, workers=1)
        par_jobs = [MemberJob(MC, s, tr, va, _cfg(), tmp_path / "par" / f"m{s}") for s in (3, 4)]
        parallel = train_members(par_jobs, workers=2)
    finally:
        torch.set_num_threads(threads)
    assert len(parallel) == 2
    for a, b in zip(sequential, parallel):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        for key in sa:
            assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
        assert not b.training
    # the two seeds differ, so the comparison above could fail
    w0, w1 = (next(iter(m.state_dict().values())) for m in sequential)
    assert not torch.equal(w0, w1)
    # each worker wrote its member's checkpoint where the sequential run does
    for s in (3, 4):
        assert (tmp_path / "par" / f"m{s}" / "checkpoint.pt").is_file()


def test_multi_seed_workers_argument(tmp_path, sets):
    tr, va = sets
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train_multi_seed(tr, va, tmp_path / "a", seeds=[5, 6], model_config=MC, config=_cfg())
        two = train_multi_seed(
            tr, va, tmp_path / "b", seeds=[5, 6], model_config=MC, config=_cfg(), workers=2
        )
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one.members, two.members):
        for u, v in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(u, v)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        train_members([], workers=0)


def test_a_killed_member_resumes_to_the_uninterrupted_result(tmp_path, sets):
    """A member whose run stopped after one epoch (a killed stage) is finished from its
    checkpoint, and a finished member is loaded, not retrained: same weights either way."""
    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.training.loop import train

    tr, va = sets
    full = train_members([MemberJob(MC, 7, tr, va, _cfg(), tmp_path / "full")])[0]
    torch.manual_seed(7)
    partial = MLShrinkageNetwork(**MC)
    cfg = TrainConfig(**{**_cfg().to_dict(), "seed": 7})
    history = train(partial, tr, va, cfg, tmp_path / "killed", max_epochs_per_call=1)
    assert len(history["epoch"]) == 1 and not history["finished"]
    resumed = train_members([MemberJob(MC, 7, tr, va, _cfg(), tmp_path / "killed")])[0]
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    again = train_members([MemberJob(MC, 7, tr, va, _cfg(), tmp_path / "killed")])[0]
    assert checkpoint.stat().st_mtime_ns == stamp  # nothing retrained
    for other in (resumed, again):
        for u, v in zip(full.state_dict().values(), other.state_dict().values()):
            assert torch.equal(u, v)


def test_specialist_table_is_the_same_for_two_workers():
    """The scenario specialists of notebook 06 shared by two processes: the same table."""
    from _forced_model import random_network

    from shrinklab.evaluation import scenarios
    from shrinklab.studies.specialists import specialist_table

    grid = [
        {"name": "toy", "family": "spectrum_1_3_10", "p": 12, "n": 30},
        {"family": "factor", "p": 10, "n": 25, "df": 6},
    ]
    _, results = scenarios.evaluate_grid(
        grid, random_network(1), n_reps=8, seed=4, return_results=True
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = specialist_table(results, n_draws=16, epochs=2)
        two = specialist_table(results, n_draws=16, epochs=2, workers=2)
    finally:
        torch.set_num_threads(threads)
    assert list(one.index) == ["toy", "factor p=10 n=25 t6"]
    assert one.equals(two), (one, two)


def test_group_experts_checks_the_member_count():
    from shrinklab.models.ensemble import EnsembleModel
    from shrinklab.models.network import MLShrinkageNetwork
    from shrinklab.training.experts import group_experts

    nets = [MLShrinkageNetwork(**MC) for _ in range(4)]
    grouped = group_experts(["a", "b"], nets, 2)
    assert isinstance(grouped["b"], EnsembleModel) and grouped["b"].members[1] is nets[3]
    assert group_experts(["a", "b", "c", "d"], nets, 1)["c"] is nets[2]
    with pytest.raises(ValueError, match="expected 6 members, got 4"):
        group_experts(["a", "b", "c"], nets, 2)
