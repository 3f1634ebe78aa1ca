"""The training set on the trainer's device: its fields normalised for the objective
(:class:`DeviceData`), the per-sample objective of :mod:`shrinklab.training.loop`
(:func:`per_sample_loss`), eval-mode metrics over a set (:func:`evaluate_loss`), the
pool of an epoch under curriculum / progressive sizing (:func:`epoch_pool`) and the
cached matrices of the spectrum term (:class:`SpectrumCache`); the objective and the
schedules are documented in :mod:`shrinklab.training.loop`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.core.targets import combine
from shrinklab.training import losses as L
from shrinklab.training.config import (
    CURRICULUM_EPOCHS,
    CURRICULUM_START,
    PROGRESSIVE_EPOCHS,
    SPECTRUM_BATCH,
    SPECTRUM_MAX_MB,
    SPECTRUM_POOL,
    TrainConfig,
)
from shrinklab.training.objective import (
    best_classical_loss,
    edge_family_mask,
    loss_normaliser,
    tensor_field,
)

__all__ = [
    "DeviceData",
    "SpectrumCache",
    "epoch_pool",
    "evaluate_loss",
    "evaluate_rows",
    "per_sample_loss",
]


class DeviceData:
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


def per_sample_loss(
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
    if not isinstance(data, DeviceData):
        data = DeviceData(
            data,
            next(module.parameters()).device,
            need_schedule=False,
            normaliser=cfg.loss_normaliser,
            gap_floor=cfg.gap_floor,
            best_weight=cfg.best_classical_weight,
            edge_weight=cfg.edge_weight,
        )
    return evaluate_rows(module, data, cfg, chunk, torch.arange(data.n, device=data.x.device))


@torch.no_grad()
def evaluate_rows(
    module: nn.Module,
    data: DeviceData,
    cfg: TrainConfig,
    chunk: int,
    idx: torch.Tensor,
    keep: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Eval-mode metrics over rows ``idx``; ``keep`` (a list) receives the predicted
    intensities per chunk (CPU) for the logger's histograms."""
    was_training = module.training
    module.eval()
    sums = torch.zeros(6, dtype=torch.float64, device=data.x.device)
    try:
        for s in range(0, idx.numel(), chunk):
            x, w, G, c, d = data.batch(idx[s : s + chunk])
            out = module(x)
            obj, frob, mse = per_sample_loss(out, w, G, c, d, cfg)
            a = out.alpha.double()
            if keep is not None:
                keep.append(out.intensities.detach().float().cpu())
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


