"""Trainer for shrinkage models (the training-process specification: loss function,
optimization, acceleration, monitoring).

:func:`train` fits a model (default :class:`shrinklab.models.network.MLShrinkageNetwork`)
on a :class:`shrinklab.data.dataset.TrainingSet` (or any object with the same fields:
``features (N,F)``, ``oracle_w (N,K)``, ``G (N,K,K)``, ``c (N,K)``, ``d (N,)``, and
for the schedules ``difficulty (N,)`` and ``p (N,)``).

Objective per sample ``i`` (the specification's composite loss with the matrix term
taken on the O(K²) quadratic-form path, so any p, mixed in one batch, costs the same):

    α · mean_k (ŵ_ik − w*_ik)²  +  β · (ŵᵀGŵ − 2cᵀŵ + d) / d  +  ν · NLL(log_var, ‖ŵ − w*‖²)

plus ``l2 · Σ‖W‖²``, the optional smoothness and adversarial penalties of
:mod:`shrinklab.training.losses`, and optionally the specification's spectrum term ``γ · ‖λ(Σ̂) − λ(Σ)‖² /
‖λ(S) − λ(Σ)‖²`` on a cached pool of rebuilt matrices (``TrainConfig.spectrum_weight``;
off by default because it is the only term that needs the p × p matrices).

Optimisation: Adam (or SGD with momentum 0.9, the baseline) with cosine annealing
with warm restarts [Loshchilov & Hutter, "SGDR", ICLR 2017] stepped once per epoch,
gradient-norm clipping [Pascanu, Mikolov & Bengio, ICML 2013], early stopping that
restores the best weights, curriculum learning [Bengio et al., ICML 2009] (easiest
samples first by ``difficulty``, widening the pool each epoch) and progressive
sizing (small p first), mixed precision (bf16/fp16 autocast, CUDA only).

Efficiency: the whole training set lives on the device as a few tensors and batches
are index slices of a seeded permutation (no DataLoader, no per-batch host copies).

Fault tolerance: after every epoch ``out_dir/checkpoint.pt`` holds the model,
optimiser, scheduler, grad scaler, RNG states (torch, CUDA, numpy, python),
epoch, best weights, early-stopping state and history (written atomically);
``train(..., resume=True)`` continues from it and — on CPU — ends bit-identical to an
uninterrupted run. Nothing is written outside ``out_dir``.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) or an initialised process group,
the model is wrapped in DistributedDataParallel (NCCL on CUDA, gloo on CPU); every
rank draws the same permutation and takes a strided shard of each global batch; the
per-rank loss is scaled so that DDP's gradient average equals the gradient of the
global-batch mean, and batch norm statistics are synchronised across ranks
(:class:`shrinklab.models.network.SyncableBatchNorm1d`), so a run on R processes follows
the single-process run on the same global batches (up to float reduction order).

Reuse: the optimisation pass :func:`run_epoch` (with :class:`OptimizerStep`) takes a
pluggable per-batch loss and is the one inner loop of this trainer,
:func:`shrinklab.training.finetune.finetune_on_real` (realised-variance loss) and
:func:`shrinklab.training.compression.fine_tune` (pruning fine-tuning, distillation); the optimiser,
scheduler, epoch order, early stopping, checkpoint and RNG helpers are public too.

Logging: a ``dvclive.Live`` passed as ``logger`` receives per-epoch train/valid losses,
learning rate, gradient-norm statistics and the mean/std of predicted intensities
(``live.next_step()`` once per epoch); a tqdm bar that is silent when stderr is not a
TTY or ``CI``/``PAPERMILL`` is set.

Over 600 lines on purpose: the training loop is one resumable state machine (epochs,
validation, early stopping, checkpoints, DDP); its configuration, objective, device
and checkpoint helpers live beside it in :mod:`shrinklab.training`.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.core.progress import every, report
from shrinklab.core.targets import combine
from shrinklab.models.network import output_priors
from shrinklab.training import losses as L
from shrinklab.training.checkpoints import (
    checkpoint_path,
    restore_training_state,
    set_rng_state,
    training_state,
    write_checkpoint,
)
from shrinklab.training.config import TrainConfig, config_diff
from shrinklab.training.device import (
    autocast,
    dist_setup,
    resolve_amp_dtype,
    resolve_device,
    set_bn_sync,
)
from shrinklab.training.objective import (
    best_classical_loss,
    edge_family_mask,
    loss_normaliser,
    tensor_field,
)

__all__ = [
    "BatchLoss",
    "EpochStats",
    "early_stopping_update",
    "epoch_order",
    "evaluate_loss",
    "make_optimizer",
    "make_scheduler",
    "OptimizerStep",
    "progress_disabled",
    "run_epoch",
    "train",
]


# ----------------------------------------------------------------------- helpers
def progress_disabled() -> bool:
    """True when progress bars should stay quiet: not a TTY, or CI / papermill."""
    if (
        os.environ.get("CI")
        or os.environ.get("PAPERMILL")
        or os.environ.get("PAPERMILL_INPUT_PATH")
    ):
        return True
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):
        return True


class _DeviceData:
    """The fields the trainer needs, as device tensors (G, c pre-divided by the
    normaliser ν of :func:`loss_normaliser`, ``d`` holding κ/ν)."""

    def __init__(
        self,
        ds: Any,
        device: torch.device,
        need_schedule: bool,
        normaliser: str = "sample",
        gap_floor: float = 0.01,
        best_weight: float = 0.0,
        edge_weight: float = 1.0,
    ) -> None:
        feats = tensor_field(ds, "features")
        w = tensor_field(ds, "oracle_w")
        G, c, d = tensor_field(ds, "G"), tensor_field(ds, "c"), tensor_field(ds, "d")
        n = feats.shape[0]
        if feats.ndim != 2 or w.ndim != 2 or w.shape[0] != n:
            raise ValueError(
                f"features (N,F) and oracle_w (N,K) expected, got {tuple(feats.shape)}, "
                f"{tuple(w.shape)}"
            )
        k = w.shape[1]
        if G.shape != (n, k, k) or c.shape != (n, k) or d.shape != (n,):
            raise ValueError(
                f"G (N,K,K), c (N,K), d (N,) expected for N={n}, K={k}; got "
                f"{tuple(G.shape)}, {tuple(c.shape)}, {tuple(d.shape)}"
            )
        for name, t in (("features", feats), ("oracle_w", w), ("G", G), ("c", c), ("d", d)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"training set field {name!r} contains NaN or inf")
        d64 = d.double()
        if bool((d64 <= 0).any()):
            raise ValueError(
                f"{int((d64 <= 0).sum())} samples have d = ‖S − Σ‖² <= 0; the normalised "
                "loss is undefined for them (drop them)"
            )
        fsopt = tensor_field(ds, "loss_fsopt", required=normaliser == "fsopt_gap")
        best = best_classical_loss(ds) if normaliser == "sample_and_best_classical" else None
        nu, kappa = loss_normaliser(d64, fsopt, normaliser, gap_floor, best, best_weight)
        if edge_weight != 1.0:
            nu = torch.where(edge_family_mask(ds), nu / edge_weight, nu)
        self.n, self.k = n, k
        self.x = feats.to(device=device, dtype=torch.float32)
        self.w = w.to(device=device, dtype=torch.float32)
        G_n, c_n = G.double() / nu[:, None, None], c.double() / nu[:, None]
        bad = ~(torch.isfinite(G_n).all((1, 2)) & (G_n.abs().amax((1, 2)) < 1e30))
        if bool(bad.any()):
            raise ValueError(f"{int(bad.sum())} samples have G / d outside the float32 range")
        self.G = G_n.to(device=device, dtype=torch.float32)
        self.c = c_n.to(device=device, dtype=torch.float32)
        self.d = (kappa / nu).to(device=device, dtype=torch.float32)
        self.fingerprint = [int(n), int(k), float(d.double().sum()), float(feats.double().sum())]
        self.difficulty = tensor_field(ds, "difficulty", required=need_schedule)
        self.p = tensor_field(ds, "p", required=need_schedule)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.x[idx], self.w[idx], self.G[idx], self.c[idx], self.d[idx]


def _per_sample_loss(
    out: Any, w_true: torch.Tensor, G: torch.Tensor, c: torch.Tensor, d: torch.Tensor, cfg
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(objective, normalised Frobenius loss, intensity MSE) per sample, float32."""
    w = out.intensities.float()
    mse = (w - w_true).square().mean(1)
    frob = L.quadratic_frobenius(w, G, c, d, normalise=False, reduction="none")
    nll = L.gaussian_nll(out.log_var.float(), mse.detach() * w.shape[1], reduction="none")
    obj = cfg.intensity_weight * mse + cfg.matrix_weight * frob + cfg.uncertainty_weight * nll
    return obj, frob, mse


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    data: Any,
    config: TrainConfig | None = None,
    chunk: int = 16384,
) -> dict[str, float]:
    """Eval-mode objective (without regularisers) on a whole set: ``loss``, mean
    normalised Frobenius loss ``frobenius``, ``intensity_mse``, ``alpha_mean`` and
    ``alpha_std`` of the predicted intensity. ``data`` is a training-set-like object
    or the trainer's device data."""
    cfg = config or TrainConfig()
    module = model.module if hasattr(model, "module") else model
    if not isinstance(data, _DeviceData):
        data = _DeviceData(
            data,
            next(module.parameters()).device,
            need_schedule=False,
            normaliser=cfg.loss_normaliser,
            gap_floor=cfg.gap_floor,
            best_weight=cfg.best_classical_weight,
            edge_weight=cfg.edge_weight,
        )
    return _evaluate(module, data, cfg, chunk, torch.arange(data.n, device=data.x.device))


