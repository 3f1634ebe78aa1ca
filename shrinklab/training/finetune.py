"""Fine-tuning the synthetic-pretrained network on real returns (notebook 03).

Real data has no known Σ, so the loss is the one a portfolio manager cares about:
the realised variance of the global minimum-variance (GMV) portfolio built from
``Σ̂(w) = S + Σ_k w_k (T_k − S)`` (``w`` = the network's intensities) over the
holding period that follows the estimation window, divided by the same realised
variance for a baseline estimator (Ledoit–Wolf by default, or the sample
covariance):

    loss_i = var_h( R_i · gmv(Σ̂_i(w_i)) ) / var_h( R_i · gmv(Σ̂_i^base) )

(the out-of-sample GMV criterion of Engle & Colacito, JBES 24, 2006, and Ledoit &
Wolf, RFS 30, 2017; ``< 1`` = better than the baseline). The network runs under
autocast (bf16 on CUDA, none on CPU); the matrix algebra runs in float64.

Machinery: the optimisation pass (:func:`shrinklab.training.epochs.run_epoch`, the same inner
loop as ``train.train``, here with the realised-variance batch loss), optimiser,
cosine-warm-restart scheduler, gradient clipping, early stopping on the validation
loss with the best weights restored, atomic per-epoch checkpoints with RNG states and
``resume`` come from the public helpers of :mod:`shrinklab.training`; this module adds
only the loss, the validation metrics and the per-epoch bookkeeping. Windows of every
``p`` and window length share one batch: smaller windows are padded with an inert
block (:func:`shrinklab.data.real_windows.pad_assets`) that the masked GMV solve ignores
exactly.

Walk-forward (:func:`walk_forward_finetune`): for each expanding-window fold of
:func:`shrinklab.data.returns.walk_forward_splits`, fine-tune a copy of the pretrained model
on the fold's training windows and early-stop on its validation block; the number
of epochs for the final model is the median best epoch over the folds, and the
final model is fine-tuned on every window before the test period (training and
validation days of the last fold). No window ever reaches the test period.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from shrinklab.core.estimators import ledoit_wolf
from shrinklab.core.targets import combine
from shrinklab.data.real_windows import (
    RealWindows,
    WindowBatch,
    WindowSampling,
    build_windows,
    pad_assets,
    realised_gmv_variance,
)
from shrinklab.training import losses as L
from shrinklab.training.checkpoints import (
    atomic_save,
    checkpoint_path,
    restore_training_state,
    set_rng_state,
    training_state,
)
from shrinklab.training.config import TrainConfig, config_diff
from shrinklab.training.device import autocast, resolve_amp_dtype, resolve_device
from shrinklab.training.epochs import (
    BatchLoss,
    OptimizerStep,
    early_stopping_update,
    epoch_order,
    make_optimizer,
    make_scheduler,
    run_epoch,
)
from shrinklab.training.monitor import run_logger
from shrinklab.training.replay import ReplaySpec, SyntheticReplay, resume_replay

__all__ = [
    "BASELINES",
    "finetune_on_real",
    "realised_variance_loss",
    "evaluate_real",
    "walk_forward_finetune",
]


log = logging.getLogger(__name__)


BASELINES = ("ledoit_wolf", "sample")


# --------------------------------------------------------------------------- loss
def realised_variance_loss(
    intensities: torch.Tensor,
    S: torch.Tensor,
    T: torch.Tensor,
    realised: torch.Tensor,
    baseline_var: torch.Tensor | None = None,
    *,
    demean: bool = True,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-window realised GMV variance of ``Σ̂(w)``, divided by ``baseline_var`` if given.

    ``intensities (B, K)``, ``S (B, p, p)``, ``T (B, K, p, p)``, ``realised (B, h, p)``;
    returns ``(B,)`` in float64. Differentiable in ``intensities``. ``mask (B, p)``
    marks the real assets of padded windows (:func:`shrinklab.data.real_windows.pad_assets`).
    """
    sigma_hat = combine(S, T, intensities.to(S.dtype))
    var = realised_gmv_variance(sigma_hat, realised, demean=demean, mask=mask)
    if baseline_var is not None:
        var = var / baseline_var.to(var.dtype).clamp_min(torch.finfo(var.dtype).tiny)
    return var


