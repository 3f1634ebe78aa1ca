"""Training of the learned peer (:class:`shrinklab.models.rie_network.RIENetwork`) on
the realised variance of its GMV portfolio, as Bongiorno, Manolakis & Mantegna
(2025, arXiv:2507.01918) train RIEnet end to end.

Data: real returns strictly before :data:`shrinklab.data.returns.TEST_START` (the
test period is cut off first, so no later day can enter). Rebalance dates every
``step`` days, estimation windows of every length in ``windows`` (one network for
all), a holding period of ``horizon`` days after each date
(:func:`shrinklab.data.real_windows.build_windows`). Windows whose holding period
ends before ``val_start`` are the training set, each date with the full universe
and ``asset_subsets`` random asset subsets (several universes per date, as the
paper trains across universe sizes); dates from ``val_start`` on, full universe
only, are the validation block used for early stopping.

Loss: the mean over windows of ``252 · mean_s (wᵀr_s)²``, the annualised realised
second moment of the GMV portfolio's daily returns over the holding period
(the paper's ``wᵀΣ_realised w``). An epoch is one pass over the groups of windows
that share ``(window, p)``, in a random order, one Adam step (with gradient
clipping) per group; the state with the lowest validation loss is kept (patience
``patience`` epochs).
Deterministic on CPU for a given ``seed``.

Logging: a ``logger`` (:class:`shrinklab.training.monitor.RunLogger`) receives per
epoch the training and validation loss, the learning rate and the mean and largest
gradient norm before clipping (values the loop computes anyway: the trained model is
the same with or without it).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.estimators import ledoit_wolf
from shrinklab.core.progress import report
from shrinklab.data.real_windows import WindowBatch, build_windows, portfolio_returns
from shrinklab.data.returns import TEST_START, before_test
from shrinklab.models.rie_network import RIENetwork

__all__ = [
    "PeerConfig",
    "PeerResult",
    "peer_config",
    "realised_loss",
    "train_rie_network",
    "window_sets",
]


PERIODS_PER_YEAR = 252


@dataclass
class PeerConfig:
    """Settings of :func:`train_rie_network` (module docstring)."""

    seed: int = 0
    windows: tuple[int, ...] = (60, 120, 250)
    horizon: int = 21
    step: int = 21
    asset_subsets: int = 3
    min_assets: int = 5
    val_start: str = "2013-01-01"
    epochs: int = 30
    patience: int = 8
    lr: float = 0.003
    clip_norm: float = 1.0
    hidden: int = 16
    vol_hidden: int = 8


def peer_config(section: Any, seed: int | None = None) -> PeerConfig:
    """The :class:`PeerConfig` of a ``peer`` params section
    (:class:`shrinklab.core.params.peer.Peer`): every field the section sets (lists as
    tuples), the config's defaults for the rest (the network's sizes, ``min_assets``,
    ``clip_norm``); ``seed`` replaces the section's seed when given."""
    names = {f.name for f in dataclasses.fields(PeerConfig)}
    values = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in dataclasses.asdict(section).items()
        if k in names
    }
    if seed is not None:
        values["seed"] = int(seed)
    return PeerConfig(**values)


@dataclass
class PeerResult:
    """``model`` (best validation state), ``history`` (epoch, train_loss, valid_loss),
    ``validation`` (per window: annualised GMV vol of the peer and of Ledoit–Wolf on
    the validation block), ``best_epoch``, ``seconds``, ``n_train``, ``n_valid``."""

    model: RIENetwork
    history: pd.DataFrame
    validation: pd.DataFrame
    best_epoch: int
    seconds: float
    n_train: int
    n_valid: int


def realised_loss(weights: torch.Tensor, realised: torch.Tensor) -> torch.Tensor:
    """Annualised realised second moment ``(B,)`` of portfolios ``weights (B, p)`` held
    over ``realised (B, h, p)``."""
    return PERIODS_PER_YEAR * portfolio_returns(weights, realised).square().mean(-1)


