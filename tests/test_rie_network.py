"""The learned peer (RIEnet, Bongiorno, Manolakis & Mantegna 2025): the network, its
estimator, its trainer and its place in the scenario grid and the backtest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklab.core.estimators import ledoit_wolf
from shrinklab.core.params import load_section
from shrinklab.data.real_windows import gmv_weights
from shrinklab.evaluation import backtest, scenarios
from shrinklab.models.registry import load_model, save_model
from shrinklab.models.rie_network import RIENetCovariance, RIENetwork
from shrinklab.training.rie_network import (
    PeerConfig,
    peer_config,
    realised_loss,
    train_rie_network,
)
from tests._scripts import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed: int = 0) -> RIENetwork:
    torch.manual_seed(seed)
    net = RIENetwork()
    with torch.no_grad():  # a non-trivial kernel and volatility head
        net.lag.copy_(torch.tensor([0.3, 1.0, 0.5]))
        net.vol_head[2].weight.normal_(0, 0.3)
        net.vol_head[2].bias.fill_(0.1)
    return net.eval()


def _returns(B: int, n: int, p: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, n, 1, generator=g, dtype=torch.float64)
    vol = 0.01 * (1 + torch.rand(1, 1, p, generator=g, dtype=torch.float64))
    return vol * (0.6 * f + torch.randn(B, n, p, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("n, p", [(60, 12), (8, 12)])
def test_outputs_are_symmetric_positive_definite_and_consistent(n, p):
    out = _net()(_returns(3, n, p))
    cov, prec = out.covariance, out.precision
    assert cov.shape == prec.shape == (3, p, p) and out.weights.shape == (3, p)
    torch.testing.assert_close(cov, cov.transpose(-1, -2), rtol=0, atol=1e-18)
    assert bool((torch.linalg.eigvalsh(cov) > 0).all())
    eye = torch.eye(p, dtype=cov.dtype).expand(3, p, p)
    torch.testing.assert_close(cov @ prec, eye, rtol=0, atol=1e-8)
    # GMV weights against the repository's independent solve of Σ̂⁻¹1 / 1ᵀΣ̂⁻¹1
    torch.testing.assert_close(out.weights, gmv_weights(cov), rtol=0, atol=1e-10)
    torch.testing.assert_close(out.eigenvalues.mean(-1), torch.ones(3, dtype=cov.dtype))
    # the level of Σ̂ is the (lag-weighted) sample's: geometric mean of the volatilities kept
    X = _returns(3, n, p)
    Xc = X - X.mean(-2, keepdim=True)
    sd = ((_net().lag_weights(n)[:, None] * Xc**2).sum(-2) / n).sqrt()
    torch.testing.assert_close(out.volatility.log().mean(-1), sd.log().mean(-1))


def test_equal_lag_weights_give_the_sample_correlation_eigenbasis():
    """At initialisation the kernel is flat: V diagonalises numpy's correlation matrix
    and, with the volatility head at zero, the diagonal of Σ̂ relates to the sample
    variances through diag(V diag(ξ) Vᵀ)."""
    net = RIENetwork().eval()
    X = _returns(1, 50, 7, seed=3)
    k = net.lag_weights(50)
    torch.testing.assert_close(k, torch.ones(50, dtype=k.dtype))
    out = net(X)
    R = np.corrcoef(X[0].numpy(), rowvar=False)
    V = out.eigenvectors[0].detach().numpy()
    D = V.T @ R @ V
    np.testing.assert_allclose(D - np.diag(np.diag(D)), 0, atol=1e-12)
    sd = X[0].numpy().std(0)  # divisor n, as the network
    np.testing.assert_allclose(out.volatility[0].detach().numpy(), sd, rtol=1e-12)
    inner = (V * out.eigenvalues[0].detach().numpy()) @ V.T
    np.testing.assert_allclose(
        out.covariance[0].detach().numpy(), sd[:, None] * inner * sd, rtol=1e-10
    )


@pytest.mark.parametrize("n, p", [(60, 10), (6, 10)])
def test_permuting_assets_permutes_the_covariance(n, p):
    net, X = _net(), _returns(2, n, p, seed=1)
    perm = torch.randperm(p, generator=torch.Generator().manual_seed(2))
    a = net(X).covariance
    b = net(X[:, :, perm]).covariance
    scale = a.abs().max()
    torch.testing.assert_close(b / scale, a[:, perm][:, :, perm] / scale, rtol=0, atol=1e-10)


def test_scaling_the_returns_scales_the_covariance_by_its_square():
    net, X = _net(), _returns(2, 40, 8, seed=4)
    a, b = net(X), net(7.0 * X)
    torch.testing.assert_close(b.covariance, 49.0 * a.covariance, rtol=1e-9, atol=0)
    torch.testing.assert_close(b.weights, a.weights, rtol=0, atol=1e-10)


def test_a_few_adam_steps_reduce_the_realised_loss():
    """End-to-end gradients: training on a fixed set of windows lowers its loss."""
    torch.manual_seed(0)
    net = RIENetwork()
    Xall = _returns(1, 40 * 21 + 21 * 20, 10, seed=5)[0]
    X = torch.stack([Xall[i * 21 : i * 21 + 40] for i in range(20)])
    R = torch.stack([Xall[i * 21 + 40 : i * 21 + 61] for i in range(20)])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = realised_loss(net(X).weights, R).mean()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.99 * losses[0]


def test_save_load_round_trip(tmp_path):
    net, X = _net(), _returns(2, 30, 6)
    path = save_model(tmp_path / "rie.pt", net, [], [], extra={"note": "x"})
    back = load_model(path)
    assert isinstance(back, RIENetwork) and back.extra == {"note": "x"}
    torch.testing.assert_close(back(X).covariance, net(X).covariance, rtol=0, atol=0)


# --------------------------------------------------------------------------- estimator
def test_estimator_fit_matches_the_network_and_accepts_a_path(tmp_path):
    net = _net()
    X = _returns(1, 50, 6)[0].numpy()
    est = RIENetCovariance(net).fit(pd.DataFrame(X))
    ref = net(torch.as_tensor(X)).covariance[0].detach().numpy()
    np.testing.assert_allclose(est.covariance_, ref, rtol=1e-12)
    np.testing.assert_allclose(est.covariance_ @ est.precision_, np.eye(6), atol=1e-8)
    np.testing.assert_allclose(est.location_, X.mean(0))
    assert est.weights_.sum() == pytest.approx(1.0)
    path = save_model(tmp_path / "rie.pt", net, [], [])
    est2 = RIENetCovariance(model_path=path).fit(X)
    np.testing.assert_allclose(est2.covariance_, est.covariance_, rtol=1e-10)


def test_estimator_constant_column_keeps_zero_variance():
    X = _returns(1, 50, 5)[0].numpy()
    X[:, 2] = 0.003
    est = RIENetCovariance(_net()).fit(X)
    assert np.isfinite(est.covariance_).all() and np.isfinite(est.precision_).all()
    np.testing.assert_array_equal(est.covariance_[2], 0.0)
    assert est.weights_[2] == 0.0
    np.testing.assert_allclose(
        est.precision_, np.linalg.pinv(est.covariance_), atol=1e-6 * np.abs(est.precision_).max()
    )


@pytest.mark.parametrize(
    "X, match",
    [
        (np.ones(5), "2-D"),
        (np.ones((1, 4)), "at least 2 observations"),
        (np.array([[0.1, np.nan], [0.2, 0.3], [0.0, 0.1]]), "non-finite"),
        (np.zeros((2, 5, 3)), "must be 2-D"),
        (np.array([["a", "b"], ["c", "d"]]), "numeric"),
    ],
)
def test_estimator_input_errors(X, match):
    with pytest.raises(ValueError, match=match):
        RIENetCovariance(_net()).fit(X)


def test_estimator_needs_exactly_one_model():
    with pytest.raises(ValueError, match="exactly one"):
        RIENetCovariance().fit(np.ones((5, 2)))


# --------------------------------------------------------------------------- trainer
def _fake_market(p: int = 6, seed: int = 0) -> pd.DataFrame:
    idx = pd.bdate_range("2009-01-01", "2017-06-30")
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(len(idx), 1))
    R = 0.01 * (0.7 * f + rng.normal(size=(len(idx), p)) * np.linspace(0.5, 2.0, p))
    return pd.DataFrame(R, index=idx, columns=[f"a{i}" for i in range(p)])


def _tiny_config(**kw) -> PeerConfig:
    base = dict(
        windows=(40,),
        step=42,
        asset_subsets=1,
        min_assets=3,
        val_start="2014-01-01",
        epochs=3,
        patience=5,
        lr=0.01,
    )
    return PeerConfig(**{**base, **kw})


def test_training_is_deterministic_and_never_sees_2016():
    r = _fake_market()
    a = train_rie_network(r, _tiny_config())
    later = r.copy()
    later.loc[later.index >= "2016-01-01"] *= 5.0  # the test period must not matter
    b = train_rie_network(later, _tiny_config())
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=0, atol=0)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert list(a.validation.columns) == ["window", "n_windows", "peer_vol", "ledoit_wolf_vol"]
    assert a.n_valid == a.validation["n_windows"].sum() > 0 and a.n_train > a.n_valid
    # the kept state is the best validation epoch
    assert a.history["valid_loss"].iloc[a.best_epoch] == a.history["valid_loss"].min()


def test_logging_leaves_the_peer_bit_identical_and_writes_its_curves(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("dvclive")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from shrinklab.training.monitor import RunLogger

    r, cfg = _fake_market(), _tiny_config(patience=1, lr=0.05)
    plain = train_rie_network(r, cfg)
    with RunLogger("peer", tmp_path) as log:
        logged = train_rie_network(r, cfg, logger=log)
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(v, logged.model.state_dict()[k], rtol=0, atol=0)
    pd.testing.assert_frame_equal(plain.history, logged.history)
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "peer")).Reload()
    steps = list(logged.history["epoch"])  # step 0: the untrained model's validation loss
    assert [e.step for e in acc.Scalars("valid/loss")] == steps
    assert [e.value for e in acc.Scalars("valid/loss")] == pytest.approx(
        list(logged.history["valid_loss"]), rel=1e-6
    )
    assert [e.step for e in acc.Scalars("train/loss")] == steps[1:]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(
        list(logged.history["train_loss"].iloc[1:]), rel=1e-6
    )
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx([cfg.lr] * len(steps))
    mean, top = acc.Scalars("grad_norm/mean"), acc.Scalars("grad_norm/max")
    assert len(mean) == len(steps) - 1 and all(0 < m.value <= t.value for m, t in zip(mean, top))
    curves = tmp_path / "dvclive" / "peer" / "plots" / "metrics"
    assert {p.relative_to(curves).as_posix() for p in curves.rglob("*.tsv")} == {
        "train/loss.tsv",
        "valid/loss.tsv",
        "lr.tsv",
        "grad_norm/mean.tsv",
        "grad_norm/max.tsv",
    }


def test_training_refuses_a_validation_start_without_training_days():
    with pytest.raises(ValueError, match="no training day"):
        train_rie_network(_fake_market(), _tiny_config(val_start="2000-01-01"))


# --------------------------------------------------------------------------- evaluation
SPEC = {"name": "f p=6 n=20", "family": "factor", "p": 6, "n": 20}


def test_extra_estimator_rows_in_the_scenario_grid():
    """An extra estimator is scored exactly like the classical ones: a copy of
    Ledoit–Wolf gets Ledoit–Wolf's PRIAL; the peer gets a row of kind 'peer'."""
    grid = scenarios.evaluate_grid(
        [SPEC],
        None,
        n_reps=6,
        seed=0,
        extra_estimators={"lw_copy": ledoit_wolf, "rienet_peer": _net().estimate},
    )
    rows = grid.set_index("estimator")
    assert rows.loc["lw_copy", "prial"] == pytest.approx(rows.loc["ledoit_wolf", "prial"], abs=1e-9)
    assert rows.loc["rienet_peer", "kind"] == "peer"
    assert np.isfinite(
        rows.loc["rienet_peer", ["prial", "se", "diff_best_classical"]].astype(float)
    ).all()
    order = list(grid["estimator"])
    assert order.index("rienet_peer") < order.index("oracle")