@torch.no_grad()
def _evaluate(
    module: nn.Module, data: _DeviceData, cfg: TrainConfig, chunk: int, idx: torch.Tensor
) -> dict[str, float]:
    was_training = module.training
    module.eval()
    sums = torch.zeros(6, dtype=torch.float64, device=data.x.device)
    try:
        for s in range(0, idx.numel(), chunk):
            x, w, G, c, d = data.batch(idx[s : s + chunk])
            out = module(x)
            obj, frob, mse = _per_sample_loss(out, w, G, c, d, cfg)
            a = out.alpha.double()
            sums += torch.stack(
                [
                    obj.double().sum(),
                    frob.double().sum(),
                    mse.double().sum(),
                    a.sum(),
                    a.square().sum(),
                    torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device),
                ]
            )
    finally:
        module.train(was_training)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    n = max(float(sums[5]), 1.0)
    mean_a = float(sums[3]) / n
    return {
        "loss": float(sums[0]) / n,
        "frobenius": float(sums[1]) / n,
        "intensity_mse": float(sums[2]) / n,
        "alpha_mean": mean_a,
        "alpha_std": math.sqrt(max(float(sums[4]) / n - mean_a * mean_a, 0.0)),
    }


def _pool(data: _DeviceData, cfg: TrainConfig, epoch: int) -> torch.Tensor:
    """Indices (CPU, long) available in ``epoch`` under curriculum / progressive sizing."""
    n = data.n
    keep = torch.ones(n, dtype=torch.bool)
    if cfg.curriculum:
        diff = data.difficulty.double().cpu()
        frac = min(
            1.0, cfg.curriculum_start + (1 - cfg.curriculum_start) * epoch / cfg.curriculum_epochs
        )
        m = max(1, math.ceil(frac * n))
        order = torch.argsort(diff, stable=True)
        cur = torch.zeros(n, dtype=torch.bool)
        cur[order[:m]] = True
        keep &= cur
    if cfg.progressive:
        p = data.p.long().cpu()
        sizes = torch.unique(p)  # sorted
        stage = min(len(sizes) - 1, (epoch * len(sizes)) // cfg.progressive_epochs)
        prog = p <= sizes[stage]
        keep = keep & prog if bool((keep & prog).any()) else prog
    return torch.nonzero(keep).squeeze(1)


class _SpectrumCache:
    """Matrices of a fixed random subset of the training set, for the spectrum term.

    Buckets of equal ``p`` (from ``train_set.rebuild_matrices``) kept on the device in
    float64 with the true eigenvalues and the sample covariance's spectrum loss
    (the normaliser) precomputed."""

    def __init__(self, ds: Any, data: _DeviceData, cfg: TrainConfig, device: torch.device):
        if not hasattr(ds, "rebuild_matrices"):
            raise ValueError("spectrum_weight > 0 needs train_set.rebuild_matrices(indices)")
        p = torch.as_tensor(np.asarray(ds.p) if not torch.is_tensor(ds.p) else ds.p).long()
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + 13)
        order = torch.randperm(data.n, generator=gen).tolist()
        budget = cfg.spectrum_max_mb * 2**20
        chosen, used = [], 0.0
        for i in order:
            if len(chosen) >= cfg.spectrum_pool:
                break
            size = (data.k + 3) * float(p[i]) ** 2 * 8
            if used + size <= budget:
                chosen.append(i)
                used += size
        if not chosen:
            raise ValueError("spectrum_max_mb is too small for a single sample's matrices")
        self.seed = cfg.seed
        self.batch = cfg.spectrum_batch
        self.buckets = []
        for b in ds.rebuild_matrices(torch.tensor(sorted(chosen))):
            S = b.S.to(device=device, dtype=torch.float64)
            sigma = b.sigma.to(device=device, dtype=torch.float64)
            lam = torch.linalg.eigvalsh(sigma)
            denom = (torch.linalg.eigvalsh(S) - lam).square().sum(-1).clamp_min(1e-300)
            T = b.T.to(device=device, dtype=torch.float64)
            idx = torch.as_tensor(b.indices).long().to(device)
            self.buckets.append((idx, S, T, lam, denom))
        self.sizes = torch.tensor([float(b[0].numel()) for b in self.buckets], dtype=torch.float64)

    def draw(self, epoch: int, step: int) -> tuple[int, torch.Tensor]:
        """(bucket, rows) for one step: deterministic in (seed, epoch, step)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 100_003 + step + 17)
        b = int(torch.multinomial(self.sizes, 1, generator=g))
        n = int(self.sizes[b])
        return b, torch.randperm(n, generator=g)[: min(self.batch, n)]

    @torch.no_grad()
    def mean_loss(self, module: nn.Module, data: _DeviceData) -> float:
        """Mean normalised spectrum loss of ``module``'s eval-mode predictions over the
        whole cache."""
        was_training = module.training
        module.eval()
        try:
            total, count = 0.0, 0
            for b, (idx, *_rest) in enumerate(self.buckets):
                w = module(data.x[idx]).intensities.float()
                total += float(self.loss(w, b, torch.arange(idx.numel())).sum())
                count += idx.numel()
        finally:
            module.train(was_training)
        return total / max(count, 1)

    def features_index(self, b: int, rows: torch.Tensor) -> torch.Tensor:
        return self.buckets[b][0][rows.to(self.buckets[b][0].device)]

    def loss(self, w: torch.Tensor, b: int, rows: torch.Tensor) -> torch.Tensor:
        """Per-sample normalised spectrum loss ``‖λ(Σ̂(w)) − λ(Σ)‖² / ‖λ(S) − λ(Σ)‖²``."""
        _, S, T, lam, denom = self.buckets[b]
        r = rows.to(S.device)
        est = combine(S[r], T[r], w.double())
        return (torch.linalg.eigvalsh(est) - lam[r]).square().sum(-1) / denom[r]


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam [Kingma & Ba, ICLR 2015] or SGD with momentum ``cfg.momentum`` (the baseline),
    with ``cfg.lr`` and ``cfg.weight_decay``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.CosineAnnealingWarmRestarts:
    """Cosine annealing with warm restarts [Loshchilov & Hutter, "SGDR", ICLR 2017]
    (``cfg.T_0``, ``cfg.T_mult``, ``cfg.eta_min``), stepped once per epoch."""
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.T_0, T_mult=cfg.T_mult, eta_min=cfg.eta_min
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
    state: dict[str, Any], monitor: float, epoch: int, cfg: TrainConfig, module: nn.Module
) -> tuple[dict[str, torch.Tensor] | None, bool]:
    """Early stopping on ``monitor`` (lower is better) with ``cfg.min_delta`` and
    ``cfg.patience``. Updates ``state`` (``best_loss``, ``best_epoch``, ``bad_epochs``) in
    place; returns (a CPU copy of ``module``'s weights if this epoch is the new best,
    else ``None``; whether to stop)."""
    if monitor < state["best_loss"] - cfg.min_delta:
        state.update(best_loss=monitor, best_epoch=epoch, bad_epochs=0)
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}, False
    state["bad_epochs"] += 1
    return None, state["bad_epochs"] >= cfg.patience


def _synthetic_batch_loss(
    net: nn.Module,
    module: nn.Module,
    data: _DeviceData,
    spectrum: _SpectrumCache | None,
    cfg: TrainConfig,
    where: tuple[torch.device, torch.dtype | None],
    ranks: tuple[int, int],
    epoch: int,
    acc: dict[str, Any],
) -> BatchLoss:
    """:func:`run_epoch`'s ``batch_loss`` for :func:`train`: the composite objective of a
    global batch's shard on this rank (forward through ``net``, DDP or not), plus the
    regularisers and the spectrum term (whose sum and count go to ``acc``)."""
    device, amp_dtype = where
    rank, world = ranks

    def batch_loss(step: int, gidx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        gsize = gidx.numel()
        idx = gidx[rank::world]
        x, w, G, c, d = data.batch(idx)
        if spectrum is not None:
            sb, srows = spectrum.draw(epoch, step)
            srows_local = srows[rank::world]
            x = torch.cat([x, data.x[spectrum.features_index(sb, srows_local)]])
        with autocast(device, amp_dtype):
            out_all = net(x)
        if spectrum is not None:
            nb = idx.numel()
            out_b = type(out_all)(*(t[:nb] for t in out_all))
            w_spec = out_all.intensities[nb:].float()
            spec = spectrum.loss(w_spec, sb, srows_local)
            x = x[:nb]
        else:
            out_b = out_all
        obj, _, _ = _per_sample_loss(out_b, w, G, c, d, cfg)
        # DDP averages gradients over ranks: scale so the result is the global mean
        loss = obj.sum() * (world / gsize)
        if spectrum is not None:
            loss = loss + cfg.spectrum_weight * spec.sum().float() * (world / srows.numel())
            acc["sum"] += spec.detach().sum()
            acc["seen"] += spec.numel()
        if cfg.l2:
            loss = loss + L.l2_penalty(module, cfg.l2)
        if cfg.smoothness_weight:
            loss = loss + cfg.smoothness_weight * L.smoothness_penalty(x, out_b.intensities)
        if cfg.adversarial_weight:
            loss = loss + cfg.adversarial_weight * L.adversarial_penalty(
                module, x, epsilon=cfg.adversarial_epsilon, method="fgsm"
            )
        return loss, obj.detach().double().sum(), idx.numel()

    return batch_loss


# --------------------------------------------------------------------------- train
def train(
    model: nn.Module,
    train_set: Any,
    valid_set: Any = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    logger: Any = None,
    max_epochs_per_call: int | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place and return the history.

    Parameters
    ----------
    model : a module mapping features ``(B, F)`` to an output with ``intensities``,
        ``alpha`` and ``log_var`` (e.g. :class:`~shrinklab.models.network.MLShrinkageNetwork`).
    train_set, valid_set : training-set-like objects (``valid_set=None``: early stopping
        monitors the training loss).
    config : :class:`TrainConfig`.
    out_dir : folder for ``checkpoint.pt`` and ``history.json`` (required; never the cwd).
    resume : continue from ``out_dir/checkpoint.pt`` if it exists (its config must
        agree except ``epochs``/``device``/``patience``/``min_delta``).
    logger : a ``dvclive.Live`` (or anything with ``log_metric`` and ``next_step``); a
        resumed run first replays the restored epochs to it (pass a fresh logger).
    max_epochs_per_call : stop after this many epochs in this call (time-sliced or
        preemptible jobs); a later call with ``resume=True`` continues.
    on_epoch_end : ``f(epoch, record)`` called after each epoch's checkpoint is written.

    Returns
    -------
    dict with per-epoch lists ``epoch, train_loss, train_spectrum, valid_loss,
    valid_spectrum, valid_frobenius, valid_intensity_mse, lr, grad_norm_mean,
    grad_norm_max, alpha_mean, alpha_std, pool_size, seconds`` (the spectrum entries
    are ``None`` without the spectrum term; ``valid_*`` are on the training set when
    ``valid_set`` is ``None``) and ``best_epoch``, ``best_valid_loss``, ``stopped_early``,
    ``finished``, ``world_size``. At the end of a finished run the model holds the best
    weights (early stopping) and is in eval mode.
    """
    cfg = config or TrainConfig()
    if out_dir is None:
        raise ValueError("out_dir is required (checkpoints are never written to the cwd)")
    out = Path(out_dir)
    with _placement(model, cfg) as (device, rank, world):
        import torch.distributed as dist

        out.mkdir(parents=True, exist_ok=True)
        need_schedule = cfg.curriculum or cfg.progressive
        norm = {
            "normaliser": cfg.loss_normaliser,
            "gap_floor": cfg.gap_floor,
            "best_weight": cfg.best_classical_weight,
            "edge_weight": cfg.edge_weight,
        }
        data = _DeviceData(train_set, device, need_schedule, **norm)
        if cfg.curriculum and data.difficulty is None:
            raise ValueError("curriculum=True needs train_set.difficulty")
        vdata = _DeviceData(valid_set, device, False, **norm) if valid_set is not None else None
        spectrum = _SpectrumCache(train_set, data, cfg, device) if cfg.spectrum_weight else None
        vspectrum = None
        if spectrum is not None and vdata is not None and hasattr(valid_set, "rebuild_matrices"):
            vspectrum = _SpectrumCache(valid_set, vdata, cfg, device)
        elif spectrum is not None and vdata is None:
            vspectrum = spectrum  # monitoring the training set: use its pool
        if getattr(model, "num_targets", data.k) != data.k:
            raise ValueError(
                f"model predicts {model.num_targets} targets but the training set has {data.k}"
            )
        model.to(device)
        module = model
        ckpt_file = checkpoint_path(out)
        ckpt = None
        if resume and ckpt_file.is_file():
            ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
            _check_resumable(ckpt, cfg, data)
        if ckpt is None:
            torch.manual_seed(cfg.seed)
            np.random.seed(cfg.seed)  # noqa: NPY002
            random.seed(cfg.seed)
            if cfg.set_priors and hasattr(module, "set_output_priors"):
                a, pi = output_priors(data.w.cpu())
                if getattr(module, "num_targets", data.k) == data.k:
                    module.set_output_priors(a, pi)

        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, cfg)
        scheduler = make_scheduler(optimizer, cfg)
        amp_dtype = resolve_amp_dtype(cfg.amp, device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        step_fn = OptimizerStep(optimizer, params, cfg.clip_norm, scaler)

        history: dict[str, Any] = {k: [] for k in _HISTORY_KEYS}
        state = {"epoch": 0, "best_loss": math.inf, "best_epoch": -1, "bad_epochs": 0}
        best_state = None
        finished = False
        stopped_early = False
        if ckpt is not None:
            restore_training_state(ckpt, module, optimizer, scheduler, scaler)
            rng_file = out / f"rng_rank{rank}.pt"
            if world > 1 and rng_file.is_file():
                set_rng_state(torch.load(rng_file, weights_only=True))
            else:
                set_rng_state(ckpt["rng"])
            history = ckpt["history"]
            if logger is not None and rank == 0:
                # A resumed run hands its logger the restored epochs first, so a fresh
                # DVCLive folder (e.g. after `dvc repro` removed the stage's outs) is complete.
                for i in range(len(history["epoch"])):
                    _log(logger, {k: history[k][i] for k in _HISTORY_KEYS})
            state = ckpt["state"]
            best_state = ckpt["best_state"]
            stopped_early = bool(ckpt.get("stopped_early", False))
            finished = stopped_early or state["epoch"] >= cfg.epochs

        if world > 1:
            set_bn_sync(module, True)
            ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
            net: nn.Module = nn.parallel.DistributedDataParallel(module, **ddp_kwargs)
        else:
            net = module

        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.epochs,
            initial=state["epoch"],
            desc="train",
            disable=progress_disabled() or rank != 0,
            leave=False,
        )
        epochs_this_call = 0
        use_valid = vdata is not None
        while not finished and state["epoch"] < cfg.epochs:
            if max_epochs_per_call is not None and epochs_this_call >= max_epochs_per_call:
                break
            epoch = state["epoch"]
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            pool = _pool(data, cfg, epoch)
            perm = epoch_order(pool, cfg.seed, epoch).to(device)
            net.train()
            spec_acc = {"sum": torch.zeros((), dtype=torch.float64, device=device), "seen": 0}
            batch_loss = _synthetic_batch_loss(
                net,
                module,
                data,
                spectrum,
                cfg,
                (device, amp_dtype),
                (rank, world),
                epoch,
                spec_acc,
            )
            ep = run_epoch(
                perm, batch_loss, step_fn, batch_size=cfg.batch_size, min_batch=2 * world
            )
            scheduler.step()
            stats = torch.stack(
                [
                    torch.as_tensor(ep.loss_sum, dtype=torch.float64, device=device),
                    torch.tensor(float(ep.seen), dtype=torch.float64, device=device),
                    spec_acc["sum"],
                    torch.tensor(float(spec_acc["seen"]), dtype=torch.float64, device=device),
                ]
            )
            if world > 1:
                dist.all_reduce(stats)
            train_loss = float(stats[0] / stats[1].clamp_min(1.0))
            train_spectrum = float(stats[2] / stats[3]) if spectrum is not None else None
            gns = torch.stack(ep.grad_norms).float() if ep.grad_norms else torch.zeros(1)
            if use_valid:
                vidx = torch.arange(vdata.n, device=device)[rank::world]
                ev = _evaluate(module, vdata, cfg, 16384, vidx)
            else:
                ev = _evaluate(module, data, cfg, 16384, perm[rank::world])
            valid_spectrum = None
            if vspectrum is not None:
                valid_spectrum = vspectrum.mean_loss(module, vdata if use_valid else data)
                ev["loss"] += cfg.spectrum_weight * valid_spectrum
            monitor = ev["loss"]
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_spectrum": train_spectrum,
                "valid_loss": ev["loss"],
                "valid_spectrum": valid_spectrum,
                "valid_frobenius": ev["frobenius"],
                "valid_intensity_mse": ev["intensity_mse"],
                "lr": lr,
                "grad_norm_mean": float(gns.mean()),
                "grad_norm_max": float(gns.max()),
                "alpha_mean": ev["alpha_mean"],
                "alpha_std": ev["alpha_std"],
                "pool_size": int(pool.numel()),
                "seconds": time.perf_counter() - t0,
            }
            for k in _HISTORY_KEYS:
                history.setdefault(k, []).append(record[k])
            new_best, stop = early_stopping_update(state, monitor, epoch, cfg, module)
            if new_best is not None:
                best_state = new_best
            if stop:
                stopped_early = finished = True
            state["epoch"] = epoch + 1
            epochs_this_call += 1
            if state["epoch"] >= cfg.epochs:
                finished = True
            if rank == 0:
                if logger is not None:
                    _log(logger, record)
                bar.update(1)
                bar.set_postfix(train=f"{train_loss:.4f}", valid=f"{ev['loss']:.4f}")
                if every(state["epoch"], cfg.epochs) or finished:
                    report(
                        f"{out.name}: epoch {state['epoch']}/{cfg.epochs}, train {train_loss:.4f}, "
                        f"valid {ev['loss']:.4f} (best {state['best_loss']:.4f} at "
                        f"{state['best_epoch'] + 1}){', stopped early' if stopped_early else ''}"
                    )
            saved = training_state(
                module, optimizer, scheduler, scaler, history, state, best_state, stopped_early, cfg
            )
            write_checkpoint(out, {**saved, "fingerprint": data.fingerprint}, rank, world)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
        bar.close()

        if finished and best_state is not None:
            module.load_state_dict(best_state)
            module.eval()
        result = dict(history)
        result.update(
            best_epoch=state["best_epoch"],
            best_valid_loss=state["best_loss"],
            stopped_early=stopped_early,
            finished=finished,
            world_size=world,
            monitored="valid" if use_valid else "train",
        )
        if rank == 0:
            with open(out / "history.json", "w") as fh:
                json.dump(result, fh, indent=1, default=float)
        return result


