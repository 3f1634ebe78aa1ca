"""Tests for shrinklab.training.loop: learning, early stopping, checkpoint/resume, schedules,
logging, and DistributedDataParallel (two gloo processes) against one process."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from shrinklab.core.estimators import solve_simplex_qp
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training.config import REMOVED_FIELDS, TrainConfig, config_diff
from shrinklab.training.device import resolve_amp_dtype
from shrinklab.training.device_data import DeviceData, epoch_pool
from shrinklab.training.loop import (
    OptimizerStep,
    early_stopping_update,
    epoch_order,
    evaluate_loss,
    progress_disabled,
    run_epoch,
    train,
)
from shrinklab.training.losses import quadratic_frobenius

F, K = 8, 3
TESTS_DIR = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_thread")


def make_set(n: int, seed: int = 0, informative: bool = True) -> SimpleNamespace:
    """Random quadratic-form problems whose oracle depends on the features.

    ``A (n, 6, K)`` random, ``G = AᵀA``; the "true" vector ``b = A w° + noise`` with
    ``w°`` a smooth function of the features; ``c = Aᵀb``, ``d = bᵀb``; the label is the
    exact simplex-QP oracle (scikit-free reference: ``solve_simplex_qp``)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, F, generator=g)
    A = torch.randn(n, 6, K, generator=g, dtype=torch.float64)
    drive = x if informative else torch.randn(n, F, generator=g)
    w0 = torch.softmax(drive[:, :K].double() * 1.5, 1) * torch.sigmoid(
        drive[:, K : K + 1].double() * 2
    )
    b = A @ w0[:, :, None] + 0.05 * torch.randn(n, 6, 1, generator=g, dtype=torch.float64)
    G = A.transpose(1, 2) @ A
    c = (A.transpose(1, 2) @ b)[..., 0]
    d = (b**2).sum((1, 2))
    w_star = solve_simplex_qp(G, c)
    return SimpleNamespace(
        features=x.numpy(),
        oracle_w=w_star.float().numpy(),
        G=G.numpy(),
        c=c.numpy(),
        d=d.numpy(),
        difficulty=torch.rand(n, generator=g).numpy(),
        p=torch.randint(5, 40, (n,), generator=g).numpy(),
    )


def small_net(seed: int = 0, dropout: float = 0.3, input_dropout: float = 0.1):
    torch.manual_seed(seed)
    return MLShrinkageNetwork(
        F, num_targets=K, hidden_dims=(32, 16), dropout=dropout, input_dropout=input_dropout
    )


@pytest.fixture(scope="module")
def sets():
    return make_set(2048, seed=0), make_set(512, seed=1)


def _oracle_frobenius(ds) -> float:
    t = {k: torch.as_tensor(getattr(ds, k)).double() for k in ("oracle_w", "G", "c", "d")}
    return quadratic_frobenius(t["oracle_w"], t["G"], t["c"], t["d"]).item()


@pytest.mark.parametrize("optimizer,lr", [("adam", 3e-3), ("sgd", 3e-2)])
def test_training_reduces_loss_towards_oracle(sets, tmp_path, optimizer, lr):
    tr, va = sets
    model = small_net()
    cfg = TrainConfig(optimizer=optimizer, lr=lr, epochs=12, batch_size=128, T_0=12, patience=50)
    before = model.predict(va.features).intensities.double()
    t = {k: torch.as_tensor(getattr(va, k)).double() for k in ("G", "c", "d")}
    loss_before = quadratic_frobenius(before, t["G"], t["c"], t["d"]).item()
    hist = train(model, tr, va, cfg, out_dir=tmp_path)
    after = model.predict(va.features).intensities.double()
    loss_after = quadratic_frobenius(after, t["G"], t["c"], t["d"]).item()
    oracle = _oracle_frobenius(va)
    # the simplex-QP oracle is the exact lower bound of the family
    assert loss_after >= oracle - 1e-6
    # learning closes most of the gap between the initial network and the oracle
    assert loss_after - oracle < 0.5 * (loss_before - oracle), (loss_before, loss_after, oracle)
    assert hist["valid_frobenius"][hist["best_epoch"]] == pytest.approx(loss_after, rel=1e-4)
    assert len(hist["train_loss"]) == 12 and hist["finished"] and not model.training
    # evaluate_loss recomputes the monitored validation objective of the restored weights
    ev = evaluate_loss(model, va, cfg)
    assert ev["loss"] == pytest.approx(hist["best_valid_loss"], rel=1e-6)
    assert ev["frobenius"] == pytest.approx(loss_after, rel=1e-4)


def test_without_validation_set_monitors_training_loss(sets, tmp_path):
    tr, _ = sets
    hist = train(small_net(), tr, None, TrainConfig(epochs=2, batch_size=512), out_dir=tmp_path)
    assert hist["monitored"] == "train" and len(hist["valid_loss"]) == 2