def epoch_pool(
    data: DeviceData,
    cfg: TrainConfig,
    epoch: int,
    *,
    curriculum_start: float = CURRICULUM_START,
    curriculum_epochs: int = CURRICULUM_EPOCHS,
    progressive_epochs: int = PROGRESSIVE_EPOCHS,
) -> torch.Tensor:
    """Indices (CPU, long) available in ``epoch`` under curriculum / progressive sizing
    (``cfg.curriculum``, ``cfg.progressive``): the easiest ``curriculum_start`` of the
    samples, growing linearly to all of them at ``curriculum_epochs``; every ``p`` in
    the pool at ``progressive_epochs``."""
    n = data.n
    keep = torch.ones(n, dtype=torch.bool)
    if cfg.curriculum:
        diff = data.difficulty.double().cpu()
        frac = min(1.0, curriculum_start + (1 - curriculum_start) * epoch / curriculum_epochs)
        m = max(1, math.ceil(frac * n))
        order = torch.argsort(diff, stable=True)
        cur = torch.zeros(n, dtype=torch.bool)
        cur[order[:m]] = True
        keep &= cur
    if cfg.progressive:
        p = data.p.long().cpu()
        sizes = torch.unique(p)  # sorted
        stage = min(len(sizes) - 1, (epoch * len(sizes)) // progressive_epochs)
        prog = p <= sizes[stage]
        keep = keep & prog if bool((keep & prog).any()) else prog
    return torch.nonzero(keep).squeeze(1)


class SpectrumCache:
    """Matrices of a fixed random subset of the training set, for the spectrum term.

    Buckets of equal ``p`` (from ``train_set.rebuild_matrices``) kept on the device in
    float64 with the true eigenvalues and the sample covariance's spectrum loss
    (the normaliser) precomputed: at most :data:`SPECTRUM_POOL` samples and
    :data:`SPECTRUM_MAX_MB` MiB, :data:`SPECTRUM_BATCH` of them per step (module
    constants, read when the cache is built)."""

    def __init__(self, ds: Any, data: DeviceData, cfg: TrainConfig, device: torch.device):
        if not hasattr(ds, "rebuild_matrices"):
            raise ValueError(
                "the spectrum, log-det and portfolio terms need train_set.rebuild_matrices(indices)"
            )
        p = torch.as_tensor(np.asarray(ds.p) if not torch.is_tensor(ds.p) else ds.p).long()
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + 13)
        order = torch.randperm(data.n, generator=gen).tolist()
        budget = SPECTRUM_MAX_MB * 2**20
        chosen, used = [], 0.0
        for i in order:
            if len(chosen) >= SPECTRUM_POOL:
                break
            size = (data.k + 3) * float(p[i]) ** 2 * 8
            if used + size <= budget:
                chosen.append(i)
                used += size
        if not chosen:
            raise ValueError("SPECTRUM_MAX_MB is too small for a single sample's matrices")
        self.seed = cfg.seed
        self.batch = SPECTRUM_BATCH
        self.buckets = []
        for b in ds.rebuild_matrices(torch.tensor(sorted(chosen))):
            S = b.S.to(device=device, dtype=torch.float64)
            sigma = b.sigma.to(device=device, dtype=torch.float64)
            lam = torch.linalg.eigvalsh(sigma)
            denom = (torch.linalg.eigvalsh(S) - lam).square().sum(-1).clamp_min(1e-300)
            T = b.T.to(device=device, dtype=torch.float64)
            idx = torch.as_tensor(b.indices).long().to(device)
            self.buckets.append((idx, S, T, lam, denom, sigma))
        self.sizes = torch.tensor([float(b[0].numel()) for b in self.buckets], dtype=torch.float64)

    def draw(self, epoch: int, step: int) -> tuple[int, torch.Tensor]:
        """(bucket, rows) for one step: deterministic in (seed, epoch, step)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 100_003 + step + 17)
        b = int(torch.multinomial(self.sizes, 1, generator=g))
        n = int(self.sizes[b])
        return b, torch.randperm(n, generator=g)[: min(self.batch, n)]

    @torch.no_grad()
    def mean_loss(self, module: nn.Module, data: DeviceData) -> float:
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
        _, S, T, lam, denom, _sigma = self.buckets[b]
        r = rows.to(S.device)
        est = combine(S[r], T[r], w.double())
        return (torch.linalg.eigvalsh(est) - lam[r]).square().sum(-1) / denom[r]

    def stein_and_portfolio(
        self,
        w: torch.Tensor,
        b: int,
        rows: torch.Tensor,
        log_det_weight: float,
        portfolio_weight: float,
    ) -> torch.Tensor:
        """Per-sample ``log_det_weight · Stein(Σ̂(w), Σ) + portfolio_weight · (wᵀΣw of the
        GMV portfolio of Σ̂ / the true GMV variance − 1)``
        (:func:`shrinklab.training.losses.log_det_loss`,
        :func:`~shrinklab.training.losses.portfolio_variance_loss`); 0 for the samples
        whose Σ̂ (or Σ) is not positive definite, where neither is defined."""
        _, S, T, _lam, _denom, sigma = self.buckets[b]
        r = rows.to(S.device)
        est, sig = combine(S[r], T[r], w.double()), sigma[r]
        ok = (torch.linalg.cholesky_ex(est.detach()).info == 0) & (
            torch.linalg.cholesky_ex(sig).info == 0
        )
        out = torch.zeros(est.shape[0], dtype=est.dtype, device=est.device)
        if not bool(ok.any()):
            return out
        est, sig = est[ok], sig[ok]
        term = torch.zeros(est.shape[0], dtype=est.dtype, device=est.device)
        if log_det_weight:
            term = term + log_det_weight * L.log_det_loss(est, sig, reduction="none")
        if portfolio_weight:
            term = term + portfolio_weight * L.portfolio_variance_loss(est, sig, reduction="none")
        return out.index_put((torch.nonzero(ok).squeeze(1),), term)
