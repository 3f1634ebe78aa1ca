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
off by default because it is the only term that needs the p × p matrices), and on the
same pool the log-determinant (Stein) and GMV portfolio-variance terms
(``TrainConfig.log_det_weight``, ``portfolio_weight``; off in the deployed model, training
terms only: the monitored validation loss does not include them).

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

Reuse: the optimisation pass :func:`shrinklab.training.epochs.run_epoch` (with ``OptimizerStep``) takes a
pluggable per-batch loss and is the one inner loop of this trainer,
:func:`shrinklab.training.finetune.finetune_on_real` (realised-variance loss) and
:func:`shrinklab.training.compression.fine_tune` (pruning fine-tuning, distillation); the optimiser,
scheduler, epoch order, early stopping, checkpoint and RNG helpers are public too.

Logging: a :class:`shrinklab.training.monitor.RunLogger` (TensorBoard + DVCLive) or a
``dvclive.Live`` passed as ``logger`` receives per-epoch train/valid losses (each
term), learning rate, gradient-norm statistics, the mean/std of predicted intensities
and, when it has ``log_histogram``, histograms of the validation predictions
(``next_step()`` once per epoch); a tqdm bar that is silent when stderr is not a
TTY or ``CI``/``PAPERMILL`` is set.

Modules: this one is the resumable training state machine (epochs, validation, early
stopping, checkpoints, DDP); the optimisation pass and its parts are in
:mod:`shrinklab.training.epochs`, the device-side training set, the per-sample
objective, eval-mode metrics and the spectrum cache in
:mod:`shrinklab.training.device_data` (the public names of both stay importable
from here).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.core.progress import every, report
from shrinklab.models.network import output_priors
from shrinklab.training import losses as L
from shrinklab.training.checkpoints import (
    checkpoint_path,
    restore_training_state,
    set_rng_state,
    training_state,
    write_checkpoint,
)
from shrinklab.training.config import ADVERSARIAL_EPSILON, TrainConfig, config_diff
from shrinklab.training.device import (
    autocast,
    dist_setup,
    resolve_amp_dtype,
    resolve_device,
    set_bn_sync,
)
from shrinklab.training.device_data import (
    DeviceData,
    SpectrumCache,
    epoch_pool,
    evaluate_loss,
    evaluate_rows,
    per_sample_loss,
)
from shrinklab.training.epochs import (
    BatchLoss,
    EpochStats,
    OptimizerStep,
    early_stopping_update,
    epoch_order,
    make_optimizer,
    make_scheduler,
    run_epoch,
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


def _synthetic_batch_loss(
    net: nn.Module,
    module: nn.Module,
    data: DeviceData,
    spectrum: SpectrumCache | None,
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
        obj, _, _ = per_sample_loss(out_b, w, G, c, d, cfg)
        # DDP averages gradients over ranks: scale so the result is the global mean
        loss = obj.sum() * (world / gsize)
        if spectrum is not None:
            loss = loss + cfg.spectrum_weight * spec.sum().float() * (world / srows.numel())
            acc["sum"] += spec.detach().sum()
            acc["seen"] += spec.numel()
            if cfg.log_det_weight or cfg.portfolio_weight:
                extra = spectrum.stein_and_portfolio(
                    w_spec, sb, srows_local, cfg.log_det_weight, cfg.portfolio_weight
                )
                loss = loss + extra.sum().float() * (world / srows.numel())
        if cfg.l2:
            loss = loss + L.l2_penalty(module, cfg.l2)
        if cfg.smoothness_weight:
            loss = loss + cfg.smoothness_weight * L.smoothness_penalty(x, out_b.intensities)
        if cfg.adversarial_weight:
            loss = loss + cfg.adversarial_weight * L.adversarial_penalty(
                module, x, epsilon=ADVERSARIAL_EPSILON, method="fgsm"
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
        agree except ``epochs``/``device``/``patience``: :data:`~shrinklab.training.config.RESUMABLE_FIELDS`).
    logger : a :class:`~shrinklab.training.monitor.RunLogger` or ``dvclive.Live`` (anything
        with ``log_metric`` and ``next_step``; ``log_histogram`` optional); a resumed run first replays the restored epochs to it (pass a fresh logger).
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
        data = DeviceData(train_set, device, need_schedule, **norm)
        if cfg.curriculum and data.difficulty is None:
            raise ValueError("curriculum=True needs train_set.difficulty")
        vdata = DeviceData(valid_set, device, False, **norm) if valid_set is not None else None
        spectrum = SpectrumCache(train_set, data, cfg, device) if cfg.uses_matrix_pool else None
        vspectrum = None
        if spectrum is not None and vdata is not None and hasattr(valid_set, "rebuild_matrices"):
            vspectrum = SpectrumCache(valid_set, vdata, cfg, device)
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

        from tqdm import tqdm  # not tqdm.auto: its IProgress warning lands in reports

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
            pool = epoch_pool(data, cfg, epoch)
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
            predicted = [] if logger is not None and hasattr(logger, "log_histogram") else None
            if use_valid:
                vidx = torch.arange(vdata.n, device=device)[rank::world]
                ev = evaluate_rows(module, vdata, cfg, 16384, vidx, predicted)
            else:
                ev = evaluate_rows(module, data, cfg, 16384, perm[rank::world], predicted)
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
                    _log(logger, record, torch.cat(predicted) if predicted else None)
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


def _log(logger: Any, record: dict[str, Any], intensities: torch.Tensor | None = None) -> None:
    """One epoch to ``logger``: the loss terms, learning rate, gradient norms and
    intensity statistics of ``record``, and histograms of the predicted total
    intensity α and of each target's intensity (``intensities (N, K)``, if given)."""
    if intensities is not None:
        logger.log_histogram("alpha", intensities.sum(1))
        for k in range(intensities.shape[1]):
            logger.log_histogram(f"intensity/{k}", intensities[:, k])
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


def _check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, data: DeviceData) -> None:
    diff = config_diff(ckpt.get("config", {}), cfg)
    if diff:
        raise ValueError(
            f"checkpoint config differs in {diff}; use another out_dir or resume=False"
        )
    if ckpt.get("fingerprint") != data.fingerprint:
        raise ValueError("checkpoint was written for a different training set")