def test_resume_after_interruption_is_bit_identical(sets, tmp_path):
    tr, va = sets
    cfg = TrainConfig(epochs=5, batch_size=256, T_0=2, T_mult=1, patience=50)
    straight = small_net()
    h1 = train(straight, tr, va, cfg, out_dir=tmp_path / "a")

    resumed = small_net()
    partial = train(resumed, tr, va, cfg, out_dir=tmp_path / "b", max_epochs_per_call=2)
    assert not partial["finished"] and len(partial["train_loss"]) == 2
    # a fresh process would build a new model: different weights before resuming
    resumed = small_net(seed=123)
    h2 = train(resumed, tr, va, cfg, out_dir=tmp_path / "b")
    for (k1, v1), (k2, v2) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    for key in ("train_loss", "valid_loss", "lr", "grad_norm_mean", "alpha_mean"):
        assert h1[key] == h2[key], key
    assert h1["best_epoch"] == h2["best_epoch"]
    # a finished run resumes to the same (best) weights without training again
    again = small_net(seed=7)
    h3 = train(again, tr, va, cfg, out_dir=tmp_path / "b")
    assert h3["train_loss"] == h2["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), resumed.parameters()))


def train_with_snapshots(cfg: TrainConfig, out_dir: Path):
    """``small_net()`` trained on uninformative sets (so it overfits early) with the
    weights after every epoch: ``(tr, va, model, history, {epoch: state_dict})``."""
    tr, va = make_set(512, seed=3, informative=False), make_set(256, seed=4, informative=False)
    snapshots = {}
    model = small_net()

    def snap(epoch, record):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    hist = train(model, tr, va, cfg, out_dir=out_dir, on_epoch_end=snap)
    return tr, va, model, hist, snapshots


def test_early_stopping_restores_best_weights(tmp_path):
    cfg = TrainConfig(lr=1e-2, epochs=60, batch_size=64, patience=3, T_0=60)
    tr, va, model, hist, snapshots = train_with_snapshots(cfg, tmp_path)
    assert hist["stopped_early"]
    best = int(np.argmin(hist["valid_loss"]))
    assert hist["best_epoch"] == best
    assert len(hist["valid_loss"]) == best + 1 + cfg.patience
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[best][k]), k
    # resuming a stopped run trains no further and restores the same best weights
    again = small_net(seed=5)
    h2 = train(again, tr, va, cfg, out_dir=tmp_path)
    assert h2["valid_loss"] == hist["valid_loss"] and h2["finished"]
    for k, v in again.state_dict().items():
        assert torch.equal(v, snapshots[best][k]), k


def test_run_finished_by_epoch_budget_resumes_to_best_weights(tmp_path):
    cfg = TrainConfig(lr=1e-2, epochs=8, batch_size=64, patience=100, T_0=8)
    tr, va, _, hist, snapshots = train_with_snapshots(cfg, tmp_path)
    best = hist["best_epoch"]
    assert not hist["stopped_early"] and best < 7  # the last epoch is not the best
    again = small_net(seed=5)
    train(again, tr, va, cfg, out_dir=tmp_path)
    for k, v in again.state_dict().items():
        assert torch.equal(v, snapshots[best][k]), k


