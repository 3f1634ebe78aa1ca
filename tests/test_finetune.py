"""Tests of shrinklab.training.finetune: realised-variance loss, fine-tuning, determinism, leakage."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.core.estimators import ledoit_wolf
from shrinklab.core.targets import combine
from shrinklab.data import returns as data
from shrinklab.data.real_windows import build_windows
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training.config import TrainConfig
from shrinklab.training.finetune import (
    evaluate_real,
    finetune_on_real,
    realised_variance_loss,
    walk_forward_finetune,
)
from shrinklab.training.losses import realised_portfolio_variance

pytestmark = pytest.mark.usefixtures("one_thread")


def _returns(n: int = 700, p: int = 8, seed: int = 0, start: str = "2001-01-01") -> pd.DataFrame:
    """One strong market factor plus idiosyncratic noise of unequal size."""
    rng = np.random.default_rng(seed)
    beta = rng.uniform(0.5, 1.5, p)
    idio = rng.uniform(0.5, 2.0, p)
    f = rng.standard_t(5, size=(n, 1))
    X = 0.01 * (f * beta + rng.normal(size=(n, p)) * idio)
    return pd.DataFrame(
        X, index=pd.bdate_range(start, periods=n), columns=[f"s{i}" for i in range(p)]
    )


def _model(F: int, seed: int = 0) -> MLShrinkageNetwork:
    torch.manual_seed(seed)
    return MLShrinkageNetwork(F, hidden_dims=(16, 8), dropout=0.1, input_dropout=0.0)


def _cfg(**kw) -> TrainConfig:
    base = dict(lr=3e-3, epochs=6, batch_size=32, patience=50, T_0=50, l2=0.0, seed=0, device="cpu")
    return TrainConfig(**(base | kw))


def _windows(r: pd.DataFrame, **kw):
    kw = dict(window=30, horizon=21, step=3) | kw
    return build_windows(r, **kw)


def test_realised_variance_loss_matches_losses_module_and_numpy():
    r = _returns(300)
    g = _windows(r, features=False).full
    w = torch.rand(len(g), 5, generator=torch.Generator().manual_seed(0)) * 0.2
    sigma_hat = combine(g.S, g.targets, w.double())
    ours = realised_variance_loss(w, g.S, g.targets, g.realised, demean=True)
    ref = realised_portfolio_variance(sigma_hat, g.realised, demean=True, reduction="none")
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-10)
    # normalised by the sample covariance's realised GMV variance
    base = realised_variance_loss(torch.zeros_like(w), g.S, g.targets, g.realised)
    ratio = realised_variance_loss(w, g.S, g.targets, g.realised, base)
    ref_ratio = realised_portfolio_variance(sigma_hat, g.realised, sample=g.S, reduction="none")
    np.testing.assert_allclose(ratio.numpy(), ref_ratio.numpy(), rtol=1e-10)
    # direct numpy computation for one window
    b = 3
    M = sigma_hat[b].numpy()
    x = np.linalg.solve(M, np.ones(M.shape[0]))
    port = g.realised[b].numpy() @ (x / x.sum())
    assert ours[b].item() == pytest.approx(np.var(port, ddof=1), rel=1e-10)
    # differentiable in the intensities
    wg = w.clone().requires_grad_(True)
    realised_variance_loss(wg, g.S, g.targets, g.realised).sum().backward()
    assert torch.isfinite(wg.grad).all() and wg.grad.abs().sum() > 0


def test_finetuning_decreases_the_realised_variance_loss(tmp_path):
    r = _returns()
    tr = _windows(r, end=r.index[499], asset_subsets=1, min_assets=4)
    F = tr.full.features.shape[1]
    model = _model(F)
    before = evaluate_real(model, tr)
    hist = finetune_on_real(model, tr, None, _cfg(epochs=15), tmp_path)
    after = evaluate_real(model, tr)
    assert after["loss"] < before["loss"] - 0.01
    assert hist["device"] == "cpu" and all(s > 0 for s in hist["samples_per_s"])
    assert np.isfinite(hist["train_loss"]).all()
    # the baseline (LW) normaliser is what the loss divides by: LW itself scores exactly 1
    g = tr.full
    lw_var = realised_variance_loss(torch.zeros(len(g), 5), ledoit_wolf(g.X), g.targets, g.realised)
    assert torch.allclose(lw_var / lw_var, torch.ones(len(g), dtype=torch.float64))


def test_early_stopping_restores_the_best_validation_weights(tmp_path):
    r = _returns()
    tr = _windows(r, end=r.index[449])
    va = _windows(r, start=r.index[450], end=r.index[-1], step=21)
    model = _model(tr.full.features.shape[1])
    hist = finetune_on_real(model, tr, va, _cfg(epochs=8, patience=3, lr=1e-2), tmp_path)
    best = int(np.nanargmin(hist["valid_loss"]))
    assert hist["best_epoch"] == best
    assert hist["final_valid"]["loss"] == pytest.approx(hist["valid_loss"][best], rel=1e-6)
    assert hist["initial_valid"]["n"] == len(va)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["best_epoch"] == best


def test_logger_gets_intensity_histograms_and_changes_nothing(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("dvclive")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from shrinklab.training.monitor import RunLogger

    r = _returns(500)
    tr, va = _windows(r, end=r.index[349]), _windows(r, start=r.index[350], step=21)
    base = _model(tr.full.features.shape[1], seed=1)
    plain, logged = copy.deepcopy(base), copy.deepcopy(base)
    h0 = finetune_on_real(plain, tr, va, _cfg(epochs=3), tmp_path / "a")
    with RunLogger("finetune/x", tmp_path / "reports") as log:
        h1 = finetune_on_real(logged, tr, va, _cfg(epochs=3), tmp_path / "b", logger=log)
    for k, v in plain.state_dict().items():
        assert torch.equal(v, logged.state_dict()[k]), k
    assert h0["valid_loss"] == h1["valid_loss"]
    acc = EventAccumulator(
        str(tmp_path / "reports" / "tensorboard" / "finetune" / "x"),
        size_guidance={"histograms": 0},
    ).Reload()
    assert {"alpha", "intensity/0", "intensity/4"} <= set(acc.Tags()["histograms"])
    alpha = acc.Histograms("alpha")
    assert [e.step for e in alpha] == [0, 1, 2] and alpha[0].histogram_value.num == len(va)
    # the histogram's mean is the logged mean total intensity
    hv = alpha[-1].histogram_value
    assert hv.sum / hv.num == pytest.approx(h1["alpha_mean"][-1], rel=1e-5)


def test_cpu_runs_are_deterministic_and_resume_is_exact(tmp_path):
    r = _returns(500)
    tr = _windows(r, end=r.index[349], asset_subsets=1, min_assets=4)
    va = _windows(r, start=r.index[350], step=21)
    F = tr.full.features.shape[1]
    base = _model(F, seed=1)
    runs = []
    for name in ("a", "b"):
        m = copy.deepcopy(base)
        h = finetune_on_real(m, tr, va, _cfg(epochs=4), tmp_path / name)
        runs.append((m, h))
    # interrupted after 2 epochs, then resumed to 4
    m = copy.deepcopy(base)
    finetune_on_real(m, tr, va, _cfg(epochs=2), tmp_path / "c")
    m = copy.deepcopy(base)
    h = finetune_on_real(m, tr, va, _cfg(epochs=4), tmp_path / "c")
    runs.append((m, h))
    ref_m, ref_h = runs[0]
    for m, h in runs[1:]:
        for k in ("train_loss", "valid_loss", "lr", "grad_norm_mean"):
            assert h[k] == ref_h[k], k
        for k, v in ref_m.state_dict().items():
            assert torch.equal(v, m.state_dict()[k]), k
    with pytest.raises(ValueError, match="config differs"):
        finetune_on_real(copy.deepcopy(base), tr, va, _cfg(epochs=4, lr=1.0), tmp_path / "c")


def test_walk_forward_never_sees_the_test_period(tmp_path):
    idx = pd.bdate_range("2009-01-01", "2016-06-30")
    r = _returns(len(idx), p=6, start="2009-01-01")
    r.index = idx
    splits = data.walk_forward_splits(r.index, n_folds=2, val_years=1, gap=5)
    kw = dict(
        windows=(30,),
        config=_cfg(epochs=2),
        horizon=10,
        step=10,
        val_step=21,
        asset_subsets=1,
        min_assets=3,
    )
    F = _windows(r.iloc[:200], features=True).full.features.shape[1]
    model = _model(F)
    res = walk_forward_finetune(model, r, splits, out_dir=tmp_path / "a", **kw)
    assert len(res.folds) == 2 and 1 <= res.epochs <= 2
    tab = res.table()
    assert (tab["val_end"] < data.TEST_START).all()
    # the pretrained model is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, _model(F).state_dict()[k])
    # returns inside the test period cannot influence any fold or the final model
    pert = r.copy()
    test = pert.index >= data.TEST_START
    pert.loc[test] = pert.loc[test] * 5.0 + 0.02
    res2 = walk_forward_finetune(model, pert, splits, out_dir=tmp_path / "b", **kw)
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, res2.model.state_dict()[k]), k
    pd.testing.assert_frame_equal(tab, res2.table())


def test_errors(tmp_path):
    r = _returns(300)
    tr = _windows(r)
    model = _model(tr.full.features.shape[1])
    with pytest.raises(ValueError, match="baseline"):
        finetune_on_real(model, tr, None, _cfg(), tmp_path, baseline="oas")
    with pytest.raises(ValueError, match="out_dir"):
        finetune_on_real(model, tr, None, _cfg(), None)
    with pytest.raises(ValueError, match="features"):
        finetune_on_real(model, _windows(r, features=False), None, _cfg(), tmp_path)


def test_regimes_reach_the_network_embedding(tmp_path):
    r = _returns(400)
    regimes = pd.Series(np.arange(len(r)) // 50 % 3, index=r.index)
    tr = _windows(r, regimes=regimes)
    torch.manual_seed(0)
    net = MLShrinkageNetwork(tr.full.features.shape[1], hidden_dims=(8,), n_regimes=3)
    before = net.regime_embedding.weight.detach().clone()
    finetune_on_real(net, tr, None, _cfg(epochs=2), tmp_path)
    changed = (net.regime_embedding.weight - before).abs().sum(1) > 0
    # the rows of the regimes that occur were trained; the "unknown" row (index 3) was not
    assert changed[:3].all() and not changed[3]