def window_sets(
    returns: pd.DataFrame, config: PeerConfig
) -> tuple[list[WindowBatch], list[WindowBatch]]:
    """Training and validation groups (module docstring); every window before 2016."""
    pre = before_test(returns)
    if len(pre) < max(config.windows) + 2 * config.horizon:
        raise ValueError(f"only {len(pre)} days before {TEST_START.date()}: too few")
    val_start = pd.Timestamp(config.val_start)
    last_train = pre.index[pre.index < val_start]
    if len(last_train) == 0:
        raise ValueError(f"no training day before val_start {val_start.date()}")
    train: list[WindowBatch] = []
    valid: list[WindowBatch] = []
    for i, window in enumerate(config.windows):
        common = {"window": int(window), "horizon": config.horizon, "step": config.step}
        tr = build_windows(
            pre,
            end=last_train[-1],
            asset_subsets=config.asset_subsets,
            min_assets=config.min_assets,
            seed=config.seed + i,
            features=False,
            **common,
        )
        va = build_windows(pre, start=val_start, features=False, **common)
        train += list(tr)
        valid.append(va.full)
    return train, valid


def _mean_loss(model: RIENetwork, groups: list[WindowBatch]) -> torch.Tensor:
    total = sum(realised_loss(model(g.X).weights, g.realised).sum() for g in groups)
    return total / sum(len(g) for g in groups)


def _lw_loss(g: WindowBatch) -> torch.Tensor:
    cov = ledoit_wolf(g.X)
    x = torch.linalg.solve(cov, torch.ones(cov.shape[:-1], dtype=cov.dtype).unsqueeze(-1))
    w = x.squeeze(-1) / x.sum((-1, -2))[:, None]
    return realised_loss(w, g.realised)


def _log_epoch(logger: Any, row: dict, lr: float, grad_norms: list[float]) -> None:
    """One epoch (``row`` of the history) to ``logger``; NaN values are skipped there."""
    logger.log_metric("train/loss", row["train_loss"])
    logger.log_metric("valid/loss", row["valid_loss"])
    logger.log_metric("lr", lr)
    if grad_norms:
        logger.log_metric("grad_norm/mean", float(np.mean(grad_norms)))
        logger.log_metric("grad_norm/max", float(np.max(grad_norms)))
    logger.next_step()


def train_rie_network(
    returns: pd.DataFrame, config: PeerConfig | None = None, logger: Any = None
) -> PeerResult:
    """Train a :class:`RIENetwork` on pre-2016 windows of ``returns`` (module docstring);
    ``logger`` (e.g. ``RunLogger("peer", reports)``) receives one step per epoch, the
    untrained model's validation loss at step 0."""
    config = config or PeerConfig()
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    train, valid = window_sets(returns, config)
    n_train = sum(len(g) for g in train)
    model = RIENetwork(hidden=config.hidden, vol_hidden=config.vol_hidden)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    with torch.no_grad():
        best = float(_mean_loss(model, valid))
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best_epoch, rows = 0, [{"epoch": 0, "train_loss": np.nan, "valid_loss": best}]
    if logger is not None:
        _log_epoch(logger, rows[0], config.lr, [])
    rng = np.random.default_rng(config.seed)
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, grad_norms = 0.0, []
        for i in rng.permutation(len(train)):
            opt.zero_grad()
            loss = realised_loss(model(train[i].X).weights, train[i].realised).mean()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            opt.step()
            total += loss.item() * len(train[i])
            grad_norms.append(float(norm))
        model.eval()
        with torch.no_grad():
            val = float(_mean_loss(model, valid))
        rows.append({"epoch": epoch, "train_loss": total / n_train, "valid_loss": val})
        if logger is not None:
            _log_epoch(logger, rows[-1], opt.param_groups[0]["lr"], grad_norms)
        if val < best:
            best, best_epoch = val, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
        report(f"peer: epoch {epoch}, train {total / n_train:.5f}, valid {val:.5f}")
    model.load_state_dict(best_state)
    model.eval()
    vrows = []
    with torch.no_grad():
        for g in valid:
            peer = realised_loss(model(g.X).weights, g.realised).mean()
            lw = _lw_loss(g).mean()
            vrows.append(
                {
                    "window": g.window,
                    "n_windows": len(g),
                    "peer_vol": float(torch.sqrt(peer)),
                    "ledoit_wolf_vol": float(torch.sqrt(lw)),
                }
            )
    model.extra = {"config": asdict(config) | {"windows": list(config.windows)}}
    return PeerResult(
        model=model,
        history=pd.DataFrame(rows),
        validation=pd.DataFrame(vrows),
        best_epoch=best_epoch,
        seconds=time.perf_counter() - t0,
        n_train=n_train,
        n_valid=sum(len(g) for g in valid),
    )