def test_checkpoint_contents_and_nothing_in_cwd(sets, tmp_path, monkeypatch):
    tr, va = sets
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "run"
    train(small_net(), tr, va, TrainConfig(epochs=1, batch_size=512), out_dir=out)
    assert list(cwd.iterdir()) == []
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "state", "best_state", "history"} <= set(ckpt)
    assert {"torch", "numpy", "python"} <= set(ckpt["rng"])
    assert json.loads((out / "history.json").read_text())["finished"] is True
    with pytest.raises(ValueError, match="config differs"):
        train(small_net(), tr, va, TrainConfig(epochs=2, batch_size=256), out_dir=out)
    with pytest.raises(ValueError, match="different training set"):
        train(small_net(), va, va, TrainConfig(epochs=2, batch_size=512), out_dir=out)
    with pytest.raises(ValueError, match="out_dir"):
        train(small_net(), tr, va, TrainConfig(epochs=1))
    bad = SimpleNamespace(**vars(va))
    bad.d = va.d.copy()
    bad.d[3] = 0.0
    with pytest.raises(ValueError, match="d = "):
        train(small_net(), bad, None, TrainConfig(epochs=1), out_dir=tmp_path / "bad")
    bad.d[3], bad.features = va.d[3], va.features.copy()
    bad.features[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train(small_net(), bad, None, TrainConfig(epochs=1), out_dir=tmp_path / "bad")


def test_curriculum_and_progressive_pools(sets):
    tr, _ = sets
    data = DeviceData(tr, torch.device("cpu"), need_schedule=True)
    cfg = TrainConfig(curriculum=True)
    kw = dict(curriculum_start=0.25, curriculum_epochs=3)
    sizes = [epoch_pool(data, cfg, e, **kw).numel() for e in range(5)]
    assert sizes == [512, 1024, 1536, 2048, 2048]  # ceil((0.25 + 0.75 e / 3) * 2048)
    first = epoch_pool(data, cfg, 0, **kw).numpy()
    cutoff = np.sort(tr.difficulty)[511]
    assert np.all(tr.difficulty[first] <= cutoff)  # the easiest quarter
    prog = TrainConfig(progressive=True)
    p0 = epoch_pool(data, prog, 0, progressive_epochs=4).numpy()
    assert set(tr.p[p0]) == {tr.p.min()}
    assert epoch_pool(data, prog, 4, progressive_epochs=4).numel() == 2048
    counts = [epoch_pool(data, prog, e, progressive_epochs=4).numel() for e in range(5)]
    assert counts == sorted(counts)


def test_dvclive_logging(sets, tmp_path):
    from dvclive import Live

    tr, va = sets
    with Live(dir=str(tmp_path / "live"), save_dvc_exp=False, dvcyaml=None) as live:
        train(
            small_net(), tr, va, TrainConfig(epochs=3, batch_size=512), tmp_path / "o", logger=live
        )
    for name in ("train/loss", "valid/loss", "lr", "grad_norm/mean", "alpha/mean", "alpha/std"):
        tsv = tmp_path / "live" / "plots" / "metrics" / f"{name}.tsv"
        lines = tsv.read_text().strip().splitlines()
        assert len(lines) == 1 + 3, name  # header + one row per epoch


class _RecordingLogger:
    def __init__(self):
        self.rows, self.step = [], 0

    def log_metric(self, name, value):
        self.rows.append((self.step, name, value))

    def next_step(self):
        self.step += 1


def test_resumed_run_gives_its_logger_every_epoch(sets, tmp_path):
    """A logger passed to a resumed (or already finished) run still sees all epochs,
    with the same values as a logger that followed an uninterrupted run."""
    tr, va = sets
    cfg = TrainConfig(epochs=3, batch_size=512)
    straight = _RecordingLogger()
    train(small_net(), tr, va, cfg, tmp_path / "a", logger=straight)
    train(small_net(), tr, va, cfg, tmp_path / "b", max_epochs_per_call=2)
    resumed = _RecordingLogger()
    train(small_net(), tr, va, cfg, tmp_path / "b", logger=resumed)
    assert resumed.step == straight.step == 3
    assert resumed.rows == straight.rows
    finished = _RecordingLogger()  # resuming a finished run trains nothing, logs everything
    train(small_net(), tr, va, cfg, tmp_path / "b", logger=finished)
    assert finished.rows == straight.rows


def test_progress_bar_quiet_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    assert progress_disabled()
    monkeypatch.delenv("CI")
    monkeypatch.setenv("PAPERMILL", "1")
    assert progress_disabled()


def test_amp_is_cuda_only_and_config_validation():
    assert resolve_amp_dtype("bf16", torch.device("cpu")) is None
    assert resolve_amp_dtype("fp16", torch.device("cuda")) is torch.float16
    assert resolve_amp_dtype(None, torch.device("cuda")) is None
    for bad in ({"optimizer": "rmsprop"}, {"amp": "int8"}, {"batch_size": 1}, {"lr": 0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


_WORKER = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from test_train import make_set, small_net
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train
out = sys.argv[1]
tr, va = make_set(512, seed=0), make_set(128, seed=1)
model = small_net(dropout=0.0, input_dropout=0.0)
cfg = TrainConfig(epochs=3, batch_size=64, T_0=2, patience=50)
hist = train(model, tr, va, cfg, out_dir=out, resume=False)
if int(os.environ.get("RANK", "0")) == 0:
    torch.save({{"state": model.state_dict(), "history": hist}}, os.path.join(out, "final.pt"))
"""


def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER.format(tests=str(TESTS_DIR))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = tmp_path / "single"
    subprocess.run([sys.executable, str(script), str(single)], check=True, env=env, timeout=120)
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    res = subprocess.run(
        [*cmd, str(script), str(ddp)], env=env, timeout=180, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a = torch.load(single / "final.pt", weights_only=True)
    b = torch.load(ddp / "final.pt", weights_only=True)
    assert b["history"]["world_size"] == 2 and a["history"]["world_size"] == 1
    # Same global batches, synchronised batch norm, gradient = global-batch mean: the
    # runs agree up to float32 reduction order (24 Adam steps; measured max |Δw| 5e-7,
    # 0.17 without the batch-norm synchronisation).
    for k, v in a["state"].items():
        torch.testing.assert_close(b["state"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    np.testing.assert_allclose(b["history"]["valid_loss"], a["history"]["valid_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["history"]["train_loss"], a["history"]["train_loss"], rtol=1e-5)


_KILLED = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_train import make_set, small_net
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train
tr, va = make_set(2048, seed=0), make_set(512, seed=1)

def die(epoch, record):
    if epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a pre-empted job

train(small_net(), tr, va, TrainConfig(epochs=5, batch_size=256, T_0=2, T_mult=1, patience=50),
      out_dir=sys.argv[1], on_epoch_end=die)
"""


def test_sigkilled_run_resumes_to_identical_result(sets, tmp_path):
    tr, va = sets
    cfg = TrainConfig(epochs=5, batch_size=256, T_0=2, T_mult=1, patience=50)
    straight = small_net()
    h1 = train(straight, tr, va, cfg, out_dir=tmp_path / "a")
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(_KILLED.format(tests=str(TESTS_DIR))))
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "b")], timeout=120)
    assert res.returncode == -9  # really killed
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 3
    resumed = small_net(seed=99)
    h2 = train(resumed, tr, va, cfg, out_dir=tmp_path / "b")
    assert h2["train_loss"] == h1["train_loss"] and h2["valid_loss"] == h1["valid_loss"]
    for (k, v1), v2 in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v1, v2), k


