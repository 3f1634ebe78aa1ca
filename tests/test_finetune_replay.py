"""Tests of synthetic replay in fine-tuning (shrinklab.training.replay, decision 0025):
λ = 0 is plain fine-tuning bit for bit, λ > 0 keeps the synthetic loss lower, the replay
draws are seeded and resumable, bad settings are refused."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny_sets import tiny_set

from shrinklab.core.params.finetune import Finetune
from shrinklab.data.real_windows import build_windows
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training.config import TrainConfig
from shrinklab.training.finetune import finetune_on_real
from shrinklab.training.replay import ReplaySpec, SyntheticReplay, synthetic_l_over_d

pytestmark = pytest.mark.usefixtures("one_thread")


def _returns(n: int = 500, p: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = rng.standard_t(5, size=(n, 1))
    X = 0.01 * (f * rng.uniform(0.5, 1.5, p) + rng.normal(size=(n, p)) * rng.uniform(0.5, 2, p))
    return pd.DataFrame(X, index=pd.bdate_range("2001-01-01", periods=n))


@pytest.fixture(scope="module")
def problem():
    r = _returns()
    tr = build_windows(r, 30, 21, 3, end=r.index[349])
    va = build_windows(r, 30, 21, 21, start=r.index[350])
    F = tr.full.features.shape[1]
    torch.manual_seed(1)
    model = MLShrinkageNetwork(F, hidden_dims=(16, 8), dropout=0.1, input_dropout=0.0)
    return tr, va, model, tiny_set(400, n_features=F, seed=3)


def _cfg(**kw) -> TrainConfig:
    base = dict(lr=3e-3, epochs=4, batch_size=32, patience=50, T_0=50, l2=0.0, seed=0, device="cpu")
    return TrainConfig(**(base | kw))


def _same_weights(a, b) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_zero_weight_is_plain_finetuning_bit_for_bit(problem, tmp_path):
    tr, va, base, syn = problem
    plain = copy.deepcopy(base)
    h0 = finetune_on_real(plain, tr, va, _cfg(), tmp_path / "plain")
    zero = copy.deepcopy(base)
    state = torch.get_rng_state()
    h1 = finetune_on_real(zero, tr, va, _cfg(), tmp_path / "zero", replay=ReplaySpec(syn, 0.0))
    assert _same_weights(plain, zero)
    for k in ("train_loss", "valid_loss", "grad_norm_mean"):
        assert h0[k] == h1[k], k
    # the global RNG ends where the plain run left it: λ = 0 drew nothing extra
    torch.set_rng_state(state)
    finetune_on_real(copy.deepcopy(base), tr, va, _cfg(), tmp_path / "plain2")
    after_plain = torch.get_rng_state()
    torch.set_rng_state(state)
    finetune_on_real(
        copy.deepcopy(base), tr, va, _cfg(), tmp_path / "z2", replay=ReplaySpec(syn, 0)
    )
    assert torch.equal(after_plain, torch.get_rng_state())


def test_replay_changes_the_weights_and_keeps_the_synthetic_loss_lower(problem, tmp_path):
    tr, va, base, syn = problem
    before = synthetic_l_over_d(base, syn)
    plain, replayed = copy.deepcopy(base), copy.deepcopy(base)
    cfg = _cfg(epochs=6)
    finetune_on_real(plain, tr, None, cfg, tmp_path / "plain")
    h = finetune_on_real(replayed, tr, None, cfg, tmp_path / "r", replay=ReplaySpec(syn, 3.0, 64))
    assert not _same_weights(plain, replayed)
    assert np.isfinite(h["train_loss"]).all()
    ld_plain, ld_replay = synthetic_l_over_d(plain, syn), synthetic_l_over_d(replayed, syn)
    assert ld_replay < ld_plain - 0.01, (before, ld_plain, ld_replay)


def test_synthetic_l_over_d_matches_numpy(problem):
    _, _, model, syn = problem
    model.eval()
    with torch.no_grad():
        w = model(torch.as_tensor(syn.features)).intensities.double().numpy()
    G, c, d = syn.G, syn.c, syn.d
    ref = ((np.einsum("nk,nkl,nl->n", w, G, w) - 2 * (c * w).sum(1) + d) / d).mean()
    assert synthetic_l_over_d(model, syn, chunk=64) == pytest.approx(ref, rel=1e-9)


def test_replay_draws_are_seeded_and_leave_the_global_rng_alone(problem):
    syn = problem[3]
    state = torch.get_rng_state()
    a = SyntheticReplay(ReplaySpec(syn, 1.0, 50, seed=7), torch.device("cpu"))
    b = SyntheticReplay(ReplaySpec(syn, 1.0, 50, seed=7), torch.device("cpu"))
    c = SyntheticReplay(ReplaySpec(syn, 1.0, 50, seed=8), torch.device("cpu"))
    da, db, dc = [[r.draw() for _ in range(3)] for r in (a, b, c)]
    assert all(torch.equal(x, y) for x, y in zip(da, db, strict=True))
    assert not torch.equal(da[0], dc[0])
    assert not torch.equal(da[0], da[1])
    assert all(int(x.min()) >= 0 and int(x.max()) < 400 and x.numel() == 50 for x in da)
    assert torch.equal(state, torch.get_rng_state())


def test_resume_with_replay_is_exact(problem, tmp_path):
    tr, va, base, syn = problem
    spec = ReplaySpec(syn, 1.0, 32, seed=5)
    ref = copy.deepcopy(base)
    h_ref = finetune_on_real(ref, tr, va, _cfg(), tmp_path / "a", replay=spec)
    m = copy.deepcopy(base)
    finetune_on_real(m, tr, va, _cfg(epochs=2), tmp_path / "b", replay=spec)
    m = copy.deepcopy(base)
    h = finetune_on_real(m, tr, va, _cfg(), tmp_path / "b", replay=spec)
    assert _same_weights(ref, m) and h["valid_loss"] == h_ref["valid_loss"]
    with pytest.raises(ValueError, match="replay settings"):
        finetune_on_real(
            copy.deepcopy(base), tr, va, _cfg(), tmp_path / "b", replay=ReplaySpec(syn, 2.0, 32)
        )
    with pytest.raises(ValueError, match="differ in synthetic replay"):
        finetune_on_real(copy.deepcopy(base), tr, va, _cfg(), tmp_path / "b")


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf"), "1", True, None])
def test_bad_replay_weight_is_refused(problem, weight):
    with pytest.raises(ValueError, match="replay_weight must be"):
        ReplaySpec(problem[3], weight)


def test_bad_replay_batch_and_params_are_refused(problem):
    with pytest.raises(ValueError, match="replay_batch must be"):
        ReplaySpec(problem[3], 1.0, 0)
    with pytest.raises(ValueError, match="replay_weight = -1"):
        Finetune(replay_weight=-1.0)
    with pytest.raises(ValueError, match="replay_weight = nan"):
        Finetune(replay_weight=float("nan"))
    assert Finetune().replay_weight == 0.0