def test_extra_estimator_name_clash_is_refused():
    with pytest.raises(ValueError, match="taken"):
        scenarios.evaluate_grid([SPEC], None, n_reps=3, extra_estimators={"oracle": ledoit_wolf})


def test_the_peer_is_a_backtest_row():
    r = _fake_market(p=5)
    res = backtest.gmv_backtest(
        r,
        {"ledoit_wolf": ledoit_wolf, "RIEnet peer": backtest.batched(_net().estimate)},
        windows=(40,),
        start="2016-01-01",
        end="2016-06-30",
    )
    w = res.weights[40]["RIEnet peer"]
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert "RIEnet peer" in res.returns[40].columns


def test_peer_config_takes_every_field_the_section_sets():
    section = load_section("peer", ROOT / "params.yaml")
    config = peer_config(section)
    assert config.windows == tuple(section.windows) and isinstance(config.windows, tuple)
    for name in ("seed", "horizon", "step", "asset_subsets", "val_start", "epochs", "lr"):
        assert getattr(config, name) == getattr(section, name)
    # what the section does not set keeps the config's defaults (the network's sizes)
    default = PeerConfig()
    assert (config.hidden, config.vol_hidden) == (default.hidden, default.vol_hidden)
    # a changed section value reaches the config; a seed replaces only the seed
    other = dataclasses.replace(section, epochs=section.epochs + 7)
    assert peer_config(other).epochs == section.epochs + 7
    moved = peer_config(section, seed=section.seed + 5)
    assert moved.seed == section.seed + 5
    assert dataclasses.replace(moved, seed=config.seed) == config