class _MatrixSet(SimpleNamespace):
    """A small training set that can rebuild its matrices (like dataset.TrainingSet)."""

    def rebuild_matrices(self, indices):
        idx = torch.as_tensor(indices).long()
        out = []
        for p in sorted(set(self.p[idx].tolist())):
            sel = idx[torch.as_tensor(self.p)[idx] == p]
            mats = [self.mats[int(i)] for i in sel]
            out.append(
                SimpleNamespace(
                    indices=sel,
                    p=p,
                    S=torch.stack([m[0] for m in mats]),
                    T=torch.stack([m[1] for m in mats]),
                    sigma=torch.stack([m[2] for m in mats]),
                )
            )
        return out


def make_matrix_set(n: int, seed: int) -> _MatrixSet:
    from shrinklab.core.targets import quadratic_form, shrinkage_targets

    g = torch.Generator().manual_seed(seed)
    feats, ws, Gs, cs, ds, ps, mats = [], [], [], [], [], [], []
    for i in range(n):
        p = 3 if i % 2 else 5
        L = torch.randn(p, p, generator=g, dtype=torch.float64)
        sigma = L @ L.T / p + 0.2 * torch.eye(p, dtype=torch.float64)
        X = torch.randn(12, p, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
        Xc = X - X.mean(0)
        S = Xc.T @ Xc / 12
        T = shrinkage_targets(X)
        G, c, d = quadratic_form(S, T, sigma)
        ev = torch.linalg.eigvalsh(S)
        feats.append(
            torch.cat(
                [
                    torch.log(ev[[0, -1]] / ev.mean()),
                    torch.randn(F - 2, generator=g, dtype=torch.float64),
                ]
            )
        )
        ws.append(solve_simplex_qp(G, c))
        Gs.append(G), cs.append(c), ds.append(d), ps.append(p), mats.append((S, T, sigma))
    return _MatrixSet(
        features=torch.stack(feats).float(),
        oracle_w=torch.stack(ws),
        G=torch.stack(Gs),
        c=torch.stack(cs),
        d=torch.stack(ds),
        p=torch.tensor(ps),
        mats=mats,
    )


@pytest.fixture
def small_matrix_pool(monkeypatch):
    """A pool of 48 rebuilt matrices, 8 per step (the constants are 1024 and 32)."""
    from shrinklab.training import device_data

    monkeypatch.setattr(device_data, "SPECTRUM_POOL", 48)
    monkeypatch.setattr(device_data, "SPECTRUM_BATCH", 8)


def test_spectrum_term_matches_losses_and_trains(tmp_path, small_matrix_pool):
    from shrinklab.core.targets import combine
    from shrinklab.training.device_data import SpectrumCache
    from shrinklab.training.losses import spectrum_loss

    tr, va = make_matrix_set(128, seed=0), make_matrix_set(32, seed=1)
    cfg = TrainConfig(
        epochs=3, batch_size=32, spectrum_weight=1.0,
        intensity_weight=0.1, matrix_weight=0.1, T_0=4, patience=50,
    )  # fmt: skip
    data = DeviceData(tr, torch.device("cpu"), need_schedule=False)
    cache = SpectrumCache(tr, data, cfg, torch.device("cpu"))
    assert sum(int(s) for s in cache.sizes) == 48
    b, rows = cache.draw(0, 0)
    assert (b, rows.tolist()) == (lambda r: (r[0], r[1].tolist()))(cache.draw(0, 0))
    idx = cache.features_index(b, rows)
    w = torch.rand(rows.numel(), 5, dtype=torch.float64) / 5
    S, T, sigma = (torch.stack([tr.mats[int(i)][j] for i in idx]) for j in range(3))
    ref = spectrum_loss(combine(S, T, w), sigma, sample=S, reduction="none")
    torch.testing.assert_close(cache.loss(w, b, rows), ref, rtol=1e-10, atol=1e-12)

    def net():
        torch.manual_seed(0)
        return MLShrinkageNetwork(
            F, num_targets=5, hidden_dims=(16, 8), dropout=0.0, input_dropout=0.0
        )

    def pool_loss(model):  # mean normalised spectrum loss over the cached pool
        vals = []
        for k, (ix, *_rest) in enumerate(cache.buckets):
            w_hat = model.predict(data.x[ix]).intensities
            vals.append(cache.loss(w_hat, k, torch.arange(ix.numel())))
        return torch.cat(vals).mean().item()

    assert cache.mean_loss(net(), data) == pytest.approx(pool_loss(net()), rel=1e-6)

    # the spectrum term alone, enough steps to see it learn
    only = dataclasses.replace(
        cfg, epochs=12, T_0=12, lr=3e-3, intensity_weight=0.0, matrix_weight=0.0,
        uncertainty_weight=0.0, l2=0.0,
    )  # fmt: skip
    model = net()
    before = pool_loss(model)
    hist = train(model, tr, None, only, out_dir=tmp_path / "only")
    assert all(np.isfinite(hist["train_spectrum"]))
    assert pool_loss(model) < 0.9 * before
    # the monitored validation loss is the validation pool's spectrum loss (weight 1)
    assert hist["valid_loss"] == pytest.approx(hist["valid_spectrum"], rel=1e-6)
    assert hist["best_valid_loss"] == min(hist["valid_loss"])
    # deterministic and resumable with the spectrum term too
    resumed = net()
    hist = train(net(), tr, va, cfg, out_dir=tmp_path / "a")
    train(resumed, tr, va, cfg, out_dir=tmp_path / "b", max_epochs_per_call=1)
    h2 = train(net(), tr, va, cfg, out_dir=tmp_path / "b")
    assert h2["train_spectrum"] == hist["train_spectrum"]
    with pytest.raises(ValueError, match="rebuild_matrices"):
        train(net(), make_set(64), None, cfg, out_dir=tmp_path / "c")


def _stein_numpy(est: np.ndarray, sigma: np.ndarray) -> float:
    """Stein's loss [tr(Σ̂Σ⁻¹) − log det(Σ̂Σ⁻¹)]/p − 1 (James & Stein 1961), in numpy."""
    M = np.linalg.solve(sigma, est)
    return (np.trace(M) - np.linalg.slogdet(M)[1]) / len(M) - 1.0


def _gmv_excess_numpy(est: np.ndarray, sigma: np.ndarray) -> float:
    """xᵀΣx / (1ᵀΣ⁻¹1)⁻¹ − 1 for the GMV weights x = Σ̂⁻¹1 / 1ᵀΣ̂⁻¹1 of Σ̂."""
    one = np.ones(len(est))
    x = np.linalg.solve(est, one)
    x /= x.sum()
    return float(x @ sigma @ x * (one @ np.linalg.solve(sigma, one)) - 1.0)


def test_log_det_and_portfolio_terms_match_numpy_and_train(tmp_path, small_matrix_pool):
    from shrinklab.core.targets import combine
    from shrinklab.training.device_data import SpectrumCache

    tr = make_matrix_set(128, seed=0)
    cfg = TrainConfig(
        epochs=12, T_0=12, lr=3e-3, batch_size=32,
        intensity_weight=0.0, matrix_weight=0.0, uncertainty_weight=0.0, l2=0.0,
        log_det_weight=1.0, patience=50,
    )  # fmt: skip
    assert cfg.uses_matrix_pool and not TrainConfig().uses_matrix_pool
    data = DeviceData(tr, torch.device("cpu"), need_schedule=False)
    cache = SpectrumCache(tr, data, cfg, torch.device("cpu"))
    b, rows = cache.draw(0, 0)
    idx = cache.features_index(b, rows)
    w = (
        torch.rand(rows.numel(), 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        / 5
    )
    S, T, sigma = (torch.stack([tr.mats[int(i)][j] for i in idx]) for j in range(3))
    est = combine(S, T, w).numpy()
    stein = [_stein_numpy(e, s) for e, s in zip(est, sigma.numpy(), strict=True)]
    gmv = [_gmv_excess_numpy(e, s) for e, s in zip(est, sigma.numpy(), strict=True)]
    got = cache.stein_and_portfolio(w, b, rows, 2.0, 0.0).numpy()
    np.testing.assert_allclose(got, 2.0 * np.array(stein), rtol=1e-9, atol=1e-12)
    got = cache.stein_and_portfolio(w, b, rows, 0.0, 3.0).numpy()
    np.testing.assert_allclose(got, 3.0 * np.array(gmv), rtol=1e-8, atol=1e-12)
    assert min(stein) > 0 and min(gmv) >= 0
    # Σ̂ = Σ: both terms vanish (here with S replaced by Σ and w = 0)
    i, S_, *rest = cache.buckets[b]
    cache.buckets[b] = (i, rest[-1].clone(), *rest)
    zero = cache.stein_and_portfolio(torch.zeros_like(w), b, rows, 1.0, 1.0)
    torch.testing.assert_close(zero, torch.zeros_like(zero), atol=1e-12, rtol=0)
    # a Σ̂ that is not positive definite adds nothing (rather than inf or nan)
    cache.buckets[b] = (i, -S_, *rest)
    torch.testing.assert_close(
        cache.stein_and_portfolio(torch.zeros_like(w), b, rows, 1.0, 1.0), torch.zeros_like(zero)
    )
    cache.buckets[b] = (i, S_, *rest)

    def pool_mean(model, log_det, port):  # mean term over the whole cached pool
        vals = []
        for k, (ix, *_rest) in enumerate(cache.buckets):
            w_hat = model.predict(data.x[ix]).intensities
            vals.append(
                cache.stein_and_portfolio(w_hat, k, torch.arange(ix.numel()), log_det, port)
            )
        return torch.cat(vals).mean().item()

    # each term alone trains the network to lower it
    for name, weights in (("log_det", (1.0, 0.0)), ("portfolio", (0.0, 1.0))):
        torch.manual_seed(0)
        model = MLShrinkageNetwork(
            F, num_targets=5, hidden_dims=(16, 8), dropout=0.0, input_dropout=0.0
        )
        before = pool_mean(model, *weights)
        run = dataclasses.replace(cfg, log_det_weight=weights[0], portfolio_weight=weights[1])
        hist = train(model, tr, None, run, out_dir=tmp_path / name)
        assert all(np.isfinite(hist["train_loss"]))
        after = pool_mean(model, *weights)
        assert after < 0.97 * before, name


def test_new_loss_weights_keep_old_serialisations():
    base = TrainConfig()
    assert "log_det_weight" not in base.to_dict() and "portfolio_weight" not in base.to_dict()
    on = TrainConfig(log_det_weight=0.1, portfolio_weight=0.2)
    assert on.to_dict()["log_det_weight"] == 0.1 and on.to_dict()["portfolio_weight"] == 0.2
    assert TrainConfig(**on.to_dict()) == on and TrainConfig(**base.to_dict()) == base
    assert config_diff(base.to_dict(), base) == []
    assert config_diff(base.to_dict(), on) == ["log_det_weight", "portfolio_weight"]
    assert config_diff(on.to_dict(), base) == ["log_det_weight", "portfolio_weight"]
    with pytest.raises(ValueError, match="log_det_weight"):
        TrainConfig(log_det_weight=-1.0)


def test_priors_set_from_oracle_and_target_count_checked(sets, tmp_path):
    tr, _ = sets
    model = small_net()
    train(model, tr, None, TrainConfig(epochs=3), out_dir=tmp_path / "a", max_epochs_per_call=0)
    alpha = tr.oracle_w.astype(np.float64).sum(1)
    a = alpha.mean()
    pi = (tr.oracle_w[alpha > 1e-12] / alpha[alpha > 1e-12, None]).mean(0)
    assert model.alpha_head.bias.item() == pytest.approx(np.log(a / (1 - a)), rel=1e-5)
    got = torch.softmax(model.weights_head.bias.detach().double(), 0).numpy()
    np.testing.assert_allclose(got, pi / pi.sum(), rtol=1e-5)
    wrong = MLShrinkageNetwork(F, num_targets=K + 1, hidden_dims=(8,))
    with pytest.raises(ValueError, match="targets"):
        train(wrong, tr, None, TrainConfig(epochs=1), out_dir=tmp_path / "b")


# ------------------------------------------------ shared loop (train, finetune, compress)
def _least_squares(n: int = 10, dim: int = 3):
    g = torch.Generator().manual_seed(5)
    X = torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.1 * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    return X, y


@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_run_epoch_matches_hand_written_sgd(clip_norm):
    """Least squares, plain SGD: each step of run_epoch equals the closed-form gradient
    step ``β ← β − lr · c · 2Xᵀ(Xβ − y)/b`` (c = min(1, clip/‖g‖)), computed in numpy; the
    tail batch smaller than ``min_batch`` is dropped; loss sums and norms are reported."""
    X, y = _least_squares()
    beta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([beta], lr=0.1)
    order = torch.tensor([3, 1, 4, 0, 9, 2, 6, 5, 8, 7])

    def batch_loss(step, idx):
        per = (X[idx] @ beta - y[idx]) ** 2
        return per.mean(), float(per.detach().sum()), idx.numel()

    step_fn = OptimizerStep(opt, [beta], clip_norm)
    stats = run_epoch(order, batch_loss, step_fn, batch_size=4, min_batch=3)
    Xn, yn, b = X.numpy(), y.numpy(), np.zeros(3)
    ref_sum, ref_norms = 0.0, []
    for idx in (order[:4].numpy(), order[4:8].numpy()):  # the tail of 2 < min_batch is dropped
        r = Xn[idx] @ b - yn[idx]
        ref_sum += float((r**2).sum())
        grad = 2 * Xn[idx].T @ r / len(idx)
        norm = np.linalg.norm(grad)
        ref_norms.append(norm)
        scale = 1.0 if clip_norm is None else min(1.0, clip_norm / (norm + 1e-6))
        b = b - 0.1 * scale * grad
    np.testing.assert_allclose(beta.detach().numpy(), b, rtol=1e-12)
    assert stats.seen == 8
    assert stats.loss_sum == pytest.approx(ref_sum, rel=1e-12)
    np.testing.assert_allclose([float(g) for g in stats.grad_norms], ref_norms, rtol=1e-12)


def test_early_stopping_update_against_hand_trace():
    cfg = TrainConfig(patience=2)
    module = torch.nn.Linear(2, 1)
    state = {"epoch": 0, "best_loss": float("inf"), "best_epoch": -1, "bad_epochs": 0}
    # 1.0 best; 0.97 not better by min_delta; 0.9 best; 0.88, 0.89 two bad epochs -> stop
    trace = [(1.0, True, False), (0.97, False, False), (0.9, True, False), (0.88, False, False)]
    trace.append((0.89, False, True))
    for epoch, (monitor, is_best, stop_ref) in enumerate(trace):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        best, stop = early_stopping_update(state, monitor, epoch, cfg, module, min_delta=0.05)
        assert (best is not None) == is_best and stop == stop_ref, epoch
        if best is not None:
            assert torch.equal(best["weight"], torch.full((1, 2), float(epoch)))
            assert best["weight"].data_ptr() != module.weight.data_ptr()  # a copy
    assert state["best_epoch"] == 2 and state["best_loss"] == 0.9 and state["bad_epochs"] == 2


def test_a_stored_config_with_removed_fields_loads():
    """Model files and checkpoints written while some constants were still fields carry
    them (REMOVED_FIELDS; these are the values in models/pretrained.pt of that time):
    from_dict drops each at its constant and refuses another value or an unknown key."""
    cfg = TrainConfig(lr=2e-3, epochs=4, curriculum=True, spectrum_weight=0.01)
    old = {
        **cfg.to_dict(),
        "momentum": 0.9,
        "eta_min": 1e-05,
        "min_delta": 0.0,
        "spectrum_pool": 1024,
        "spectrum_batch": 32,
        "spectrum_max_mb": 256.0,
        "adversarial_epsilon": 0.01,
        "curriculum_start": 0.3,
        "curriculum_epochs": 10,
        "progressive_epochs": 10,
    }
    assert set(old) - set(cfg.to_dict()) == set(REMOVED_FIELDS)
    assert TrainConfig.from_dict(old) == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="momentum=0.5"):
        TrainConfig.from_dict({**old, "momentum": 0.5})
    with pytest.raises(ValueError, match=r"unknown keys \['lr_decay'\]"):
        TrainConfig.from_dict({**old, "lr_decay": 1.0})
    with pytest.raises(TypeError):
        TrainConfig(**old)


def test_config_diff_ignores_resumable_fields_and_epoch_order_is_seeded():
    old = TrainConfig(epochs=5, lr=1e-3).to_dict()
    assert config_diff(old, TrainConfig(epochs=50, patience=3, lr=1e-3)) == []
    assert config_diff(old, TrainConfig(epochs=5, lr=2e-3, seed=1)) == ["lr", "seed"]
    pool = torch.arange(10, 30)
    a, b = epoch_order(pool, 3, 0), epoch_order(pool, 3, 0)
    assert torch.equal(a, b) and torch.equal(a.sort().values, pool)
    assert not torch.equal(a, epoch_order(pool, 3, 1))


# ------------------------------------------------------------- PRIAL-normalised loss
@pytest.fixture(scope="module")
def synthetic_rows():
    from shrinklab.data.dataset import build_training_set

    return build_training_set(48, seed=11, config={"p_max": 30, "batch_size": 16}, progress=False)


def test_fsopt_gap_loss_is_one_minus_prial_from_the_matrices(synthetic_rows):
    """Trainer loss with ``loss_normaliser="fsopt_gap"`` = 1 − PRIAL/100 of each world,
    against a brute force on the rebuilt matrices (S, Σ, targets) at 1e-4 (float32)."""
    from shrinklab.core.metrics import frobenius_loss
    from shrinklab.core.targets import combine

    ts = synthetic_rows
    g = torch.Generator().manual_seed(0)
    w = torch.rand(len(ts), 5, generator=g, dtype=torch.float64)
    w = w / w.sum(1, keepdim=True) * torch.rand(len(ts), 1, generator=g, dtype=torch.float64)
    data = DeviceData(ts, torch.device("cpu"), False, normaliser="fsopt_gap", gap_floor=1e-6)
    got = quadratic_frobenius(w.float(), data.G, data.c, data.d, normalise=False, reduction="none")
    want = torch.empty(len(ts), dtype=torch.float64)
    for b in ts.rebuild_matrices():
        loss = frobenius_loss(combine(b.S, b.T, w[b.indices]), b.sigma)
        d, f = ts.d[b.indices].double(), ts.loss_fsopt[b.indices].double()
        want[b.indices] = (loss - f) / (d - f)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    # w = 0 is the sample covariance: PRIAL 0, loss 1
    zero = quadratic_frobenius(
        torch.zeros_like(w).float(), data.G, data.c, data.d, normalise=False, reduction="none"
    )
    torch.testing.assert_close(zero, torch.ones(len(ts)), rtol=0, atol=1e-6)


def test_sample_normaliser_is_the_normalised_frobenius_loss(synthetic_rows):
    ts = synthetic_rows
    w = torch.full((len(ts), 5), 0.15, dtype=torch.float64)
    data = DeviceData(ts, torch.device("cpu"), False)
    got = quadratic_frobenius(w.float(), data.G, data.c, data.d, normalise=False, reduction="none")
    want = quadratic_frobenius(w, ts.G, ts.c, ts.d, normalise=True, reduction="none")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_fsopt_gap_floor_and_bad_inputs():
    from shrinklab.training.objective import loss_normaliser

    d = torch.tensor([10.0, 10.0, 10.0], dtype=torch.float64)
    f = torch.tensor([4.0, 9.99, 10.0], dtype=torch.float64)
    nu, kappa = loss_normaliser(d, f, "fsopt_gap", floor=0.01)
    torch.testing.assert_close(nu, torch.tensor([6.0, 0.1, 0.1], dtype=torch.float64))
    torch.testing.assert_close(kappa, torch.tensor([6.0, 0.01, 0.0], dtype=torch.float64))
    nu, kappa = loss_normaliser(d, None, "sample")
    assert torch.equal(nu, d) and torch.equal(kappa, d)
    with pytest.raises(ValueError, match="loss_fsopt"):
        loss_normaliser(d, None, "fsopt_gap")
    with pytest.raises(ValueError, match="FSOPT beats S"):
        loss_normaliser(d, torch.tensor([11.0, 1.0, 1.0], dtype=torch.float64), "fsopt_gap")
    with pytest.raises(ValueError, match="loss_normaliser"):
        TrainConfig(loss_normaliser="prial")
    with pytest.raises(ValueError, match="gap_floor"):
        TrainConfig(gap_floor=0.0)
    with pytest.raises(ValueError, match="loss_fsopt"):
        DeviceData(make_set(8), torch.device("cpu"), False, normaliser="fsopt_gap")


# ------------------------------------------------ loss relative to the best classical
def test_sample_and_best_classical_loss_from_the_matrices(synthetic_rows):
    """``loss_normaliser="sample_and_best_classical"`` gives ``L/d + λ·L/L_best`` per world,
    against a brute force on the rebuilt matrices (each classical estimator's matrix
    ``combine(S, T, w_k)`` and its loss to Σ; the minimum over the five) at 1e-4."""
    from shrinklab.core.metrics import frobenius_loss
    from shrinklab.core.targets import combine
    from shrinklab.data.dataset import classical_intensities
    from shrinklab.training.objective import best_classical_loss

    ts, lam, floor = synthetic_rows, 0.3, 1e-6
    g = torch.Generator().manual_seed(1)
    w = torch.rand(len(ts), 5, generator=g, dtype=torch.float64)
    w = w / w.sum(1, keepdim=True) * torch.rand(len(ts), 1, generator=g, dtype=torch.float64)
    classical = classical_intensities(ts)
    want_best = torch.empty(len(ts), dtype=torch.float64)
    want = torch.empty(len(ts), dtype=torch.float64)
    for b in ts.rebuild_matrices():
        losses = [
            frobenius_loss(combine(b.S, b.T, cw[b.indices]), b.sigma) for cw in classical.values()
        ]
        best = torch.stack(losses, 1).amin(1)
        loss = frobenius_loss(combine(b.S, b.T, w[b.indices]), b.sigma)
        d = ts.d[b.indices].double()
        want_best[b.indices] = best
        want[b.indices] = loss / d + lam * loss / best
    torch.testing.assert_close(best_classical_loss(ts), want_best, rtol=1e-6, atol=0)
    data = DeviceData(
        ts,
        torch.device("cpu"),
        False,
        normaliser="sample_and_best_classical",
        gap_floor=floor,
        best_weight=lam,
    )
    got = quadratic_frobenius(w.float(), data.G, data.c, data.d, normalise=False, reduction="none")
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    # λ = 0 is the sample-normalised loss
    data0 = DeviceData(ts, torch.device("cpu"), False, normaliser="sample_and_best_classical")
    torch.testing.assert_close(data0.G, DeviceData(ts, torch.device("cpu"), False).G)


def test_best_classical_normaliser_floor_and_bad_inputs():
    from shrinklab.training.objective import loss_normaliser

    d = torch.tensor([10.0, 10.0], dtype=torch.float64)
    best = torch.tensor([5.0, 0.0], dtype=torch.float64)
    nu, kappa = loss_normaliser(d, None, "sample_and_best_classical", 0.01, best, 2.0)
    # 1/ν = 1/d + λ/max(L_best, floor·d): 0.1 + 2/5 and 0.1 + 2/0.1
    torch.testing.assert_close(nu, 1 / torch.tensor([0.5, 20.1], dtype=torch.float64))
    assert torch.equal(kappa, d)
    with pytest.raises(ValueError, match="best classical loss"):
        loss_normaliser(d, None, "sample_and_best_classical", 0.01, None, 1.0)
    with pytest.raises(ValueError, match="best_classical_weight"):
        TrainConfig(best_classical_weight=-1.0)
    with pytest.raises(ValueError, match="TrainingSet"):
        # a bare quadratic-form set has no classical intensities to take the best of
        DeviceData(make_set(8), torch.device("cpu"), False, normaliser="sample_and_best_classical")


# ------------------------------------------------ weight of the edge-case worlds
def test_edge_weight_scales_the_loss_of_edge_worlds_only():
    """``edge_weight`` multiplies the normalised Frobenius loss ``L/d`` of the near-singular
    and dominant-factor worlds and leaves the others alone: against a brute force on the
    rebuilt matrices (``combine(S, T, w)`` and its loss to Σ) at 1e-4 (float32)."""
    from shrinklab.core.metrics import frobenius_loss
    from shrinklab.core.targets import combine
    from shrinklab.data.dataset import build_training_set
    from shrinklab.training.objective import edge_family_mask

    cfg = {"p_max": 24, "batch_size": 8, "edge_prob": 0.5}
    ts = build_training_set(48, seed=5, config=cfg, progress=False)
    edge = np.isin(ts.families, ["near_singular", "dominant_factor"])
    assert 0 < edge.sum() < len(ts)  # both kinds present, else the test proves nothing
    assert np.array_equal(edge_family_mask(ts).numpy(), edge)
    g = torch.Generator().manual_seed(2)
    w = torch.rand(len(ts), 5, generator=g, dtype=torch.float64)
    w = w / w.sum(1, keepdim=True) * torch.rand(len(ts), 1, generator=g, dtype=torch.float64)
    weight = 0.25
    want = torch.empty(len(ts), dtype=torch.float64)
    for b in ts.rebuild_matrices():
        loss = frobenius_loss(combine(b.S, b.T, w[b.indices]), b.sigma)
        scale = torch.where(torch.as_tensor(edge[b.indices]), weight, 1.0).double()
        want[b.indices] = scale * loss / ts.d[b.indices].double()
    data = DeviceData(ts, torch.device("cpu"), False, edge_weight=weight)
    got = quadratic_frobenius(w.float(), data.G, data.c, data.d, normalise=False, reduction="none")
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_edge_weight_bad_inputs():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="edge_weight"):
            TrainConfig(edge_weight=bad)
    with pytest.raises(ValueError, match="world families"):
        # a bare quadratic-form set has no families to weigh
        DeviceData(make_set(8), torch.device("cpu"), False, edge_weight=0.5)
    # weight 1 needs no families
    DeviceData(make_set(8), torch.device("cpu"), False, edge_weight=1.0)
