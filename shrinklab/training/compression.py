"""training.compression."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune

from shrinklab.core.metrics import as_float64, field_of, prial_of
from shrinklab.models.compressed import count_parameters, prunable_layers
from shrinklab.models.network import (
    MLShrinkageNetwork,
    ShrinkageOutput,
    output_priors,
    predict_numpy,
)
from shrinklab.training.config import TrainConfig
from shrinklab.training.epochs import OptimizerStep, make_optimizer, run_epoch
from shrinklab.training.losses import gaussian_nll, intensity_mse, quadratic_frobenius
from shrinklab.training.monitor import run_logger

__all__ = [
    "distill",
    "distillation_loss",
    "fine_tune",
    "magnitude_prune",
    "pruning_sweep",
    "sparsity",
    "supervised_loss",
    "teacher_targets",
]


# ------------------------------------------------------------------ fine-tuning
def _training_tensors(data: Any) -> dict[str, torch.Tensor]:
    out = {
        "features": torch.as_tensor(np.asarray(field_of(data, "features")), dtype=torch.float32),
        "oracle_w": as_float64(field_of(data, "oracle_w")).float(),
        "G": as_float64(field_of(data, "G")).float(),
        "c": as_float64(field_of(data, "c")).float(),
        "d": as_float64(field_of(data, "d")).float(),
    }
    n = out["features"].shape[0]
    for k, v in out.items():
        if v.shape[0] != n:
            raise ValueError(f"{k} has {v.shape[0]} rows, features have {n}")
    return out


def supervised_loss(
    out: ShrinkageOutput,
    batch: Mapping[str, torch.Tensor],
    intensity_weight: float = 0.5,
    matrix_weight: float = 0.3,
    uncertainty_weight: float = 0.05,
) -> torch.Tensor:
    """The trainer's objective (the composite-loss weights α = 0.5, β = 0.3 of the
    specification's loss-function section, see :mod:`shrinklab.training.loop`): ``intensity_mse(w, w*)`` + normalised Frobenius loss of
    ``w`` + Gaussian NLL of the uncertainty head, here on the (detached) error of the
    intensity ``α`` — the quantity the ensembles calibrate."""
    w = out.intensities
    loss = intensity_weight * intensity_mse(w, batch["oracle_w"])
    loss = loss + matrix_weight * quadratic_frobenius(
        w, batch["G"], batch["c"], batch["d"], normalise=True
    )
    err2 = (out.alpha - batch["oracle_w"].sum(1)).detach() ** 2
    return loss + uncertainty_weight * gaussian_nll(out.log_var, err2)


def fine_tune(
    model: nn.Module,
    data: Any,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    loss_fn: Callable[[ShrinkageOutput, Mapping[str, torch.Tensor]], torch.Tensor] | None = None,
    extra_targets: Mapping[str, torch.Tensor] | None = None,
    logger: Any = None,
) -> list[float]:
    """Short Adam fine-tuning of ``model`` on ``data`` (fields ``features, oracle_w, G,
    c, d``), in place; returns the mean training loss per epoch.

    The optimisation pass is :func:`shrinklab.training.epochs.run_epoch` (the trainer's inner
    loop) with the pluggable per-batch ``loss_fn``; constant learning rate, no gradient
    clipping, no early stopping, one seeded order per epoch from a single generator.

    ``loss_fn(out, batch)`` defaults to :func:`supervised_loss`; ``extra_targets``
    (tensors with one row per sample) are sliced into each batch under their keys.
    Deterministic for a fixed ``seed`` on CPU. Pruning masks (forward pre-hooks)
    stay in force during training. ``logger`` (a
    :class:`~shrinklab.training.monitor.RunLogger`) receives ``train/loss``, ``lr`` and
    the mean gradient norm per epoch.
    """
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise ValueError("need epochs >= 0, batch_size >= 1, lr > 0")
    tensors = _training_tensors(data)
    for k, v in (extra_targets or {}).items():
        if v.shape[0] != tensors["features"].shape[0]:
            raise ValueError(f"extra target {k!r} has {v.shape[0]} rows")
        tensors[k] = v.detach().float()
    loss_fn = loss_fn or supervised_loss
    n = tensors["features"].shape[0]

    def batch_loss(_step: int, idx: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        batch = {k: v[idx] for k, v in tensors.items()}
        loss = loss_fn(model(batch["features"]), batch)
        return loss, float(loss.detach()) * idx.numel(), idx.numel()

    params = [p for p in model.parameters() if p.requires_grad]
    step_fn = OptimizerStep(make_optimizer(params, TrainConfig(lr=lr, weight_decay=0.0)), params)
    gen = torch.Generator().manual_seed(int(seed))
    history: list[float] = []
    was_training = model.training
    model.train()
    try:
        for _ in range(int(epochs)):
            order = torch.randperm(n, generator=gen)
            ep = run_epoch(order, batch_loss, step_fn, batch_size=batch_size)
            history.append(ep.loss_sum / max(ep.seen, 1))
            if logger is not None:
                logger.log_metric("train/loss", history[-1])
                logger.log_metric("lr", lr)
                if ep.grad_norms:
                    logger.log_metric(
                        "grad_norm/mean", float(torch.stack(ep.grad_norms).float().mean())
                    )
                logger.next_step()
    finally:
        model.train(was_training)
    return history


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over the prunable ``Linear`` weights."""
    layers = prunable_layers(model)
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / max(total, 1)