@contextmanager
def _placement(model: nn.Module, cfg: TrainConfig) -> Iterator[tuple[torch.device, int, int]]:
    """The device, rank and world size of a training run (a process group is set up
    when launched under ``torchrun``) with ``cfg.cpu_threads`` intra-op threads on CPU;
    on exit the thread count is restored, batch-norm sync switched off and a process
    group this call created destroyed."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    rank, world, owns_group = dist_setup(device.type)
    if world > 1 and cfg.adversarial_weight > 0:
        raise ValueError("adversarial_weight > 0 is not supported under DistributedDataParallel")
    old_threads = torch.get_num_threads()
    if device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(int(cfg.cpu_threads))
    try:
        yield device, rank, world
    finally:
        torch.set_num_threads(old_threads)
        set_bn_sync(model, False)
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


_HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "train_spectrum",
    "valid_loss",
    "valid_spectrum",
    "valid_frobenius",
    "valid_intensity_mse",
    "lr",
    "grad_norm_mean",
    "grad_norm_max",
    "alpha_mean",
    "alpha_std",
    "pool_size",
    "seconds",
)


def _log(logger: Any, record: dict[str, Any]) -> None:
    for key, name in (
        ("train_loss", "train/loss"),
        ("train_spectrum", "train/spectrum"),
        ("valid_loss", "valid/loss"),
        ("valid_spectrum", "valid/spectrum"),
        ("valid_frobenius", "valid/frobenius"),
        ("valid_intensity_mse", "valid/intensity_mse"),
        ("lr", "lr"),
        ("grad_norm_mean", "grad_norm/mean"),
        ("grad_norm_max", "grad_norm/max"),
        ("alpha_mean", "alpha/mean"),
        ("alpha_std", "alpha/std"),
    ):
        if record[key] is not None:
            logger.log_metric(name, float(record[key]))
    logger.next_step()


def _check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, data: _DeviceData) -> None:
    diff = config_diff(ckpt.get("config", {}), cfg)
    if diff:
        raise ValueError(
            f"checkpoint config differs in {diff}; use another out_dir or resume=False"
        )
    if ckpt.get("fingerprint") != data.fingerprint:
        raise ValueError("checkpoint was written for a different training set")