def _baseline_cov(g: WindowBatch, baseline: str) -> torch.Tensor:
    if baseline == "sample":
        return g.S
    if baseline == "ledoit_wolf":
        return ledoit_wolf(g.X)
    raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")


class _RealSet:
    """All windows on the device as a handful of tensors.

    Windows with fewer assets are padded to the largest ``p``
    (:func:`shrinklab.data.real_windows.pad_assets`; the masked GMV solve gives them exactly
    their unpadded weights), so a training batch is an index slice that mixes every
    ``p`` and every window length: one network forward (batch normalisation sees
    them all) and one batched matrix computation.
    """

    def __init__(
        self, windows: RealWindows | Sequence[RealWindows], device, baseline: str, demean: bool
    ) -> None:
        if isinstance(windows, RealWindows):
            windows = [windows]
        groups: list[WindowBatch] = [g for w in windows for g in w]
        if not groups:
            raise ValueError("no windows")
        if any(g.features is None for g in groups):
            raise ValueError("windows need features (build_windows(..., features=True))")
        dims = {g.features.shape[1] for g in groups}
        if len(dims) != 1:
            raise ValueError(f"windows have different feature dimensions {sorted(dims)}")
        horizons = {g.horizon for g in groups}
        if len(horizons) != 1:
            raise ValueError(f"windows have different horizons {sorted(horizons)}")
        p_max = max(g.p for g in groups)
        f64 = dict(device=device, dtype=torch.float64)
        xs, regs, Ss, Ts, Rs, masks, bases, samples = [], [], [], [], [], [], [], []
        for g in groups:
            R = g.realised.to(**f64)
            S = g.S.to(**f64)
            bases.append(
                realised_gmv_variance(_baseline_cov(g, baseline).to(**f64), R, demean=demean)
            )
            samples.append(realised_gmv_variance(S, R, demean=demean))
            S2, T2, R2, m = pad_assets(S, g.targets.to(**f64), R, p_max)
            Ss.append(S2)
            Ts.append(T2)
            Rs.append(R2)
            masks.append(m)
            xs.append(g.features.to(device=device, dtype=torch.float32))
            regs.append(g.regime)
        self.device = device
        self.x = torch.cat(xs)
        self.regime = torch.cat(regs).to(device) if all(r is not None for r in regs) else None
        self.S, self.T, self.R, self.mask = (torch.cat(v) for v in (Ss, Ts, Rs, masks))
        self.base, self.sample_var = torch.cat(bases), torch.cat(samples)
        self.n = int(self.x.shape[0])
        self.fingerprint = [float(self.n), float(self.x.double().sum()), float(self.R.sum())]

    def intensities(self, model: nn.Module, idx: torch.Tensor, amp_dtype) -> torch.Tensor:
        regime = None
        if self.regime is not None and getattr(model, "n_regimes", 0) > 0:
            regime = self.regime[idx]
        with autocast(self.device, amp_dtype):
            out = model(self.x[idx], regime)
        return out.intensities.float()

    def variances(
        self, w: torch.Tensor, idx: torch.Tensor, demean: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Realised GMV variance of Σ̂(w) and of the baseline for the windows ``idx``."""
        var = realised_variance_loss(
            w, self.S[idx], self.T[idx], self.R[idx], demean=demean, mask=self.mask[idx]
        )
        return var, self.base[idx]


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    data: _RealSet,
    amp_dtype,
    demean: bool,
    chunk: int = 4096,
    predicted: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Eval-mode metrics of ``model`` on ``data`` (:func:`evaluate_real`); the predicted
    intensities ``(N, K)`` are appended to ``predicted`` (for the logger's histograms)."""
    was = model.training
    model.eval()
    ws, vs, bs = [], [], []
    try:
        for s in range(0, data.n, chunk):
            idx = torch.arange(s, min(s + chunk, data.n), device=data.device)
            w = data.intensities(model, idx, amp_dtype)
            var, base = data.variances(w, idx, demean)
            ws.append(w)
            vs.append(var)
            bs.append(base)
    finally:
        model.train(was)
    w, var, base = torch.cat(ws), torch.cat(vs), torch.cat(bs)
    if predicted is not None:
        predicted.append(w.detach().cpu())
    sample_var = data.sample_var
    ratio = var / base.clamp_min(torch.finfo(var.dtype).tiny)
    return {
        "loss": float(ratio.mean()),
        "pooled_ratio": float(var.sum() / base.sum()),
        "pooled_ratio_vs_sample": float(var.sum() / sample_var.sum()),
        "alpha_mean": float(w.sum(-1).double().mean()),
        "n": int(data.n),
    }


def evaluate_real(
    model: nn.Module,
    windows: RealWindows | Sequence[RealWindows],
    *,
    baseline: str = "ledoit_wolf",
    demean: bool = True,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Eval-mode realised-variance loss on windows: ``loss`` (mean of per-window ratios to
    the baseline), ``pooled_ratio`` (Σ variance / Σ baseline variance),
    ``pooled_ratio_vs_sample``, ``alpha_mean`` (mean total intensity), ``n``. Runs on
    ``device`` (default: where the model is; the model is moved there)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    dev = next(model.parameters()).device if device is None else torch.device(device)
    model.to(dev)
    return _evaluate(model, _RealSet(windows, dev, baseline, demean), None, demean)


# --------------------------------------------------------------------------- training
def _real_batch_loss(
    model: nn.Module,
    data: _RealSet,
    cfg: TrainConfig,
    amp_dtype: torch.dtype | None,
    demean: bool,
    replay: SyntheticReplay | None = None,
) -> BatchLoss:
    """:func:`shrinklab.training.epochs.run_epoch`'s ``batch_loss``: mean realised-variance ratio of
    the windows ``idx`` (plus ``cfg.l2`` and the synthetic replay term), reporting the
    summed per-window ratios."""

    def batch_loss(_step: int, idx: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        w = data.intensities(model, idx, amp_dtype)
        var, base = data.variances(w, idx, demean)
        per = var / base.clamp_min(torch.finfo(var.dtype).tiny)
        loss = per.mean()
        if cfg.l2:
            loss = loss + L.l2_penalty(model, cfg.l2).to(loss.dtype)
        if replay is not None:
            loss = loss + replay.loss(model, amp_dtype).to(loss.dtype)
        return loss, float(per.detach().sum()), idx.numel()

    return batch_loss


_HISTORY = (
    "epoch",
    "train_loss",
    "valid_loss",
    "valid_pooled_ratio",
    "lr",
    "grad_norm_mean",
    "alpha_mean",
    "samples_per_s",
    "seconds",
)
# the per-epoch values a RunLogger receives: the history less its epoch and time columns
_LOGGED = tuple(k for k in _HISTORY if k not in ("epoch", "seconds"))


def finetune_on_real(
    model: nn.Module,
    train_windows: RealWindows | Sequence[RealWindows],
    valid_windows: RealWindows | Sequence[RealWindows] | None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    baseline: str = "ledoit_wolf",
    demean: bool = True,
    resume: bool = True,
    logger: Any = None,
    replay: ReplaySpec | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place with the realised GMV-variance loss (module docstring).

    Parameters
    ----------
    model : a pretrained network (``forward(x, regime) -> ShrinkageOutput``).
    train_windows, valid_windows : :class:`~shrinklab.data.real_windows.RealWindows` (or lists of
        them, e.g. one per estimation-window length). ``valid_windows=None``: run
        ``config.epochs`` epochs and keep the last weights (no early stopping).
    config : :class:`shrinklab.training.config.TrainConfig`; used fields: ``optimizer, lr,
        weight_decay, epochs, batch_size, T_0, T_mult, clip_norm, patience, l2, amp, seed,
        device``.
    out_dir : folder for ``checkpoint.pt`` and ``history.json`` (required).
    baseline : normaliser of the loss, ``"ledoit_wolf"`` or ``"sample"``.
    demean : realised variance with (default) or without demeaning.
    resume : continue from ``out_dir/checkpoint.pt`` if it exists.
    logger : optional :class:`~shrinklab.training.monitor.RunLogger` or ``dvclive.Live``
        (``log_metric``, ``next_step``; with ``log_histogram``, also histograms of the
        validation windows' predicted intensities each epoch).
    replay : :class:`~shrinklab.training.replay.ReplaySpec` (decision 0025): ``+ λ · L/d`` on
        synthetic worlds at every step; ``None`` or ``λ = 0``: plain fine-tuning.

    Returns
    -------
    history dict (per-epoch lists of ``_HISTORY`` keys) plus ``best_epoch``,
    ``best_valid_loss``, ``stopped_early``, ``device``, ``amp``, ``initial_valid``
    (the pretrained model's validation metrics) and ``final_valid``.
    """
    cfg = config or TrainConfig(lr=3e-4, epochs=30, batch_size=64, patience=5)
    if out_dir is None:
        raise ValueError("out_dir is required (checkpoints are never written to the cwd)")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device, 0)
    amp_dtype = resolve_amp_dtype(cfg.amp, device)
    model.to(device)
    tr = _RealSet(train_windows, device, baseline, demean)
    va = _RealSet(valid_windows, device, baseline, demean) if valid_windows is not None else None
    rep = SyntheticReplay(replay, device) if replay is not None and replay.weight > 0 else None
    log.info(
        "fine-tuning on %s (autocast %s): %d training windows, %d validation windows",
        device,
        amp_dtype,
        tr.n,
        va.n if va else 0,
    )

    ckpt_file = checkpoint_path(out)
    ckpt = None
    if resume and ckpt_file.is_file():
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        diff = config_diff(ckpt.get("config", {}), cfg)
        if diff or ckpt.get("baseline") != baseline:
            raise ValueError(
                f"checkpoint config differs in {diff or ['baseline']}; use another out_dir "
                "or resume=False"
            )
        if not np.allclose(ckpt.get("fingerprint"), tr.fingerprint, rtol=1e-9):
            raise ValueError("checkpoint was written for different training windows")
        resume_replay(ckpt.get("replay"), rep)
    if ckpt is None:
        torch.manual_seed(cfg.seed)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    # fp16 autocast (GPUs without bf16) needs loss scaling; bf16 and CPU do not
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    history: dict[str, Any] = {k: [] for k in _HISTORY}
    state = {"epoch": 0, "best_loss": math.inf, "best_epoch": -1, "bad_epochs": 0}
    best_state = None
    stopped_early = False
    initial = _evaluate(model, va, amp_dtype, demean) if va else None
    if ckpt is not None:
        restore_training_state(ckpt, model, optimizer, scheduler, scaler)
        set_rng_state(ckpt["rng"])
        history, state, best_state = ckpt["history"], ckpt["state"], ckpt["best_state"]
        stopped_early = bool(ckpt["stopped_early"])
        initial = ckpt["initial"]

    batch_loss = _real_batch_loss(model, tr, cfg, amp_dtype, demean, rep)
    step_fn = OptimizerStep(optimizer, params, cfg.clip_norm, scaler)
    while not stopped_early and state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        perm = epoch_order(torch.arange(tr.n), cfg.seed, epoch).to(device)
        model.train()
        ep = run_epoch(perm, batch_loss, step_fn, batch_size=cfg.batch_size)
        scheduler.step()
        train_seconds = time.perf_counter() - t0
        predicted = [] if logger is not None and hasattr(logger, "log_histogram") else None
        ev = _evaluate(model, va, amp_dtype, demean, predicted=predicted) if va else None
        record = {
            "epoch": epoch,
            "train_loss": ep.loss_sum / max(ep.seen, 1),
            "valid_loss": ev["loss"] if ev else float("nan"),
            "valid_pooled_ratio": ev["pooled_ratio"] if ev else float("nan"),
            "lr": lr,
            "grad_norm_mean": float(np.mean([float(g) for g in ep.grad_norms]))
            if ep.grad_norms
            else 0.0,
            "alpha_mean": ev["alpha_mean"] if ev else float("nan"),
            "samples_per_s": ep.seen / max(train_seconds, 1e-9),
            "seconds": time.perf_counter() - t0,
        }
        for k in _HISTORY:
            history[k].append(record[k])
        if ev is not None:
            new_best, stopped_early = early_stopping_update(state, ev["loss"], epoch, cfg, model)
            if new_best is not None:
                best_state = new_best
        state["epoch"] = epoch + 1
        log.info(
            "epoch %d: train %.4f valid %.4f (%.0f samples/s on %s)",
            epoch,
            record["train_loss"],
            record["valid_loss"],
            record["samples_per_s"],
            device,
        )
        if logger is not None:
            if predicted:  # histograms of the predicted total and per-target intensities
                w = torch.cat(predicted)
                logger.log_histogram("alpha", w.sum(-1))
                for k in range(w.shape[1]):
                    logger.log_histogram(f"intensity/{k}", w[:, k])
            for key in _LOGGED:
                logger.log_metric(f"finetune/{key}", float(record[key]))
            logger.next_step()
        saved = training_state(
            model, optimizer, scheduler, scaler, history, state, best_state, stopped_early, cfg
        )
        extra = {"initial": initial, "baseline": baseline, "fingerprint": tr.fingerprint}
        if rep is not None:
            extra["replay"] = rep.state()
        atomic_save({**saved, **extra}, ckpt_file)

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result = dict(history)
    result.update(
        best_epoch=state["best_epoch"] if va else state["epoch"] - 1,
        best_valid_loss=state["best_loss"] if va else float("nan"),
        stopped_early=stopped_early,
        device=str(device),
        amp=str(amp_dtype),
        baseline=baseline,
        initial_valid=initial,
        final_valid=_evaluate(model, va, amp_dtype, demean) if va else None,
    )
    with open(out / "history.json", "w") as fh:
        json.dump(result, fh, indent=1, default=float)
    return result


# --------------------------------------------------------------------------- walk-forward
@dataclass
class WalkForwardResult:
    """Per-fold histories and validation metrics, the chosen number of epochs, the final
    model (fine-tuned on all pre-test windows) and its training history."""

    folds: list[dict[str, Any]]
    epochs: int
    model: nn.Module
    final_history: dict[str, Any]

    def table(self) -> pd.DataFrame:
        """One row per fold: dates, best epoch, validation loss before and after."""
        rows = []
        for f in self.folds:
            h = f["history"]
            rows.append(
                {
                    "fold": f["fold"],
                    "train_end": f["train_end"],
                    "val_start": f["val_start"],
                    "val_end": f["val_end"],
                    "best_epoch": h["best_epoch"],
                    "valid_loss_pretrained": h["initial_valid"]["loss"],
                    "valid_loss_finetuned": h["final_valid"]["loss"],
                    "pooled_ratio_pretrained": h["initial_valid"]["pooled_ratio"],
                    "pooled_ratio_finetuned": h["final_valid"]["pooled_ratio"],
                }
            )
        return pd.DataFrame(rows).set_index("fold")


def walk_forward_finetune(
    model: nn.Module,
    returns: pd.DataFrame,
    splits: Sequence[Any],
    windows: Sequence[int] = (60, 120, 250),
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    regimes: pd.Series | None = None,
    baseline: str = "ledoit_wolf",
    resume: bool = True,
    monitor: str | Path | None = None,
    replay: ReplaySpec | None = None,
    **sampling: Any,
) -> WalkForwardResult:
    """Walk-forward fine-tuning over expanding-window folds (module docstring).

    ``model`` is left unchanged; each fold and the final fit start from a copy of it.
    ``splits`` come from :func:`shrinklab.data.returns.walk_forward_splits` (expanding from the
    first date, ending before the test period). ``sampling``: the fields of
    :class:`~shrinklab.data.real_windows.WindowSampling`. Training windows (every ``step`` days,
    with ``asset_subsets`` random subsets drawn with ``seed``) are built once up to the
    last validation day and restricted per fold to those whose realised period ends by
    the fold's last training day; validation windows (full universe, every
    ``val_step`` days) lie inside the fold's validation block. Checkpoints go to
    ``out_dir/fold_<k>`` and ``out_dir/final``; with ``monitor`` (a reports folder) each
    logs to the :class:`~shrinklab.training.monitor.RunLogger` run ``finetune/fold_<k>``
    or ``finetune/final`` there. ``replay``: synthetic replay in every fit
    (:func:`finetune_on_real`; each fit starts its replay generator from the seed).
    """
    if out_dir is None:
        raise ValueError("out_dir is required")
    if not splits:
        raise ValueError("need at least one split")
    cfg = config or TrainConfig(lr=3e-4, epochs=30, batch_size=64, patience=5)
    ws = WindowSampling(**sampling)
    out = Path(out_dir)
    index = returns.index
    # Every training window before the test period, built once (features, targets);
    # each fold takes those whose realised period ends by its last training day.
    last_val = max(int(np.asarray(sp.val)[-1]) for sp in splits)
    end = index[last_val]
    master = [
        build_windows(
            returns,
            wl,
            ws.horizon,
            ws.step,
            start=None,
            end=end,
            asset_subsets=ws.asset_subsets,
            min_assets=ws.min_assets,
            seed=ws.seed,
            regimes=regimes,
        )
        for wl in windows
    ]
    folds = []
    for split in splits:
        train, val = np.asarray(split.train), np.asarray(split.val)
        if train[0] != 0:
            raise ValueError("walk-forward splits must train from the first date (expanding)")
        tr = [m.restrict(end=index[train[-1]]) for m in master]
        va = [
            build_windows(
                returns, wl, ws.horizon, ws.val_step, index[val[0]], index[val[-1]], regimes=regimes
            )
            for wl in windows
        ]
        m = copy.deepcopy(model)
        with run_logger(f"finetune/fold_{split.fold}", monitor) as log:
            hist = finetune_on_real(
                m,
                tr,
                va,
                cfg,
                out / f"fold_{split.fold}",
                baseline=baseline,
                resume=resume,
                logger=log,
                replay=replay,
            )
        dates = split.dates(index)
        folds.append(
            {
                "fold": int(split.fold),
                "train_end": dates["train_end"],
                "val_start": dates["val_start"],
                "val_end": dates["val_end"],
                "history": hist,
            }
        )
    epochs = max(1, int(round(float(np.median([f["history"]["best_epoch"] + 1 for f in folds])))))
    final_tr = master
    final_cfg = TrainConfig(**{**cfg.to_dict(), "epochs": epochs})
    final = copy.deepcopy(model)
    with run_logger("finetune/final", monitor) as log:
        final_hist = finetune_on_real(
            final,
            final_tr,
            None,
            final_cfg,
            out / "final",
            baseline=baseline,
            resume=resume,
            logger=log,
            replay=replay,
        )
    return WalkForwardResult(folds=folds, epochs=epochs, model=final, final_history=final_hist)