def magnitude_prune(
    model: nn.Module,
    amount: float,
    *,
    fine_tune_data: Any = None,
    fine_tune_epochs: int = 3,
    seed: int = 0,
    teacher: Any = None,
    **fine_tune_kw: Any,
) -> nn.Module:
    """A pruned copy of ``model``: in every prunable ``Linear`` layer the
    ``round(amount · n_weights)`` smallest-|w| weights are set to zero (L1
    unstructured), then (optionally) fine-tuned for ``fine_tune_epochs`` with the
    masks in place — on the oracle labels (:func:`supervised_loss`) or, given a
    ``teacher``, by distillation (:func:`distillation_loss`) — then made permanent
    with ``prune.remove``. Biases and normalisation parameters are kept."""
    a = float(amount)
    if not 0.0 <= a < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model)
    layers = prunable_layers(pruned)
    if not layers:
        raise ValueError("model has no prunable Linear layers")
    for _, m in layers:
        prune.l1_unstructured(m, "weight", amount=a)
    if fine_tune_data is not None and fine_tune_epochs > 0:
        if teacher is not None:
            fine_tune_kw.setdefault("loss_fn", distillation_loss())
            fine_tune_kw.setdefault("extra_targets", teacher_targets(teacher, fine_tune_data))
        fine_tune(pruned, fine_tune_data, epochs=fine_tune_epochs, seed=seed, **fine_tune_kw)
    for _, m in layers:
        prune.remove(m, "weight")
    pruned.eval()
    return pruned


def pruning_sweep(
    model: nn.Module,
    amounts: Sequence[float],
    eval_data: Any,
    *,
    fine_tune_data: Any = None,
    fine_tune_epochs: int = 3,
    seed: int = 0,
    teacher: Any = None,
    monitor: str | Path | None = None,
    run: str = "compress/prune",
) -> tuple[pd.DataFrame, dict[float, nn.Module]]:
    """Prune at each sparsity in ``amounts`` (each from the original ``model``), fine-tune
    on ``fine_tune_data`` (by distillation from ``teacher`` when given), evaluate on
    ``eval_data``. Returns a table (``amount``, ``sparsity``, ``nonzero_parameters``,
    ``prial``) and the pruned models. With ``monitor`` (a reports folder) each
    fine-tuning logs the run ``<run>_<percent>`` there (e.g. ``compress/prune_50``;
    see :func:`fine_tune`)."""
    rows, models = [], {}
    targets = (
        teacher_targets(teacher, fine_tune_data)
        if teacher is not None and fine_tune_data is not None
        else None
    )
    for a in amounts:
        kw: dict[str, Any] = {}
        if targets is not None:
            kw = {"loss_fn": distillation_loss(), "extra_targets": targets}
        trains = fine_tune_data is not None and fine_tune_epochs > 0
        with run_logger(f"{run}_{round(100 * a)}", monitor if trains else None) as log:
            pm = magnitude_prune(
                model,
                a,
                fine_tune_data=fine_tune_data,
                fine_tune_epochs=fine_tune_epochs,
                seed=seed,
                logger=log,
                **kw,
            )
        w = predict_numpy(pm, field_of(eval_data, "features")).intensities
        rows.append(
            {
                "amount": float(a),
                "sparsity": sparsity(pm),
                "nonzero_parameters": count_parameters(pm, nonzero=True),
                "prial": prial_of(w, eval_data),
            }
        )
        models[float(a)] = pm
    return pd.DataFrame(rows), models


