"""The optimisation pass shared by every trainer of :mod:`shrinklab.training`
(:func:`run_epoch` with :class:`OptimizerStep`: :func:`shrinklab.training.loop.train`,
:func:`shrinklab.training.finetune.finetune_on_real`,
:func:`shrinklab.training.compression.fine_tune`) and its parts: the optimiser, the
learning-rate schedule, the seeded epoch order and early stopping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrinklab.training.config import ETA_MIN, MIN_DELTA, SGD_MOMENTUM, TrainConfig

__all__ = [
    "BatchLoss",
    "EpochStats",
    "OptimizerStep",
    "early_stopping_update",
    "epoch_order",
    "make_optimizer",
    "make_scheduler",
    "run_epoch",
]


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam [Kingma & Ba, ICLR 2015] or SGD with momentum :data:`SGD_MOMENTUM` (the baseline),
    with ``cfg.lr`` and ``cfg.weight_decay``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=SGD_MOMENTUM, weight_decay=cfg.weight_decay, foreach=True
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.CosineAnnealingWarmRestarts:
    """Cosine annealing with warm restarts [Loshchilov & Hutter, "SGDR", ICLR 2017]
    (``cfg.T_0``, ``cfg.T_mult``, floor :data:`ETA_MIN`), stepped once per epoch."""
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.T_0, T_mult=cfg.T_mult, eta_min=ETA_MIN
    )


def epoch_order(pool: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """``pool`` in the seeded random order of ``epoch`` (a CPU generator seeded with
    ``seed · 1000003 + epoch``: the same order on every rank, device and resumption)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return pool[torch.randperm(pool.numel(), generator=gen)]


@dataclass
class OptimizerStep:
    """One optimisation step: backpropagate a loss (through the fp16 loss ``scaler`` if
    given), clip the gradient norm of ``params`` to ``clip_norm`` [Pascanu, Mikolov &
    Bengio, ICML 2013; ``None``: no clipping] and step ``optimizer``. Calling it returns
    the gradient norm before clipping."""

    optimizer: torch.optim.Optimizer
    params: Sequence[torch.Tensor]
    clip_norm: float | None = None
    scaler: torch.amp.GradScaler | None = None

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        gn = nn.utils.clip_grad_norm_(self.params, self.clip_norm or math.inf, foreach=True)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return gn.detach()


@dataclass
class EpochStats:
    """What :func:`run_epoch` returns: the sum of the reported per-batch losses (a float,
    or a tensor if the batch loss reports tensors), the number of samples they cover
    and the gradient norm of every step."""

    loss_sum: Any
    seen: int
    grad_norms: list[torch.Tensor]


BatchLoss = Callable[[int, torch.Tensor], tuple[torch.Tensor, Any, int]]


"""``batch_loss(step, idx) -> (loss, reported loss summed over the batch, count)``."""


def run_epoch(
    order: torch.Tensor,
    batch_loss: BatchLoss,
    step_fn: OptimizerStep,
    *,
    batch_size: int,
    min_batch: int = 2,
) -> EpochStats:
    """One optimisation pass: the shared inner loop of :func:`train`,
    :func:`shrinklab.training.finetune.finetune_on_real` and :func:`shrinklab.training.compression.fine_tune`.

    ``order`` (sample indices) is cut into consecutive batches of ``batch_size``; the
    pass stops at a batch smaller than ``min_batch`` (batch normalisation needs two
    samples per process). For each batch, ``batch_loss(step, idx)`` runs the forward
    pass and returns ``(loss to minimise, reported loss summed over the batch, number
    of samples it covers)``; then ``step_fn(loss)`` (an :class:`OptimizerStep`). The caller sets train mode
    and steps its scheduler."""
    total: Any = 0.0
    seen = 0
    norms: list[torch.Tensor] = []
    for step, start in enumerate(range(0, order.numel(), batch_size)):
        idx = order[start : start + batch_size]
        if idx.numel() < min_batch:
            break
        step_fn.optimizer.zero_grad(set_to_none=True)
        loss, reported, count = batch_loss(step, idx)
        norms.append(step_fn(loss))
        total = total + reported
        seen += count
    return EpochStats(total, seen, norms)


def early_stopping_update(
    state: dict[str, Any],
    monitor: float,
    epoch: int,
    cfg: TrainConfig,
    module: nn.Module,
    min_delta: float = MIN_DELTA,
) -> tuple[dict[str, torch.Tensor] | None, bool]:
    """Early stopping on ``monitor`` (lower is better): a new best must beat the best by
    more than ``min_delta``; stop after ``cfg.patience`` epochs without one. Updates ``state`` (``best_loss``, ``best_epoch``, ``bad_epochs``) in
    place; returns (a CPU copy of ``module``'s weights if this epoch is the new best,
    else ``None``; whether to stop)."""
    if monitor < state["best_loss"] - min_delta:
        state.update(best_loss=monitor, best_epoch=epoch, bad_epochs=0)
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}, False
    state["bad_epochs"] += 1
    return None, state["bad_epochs"] >= cfg.patience