# ------------------------------------------------------------------ distillation
def teacher_targets(teacher: Any, data: Any) -> dict[str, torch.Tensor]:
    """The teacher's intensities and log-variances on ``data``'s features, as extra
    fine-tuning targets (``teacher_w (N, K)``, ``teacher_log_var (N,)``)."""
    out = predict_numpy(teacher, field_of(data, "features"))
    return {"teacher_w": out.intensities.float(), "teacher_log_var": out.log_var.float()}


def distillation_loss(
    teacher_weight: float = 0.7,
    matrix_weight: float = 0.3,
    log_var_weight: float = 0.1,
) -> Callable[[ShrinkageOutput, Mapping[str, torch.Tensor]], torch.Tensor]:
    """Knowledge-distillation objective (Hinton et al. 2015) for :func:`fine_tune`:
    ``teacher_weight · mse(w, w_teacher) + (1 − teacher_weight) · mse(w, w*) +
    matrix_weight · normalised Frobenius loss(w) + log_var_weight ·
    mse(log_var, log_var_teacher)``; needs the :func:`teacher_targets` in the batch."""
    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must be in [0, 1], got {teacher_weight}")
    if matrix_weight < 0 or log_var_weight < 0:
        raise ValueError("matrix_weight and log_var_weight must be >= 0")

    def loss_fn(out: ShrinkageOutput, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        w = out.intensities
        loss = teacher_weight * intensity_mse(w, batch["teacher_w"])
        loss = loss + (1 - teacher_weight) * intensity_mse(w, batch["oracle_w"])
        if matrix_weight:
            loss = loss + matrix_weight * quadratic_frobenius(
                w, batch["G"], batch["c"], batch["d"], normalise=True
            )
        return loss + log_var_weight * (out.log_var - batch["teacher_log_var"]).square().mean()

    return loss_fn


def _gate_of(teacher: Any) -> str:
    """The output gate of ``teacher`` (a network, an ensemble's first member, or the
    general model of a gated model), so a student imitates it with the same output
    map; ``"softmax"`` when it has none."""
    net = getattr(teacher, "general", teacher)
    net = (getattr(net, "members", None) or [net])[0]
    config = getattr(net, "config", None)
    return str(config.get("gate", "softmax")) if isinstance(config, dict) else "softmax"


def distill(
    teacher: Any,
    data: Any,
    *,
    student_config: Mapping[str, Any] | None = None,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 256,
    seed: int = 0,
    teacher_weight: float = 0.7,
    matrix_weight: float = 0.3,
    log_var_weight: float = 0.1,
    logger: Any = None,
) -> MLShrinkageNetwork:
    """Train a small student network to imitate ``teacher`` (Hinton et al. 2015) with
    :func:`distillation_loss` (the student also learns the teacher's calibrated
    uncertainty). The student defaults to ``hidden_dims=(32, 16)``, no dropout and the
    teacher's output gate (softmax or sparsemax); its output biases start at the oracle
    priors and the teacher's mean log-variance. Deterministic for a fixed ``seed`` on CPU.
    ``logger``: see :func:`fine_tune` (e.g. ``RunLogger("compress/distill")``).
    """
    loss_fn = distillation_loss(teacher_weight, matrix_weight, log_var_weight)
    feats = torch.as_tensor(np.asarray(field_of(data, "features")), dtype=torch.float32)
    targets = teacher_targets(teacher, data)
    cfg = {
        "input_dim": feats.shape[1],
        "num_targets": targets["teacher_w"].shape[1],
        "hidden_dims": (32, 16),
        "dropout": 0.0,
        "input_dropout": 0.0,
        "gate": _gate_of(teacher),
    }
    cfg.update(dict(student_config or {}))
    torch.manual_seed(int(seed))
    student = MLShrinkageNetwork(**cfg)

    a0, pi0 = output_priors(field_of(data, "oracle_w"))
    student.set_output_priors(a0, pi0, float(targets["teacher_log_var"].mean()))
    fine_tune(
        student,
        data,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        loss_fn=loss_fn,
        extra_targets=targets,
        logger=logger,
    )
    return student.eval()
