"""Compression of a trained shrinkage model into a small, fast deployable one (spec §7,
"Model Compression").

* **Pruning** — :func:`magnitude_prune` removes the smallest-magnitude weights of every
  ``Linear`` layer (``torch.nn.utils.prune.l1_unstructured``, exactly
  ``round(s · n)`` per layer), fine-tunes briefly with the masks in place, then makes
  the pruning permanent (``prune.remove``); :func:`pruning_sweep` runs it over a list
  of sparsities [Han, Pool, Tran & Dally, "Learning both weights and connections for
  efficient neural networks", NeurIPS 2015; Zhu & Gupta, "To prune, or not to prune",
  2017].
* **Int8 quantization** — :func:`quantize_int8` with ``torchao``
  (``Int8WeightOnlyConfig``: int8 weights with per-channel scales, float activations;
  or ``Int8DynamicActivationInt8WeightConfig``) on the ``Linear`` layers outside the
  attention block; ``torch.ao.quantization`` is deprecated in this torch. The result,
  :class:`QuantizedNetwork`, is a registered model kind, so ``save_model`` /
  ``load_model`` store the int8 tensors in one file [Jacob et al., "Quantization and
  training of neural networks for efficient integer-arithmetic-only inference",
  CVPR 2018].
* **Knowledge distillation** — :func:`distill` trains a small
  :class:`~shrinklab.network.MLShrinkageNetwork` student on the teacher's (ensemble's)
  intensities and log-variances plus the oracle intensities [Hinton, Vinyals & Dean,
  "Distilling the knowledge in a neural network", 2015].
* **Inference formats** — :func:`export_onnx` (``torch.onnx.export``, dynamo
  exporter, one self-contained file) run by :class:`OnnxModel` through
  ``onnxruntime``, with :func:`onnx_parity`; :func:`export_program`
  (``torch.export``) wrapped by :class:`ExportedModel`.
* **Trade-off** — :func:`tradeoff_table` (parameters, file size, latency per
  estimate at batch 1 and 1,024 on this CPU, PRIAL, fraction of the ensemble's PRIAL
  gain over Ledoit–Wolf kept) and :func:`choose_deployable`.

Every model here has ``predict(features, regime=None) -> ShrinkageOutput``.
"""

from __future__ import annotations

import copy
import io
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune

from shrinklab.ensemble import (
    _as_f64,
    _get,
    member_kind,
    model_class,
    predict_numpy,
    prial_of,
    quadratic_loss,
)
from shrinklab.losses import gaussian_nll, intensity_mse, quadratic_frobenius
from shrinklab.network import MLShrinkageNetwork, ShrinkageOutput, register_model_kind, save_model
from shrinklab.train import OptimizerStep, TrainConfig, make_optimizer, run_epoch

__all__ = [
    "ExportedModel",
    "OnnxModel",
    "QuantizedNetwork",
    "choose_deployable",
    "count_parameters",
    "distill",
    "distillation_loss",
    "export_onnx",
    "export_program",
    "feature_latency",
    "fine_tune",
    "latency",
    "magnitude_prune",
    "model_file_size",
    "onnx_parity",
    "pruning_sweep",
    "quantize_int8",
    "sparsity",
    "supervised_loss",
    "teacher_targets",
    "tradeoff_table",
]

OUTPUT_NAMES = ("alpha", "weights", "log_var")


# ------------------------------------------------------------------ fine-tuning
def _training_tensors(data: Any) -> dict[str, torch.Tensor]:
    out = {
        "features": torch.as_tensor(np.asarray(_get(data, "features")), dtype=torch.float32),
        "oracle_w": _as_f64(_get(data, "oracle_w")).float(),
        "G": _as_f64(_get(data, "G")).float(),
        "c": _as_f64(_get(data, "c")).float(),
        "d": _as_f64(_get(data, "d")).float(),
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
    """The trainer's objective (spec composite weights α = 0.5, β = 0.3, see
    :mod:`shrinklab.train`): ``intensity_mse(w, w*)`` + normalised Frobenius loss of
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
) -> list[float]:
    """Short Adam fine-tuning of ``model`` on ``data`` (fields ``features, oracle_w, G,
    c, d``), in place; returns the mean training loss per epoch.

    The optimisation pass is :func:`shrinklab.train.run_epoch` (the trainer's inner
    loop) with the pluggable per-batch ``loss_fn``; constant learning rate, no gradient
    clipping, no early stopping, one seeded order per epoch from a single generator.

    ``loss_fn(out, batch)`` defaults to :func:`supervised_loss`; ``extra_targets``
    (tensors with one row per sample) are sliced into each batch under their keys.
    Deterministic for a fixed ``seed`` on CPU. Pruning masks (forward pre-hooks)
    stay in force during training.
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
    finally:
        model.train(was_training)
    return history


# ----------------------------------------------------------------------- pruning
def _prunable(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``Linear`` layers outside the attention block (whose ``out_proj`` weight is used
    functionally by ``MultiheadAttention`` and must stay a plain parameter)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and "attention" not in name.split(".")
    ]


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over the prunable ``Linear`` weights."""
    layers = _prunable(model)
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
    layers = _prunable(pruned)
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
) -> tuple[pd.DataFrame, dict[float, nn.Module]]:
    """Prune at each sparsity in ``amounts`` (each from the original ``model``), fine-tune
    on ``fine_tune_data`` (by distillation from ``teacher`` when given), evaluate on
    ``eval_data``. Returns a table (``amount``, ``sparsity``, ``nonzero_parameters``,
    ``prial``) and the pruned models."""
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
        pm = magnitude_prune(
            model,
            a,
            fine_tune_data=fine_tune_data,
            fine_tune_epochs=fine_tune_epochs,
            seed=seed,
            **kw,
        )
        w = predict_numpy(pm, _get(eval_data, "features")).intensities
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


# ------------------------------------------------------------------ quantization
QUANT_MODES = ("weight_only", "dynamic")


def _torchao_quantization() -> Any:
    """``torchao.quantization``, imported without its import-time noise on CPU (its
    CUDA-only kernels "fail to load"; a torch pytree deprecation notice)."""
    import importlib
    import logging

    names = ("torchao", "torch.utils._pytree")
    levels = [logging.getLogger(n).level for n in names]
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        return importlib.import_module("torchao.quantization")
    except ImportError as exc:
        raise ImportError(
            "int8 quantization needs torchao (pip install torchao); "
            "torch.ao.quantization is deprecated in this torch"
        ) from exc
    finally:
        for n, lv in zip(names, levels):
            logging.getLogger(n).setLevel(lv)


def _torchao_config(mode: str) -> Any:
    tq = _torchao_quantization()
    if mode == "weight_only":
        return tq.Int8WeightOnlyConfig()
    if mode == "dynamic":
        return tq.Int8DynamicActivationInt8WeightConfig()
    raise ValueError(f"mode must be one of {QUANT_MODES}, got {mode!r}")


_QDATA, _SCALE, _ZERO = "_int8", "_scale", "_zero_point"


class QuantizedNetwork(nn.Module):
    """Int8 (torchao) version of a float model: ``Linear`` weights stored as int8 with
    per-output-channel scales. Registered as model kind ``"int8"``; the config holds
    the float model's kind and config and the quantization ``mode``."""

    model_kind = "int8"

    def __init__(self, base: nn.Module, mode: str = "weight_only") -> None:
        super().__init__()
        if mode not in QUANT_MODES:
            raise ValueError(f"mode must be one of {QUANT_MODES}, got {mode!r}")
        self.base_kind = member_kind(base)
        self._base_config = copy.deepcopy(dict(base.config))
        self.mode = mode
        self.base = base
        config = _torchao_config(mode)
        names = {id(m) for _, m in _prunable(base)}
        _torchao_quantization().quantize_(
            self.base,
            config,
            filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and id(m) in names,
        )
        self.base.eval()
        self.register_state_dict_post_hook(QuantizedNetwork._state_dict_to_plain)
        self.register_load_state_dict_pre_hook(QuantizedNetwork._plain_to_int8)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "input_dim": self._base_config.get("input_dim"),
            "num_targets": self._base_config.get("num_targets"),
            "base_kind": self.base_kind,
            "base_config": copy.deepcopy(self._base_config),
            "mode": self.mode,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QuantizedNetwork:
        base = model_class(config["base_kind"]).from_config(config["base_config"])
        return cls(base, mode=config["mode"])

    # The state_dict stores each int8 weight as plain tensors ("<name>_int8",
    # "<name>_scale", "<name>_zero_point"), not as a torchao tensor subclass, so that a
    # saved file loads with ``torch.load(weights_only=True)`` before torchao is
    # imported (load_model reads the file to find its kind); also inside an ensemble.
    def _int8_params(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if hasattr(p, "qdata")}

    @staticmethod
    def _state_dict_to_plain(
        module: QuantizedNetwork, state_dict: dict[str, Any], prefix: str, _meta: Any
    ) -> None:
        for name in module._int8_params():
            key = prefix + name
            t = state_dict.pop(key)
            state_dict[key + _QDATA] = t.qdata
            state_dict[key + _SCALE] = t.scale
            if getattr(t, "zero_point", None) is not None:
                state_dict[key + _ZERO] = t.zero_point

    @staticmethod
    def _plain_to_int8(
        module: QuantizedNetwork, state_dict: dict[str, Any], prefix: str, *_args: Any
    ) -> None:
        for name, param in module._int8_params().items():
            key = prefix + name
            if key + _QDATA not in state_dict:
                continue  # a missing weight is reported by the default loader
            with torch.no_grad():
                param.qdata.copy_(state_dict.pop(key + _QDATA))
                param.scale.copy_(state_dict.pop(key + _SCALE))
                if key + _ZERO in state_dict:
                    param.zero_point.copy_(state_dict.pop(key + _ZERO))
            state_dict[key] = param  # copied onto itself by the default loader

    def forward(self, x: torch.Tensor, regime: Any = None) -> ShrinkageOutput:
        return self.base(x, regime)

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        self.eval()
        return self.base.predict(features, regime)


register_model_kind(QuantizedNetwork.model_kind, QuantizedNetwork)


def quantize_int8(model: nn.Module, mode: str = "weight_only") -> QuantizedNetwork:
    """Int8-quantized copy of ``model`` (float32) with torchao; see :class:`QuantizedNetwork`."""
    base = copy.deepcopy(model).float().eval()
    return QuantizedNetwork(base, mode=mode)


# ------------------------------------------------------------------ distillation
def teacher_targets(teacher: Any, data: Any) -> dict[str, torch.Tensor]:
    """The teacher's intensities and log-variances on ``data``'s features, as extra
    fine-tuning targets (``teacher_w (N, K)``, ``teacher_log_var (N,)``)."""
    out = predict_numpy(teacher, _get(data, "features"))
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
) -> MLShrinkageNetwork:
    """Train a small student network to imitate ``teacher`` (Hinton et al. 2015) with
    :func:`distillation_loss` (the student also learns the teacher's calibrated
    uncertainty). The student defaults to ``hidden_dims=(32, 16)``, no dropout and the
    teacher's output gate (softmax or sparsemax); its output biases start at the oracle
    priors and the teacher's mean log-variance. Deterministic for a fixed ``seed`` on CPU.
    """
    loss_fn = distillation_loss(teacher_weight, matrix_weight, log_var_weight)
    feats = torch.as_tensor(np.asarray(_get(data, "features")), dtype=torch.float32)
    targets = teacher_targets(teacher, data)
    cfg = {
        "input_dim": feats.shape[1],
        "num_targets": targets["teacher_w"].shape[1],
        "hidden_dims": (32, 16),
        "dropout_rate": 0.0,
        "input_dropout": 0.0,
        "gate": _gate_of(teacher),
    }
    cfg.update(dict(student_config or {}))
    torch.manual_seed(int(seed))
    student = MLShrinkageNetwork(**cfg)
    from shrinklab.network import output_priors

    a0, pi0 = output_priors(_get(data, "oracle_w"))
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
    )
    return student.eval()


# ------------------------------------------------------------ inference formats
class _OutputsAsTuple(nn.Module):
    """``features → (alpha, weights, log_var)`` for exporters (no NamedTuple, no regime)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(x)
        return out.alpha, out.weights, out.log_var


def _example_input(model: nn.Module, batch: int = 8) -> torch.Tensor:
    dim = int(model.config["input_dim"])
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))


def export_onnx(model: nn.Module, path: str | Path, opset: int | None = None) -> Path:
    """Export ``model`` (eval mode, float32, dynamic batch) to a single ONNX file with
    input ``features (B, F)`` and outputs ``alpha (B,)``, ``weights (B, K)``,
    ``log_var (B,)``, using the ``torch.export``-based exporter of ``torch.onnx``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _OutputsAsTuple(copy.deepcopy(model).float().eval()).eval()
    x = _example_input(model)
    kw: dict[str, Any] = {}
    if opset is not None:
        kw["opset_version"] = int(opset)
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (x,),
            str(path),
            dynamo=True,
            input_names=["features"],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
            **kw,
        )
    return path


class _quiet:
    """Silence stdout/stderr chatter of the exporters (progress lines)."""

    def __enter__(self) -> None:
        import contextlib

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()


class OnnxModel:
    """An ONNX shrinkage model run by ``onnxruntime`` (CPU), with ``predict``.

    ``threads`` sets ``intra_op_num_threads`` (0 = onnxruntime's default).
    """

    def __init__(self, path_or_bytes: str | Path | bytes, threads: int = 0) -> None:
        import onnxruntime as ort

        if isinstance(path_or_bytes, bytes):
            self.model_bytes = path_or_bytes
        else:
            path = Path(path_or_bytes)
            if not path.is_file():
                raise ValueError(f"no ONNX file at {path}")
            self.model_bytes = path.read_bytes()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(
            self.model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input_dim = int(self.session.get_inputs()[0].shape[1])

    @property
    def file_size(self) -> int:
        return len(self.model_bytes)

    def num_parameters(self) -> int:
        import onnx

        proto = onnx.load_from_string(self.model_bytes)
        return int(sum(int(np.prod(t.dims)) for t in proto.graph.initializer))

    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        if regime is not None:
            raise ValueError("the ONNX export has no regime input")
        x = features.detach().cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"features must have shape (B, {self.input_dim}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or inf")
        alpha, weights, log_var = self.session.run(list(OUTPUT_NAMES), {"features": x})
        return ShrinkageOutput(
            torch.from_numpy(alpha), torch.from_numpy(weights), torch.from_numpy(log_var)
        )


def onnx_parity(model: nn.Module, onnx_model: OnnxModel, features: Any) -> float:
    """Max absolute difference of the intensities ``α π`` between the torch model
    (float32, eval) and its ONNX export on ``features``."""
    ref = copy.deepcopy(model).float().eval().predict(features).intensities
    got = onnx_model.predict(features).intensities
    return float((ref.double() - got.double()).abs().max())


class ExportedModel:
    """A ``torch.export`` program (saved as ``.pt2``) with ``predict``."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no exported program at {path}")
        self.path = path
        self.program = torch.export.load(str(path))
        self.module = self.program.module()

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size

    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.program.state_dict.values()))

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        if regime is not None:
            raise ValueError("the exported program has no regime input")
        x = features if torch.is_tensor(features) else torch.as_tensor(np.asarray(features))
        x = x.float()
        if x.ndim == 1:
            x = x[None, :]
        return ShrinkageOutput(*self.module(x))


def export_program(model: nn.Module, path: str | Path) -> ExportedModel:
    """``torch.export`` of ``model`` (eval, float32, dynamic batch) saved to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _OutputsAsTuple(copy.deepcopy(model).float().eval()).eval()
    ep = torch.export.export(
        wrapped, (_example_input(model),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(ep, str(path))
    return ExportedModel(path)


# ----------------------------------------------------------------- trade-off table
def count_parameters(model: Any, nonzero: bool = False) -> int:
    """Number of (optionally non-zero) parameters; int8 tensors count their elements."""
    if isinstance(model, OnnxModel | ExportedModel):
        if nonzero:
            return -1
        return model.num_parameters()
    if nonzero:
        total = 0
        for p in model.parameters():
            data = getattr(p, "qdata", p)  # int8 tensors: zero iff the int8 value is zero
            total += int((data.detach() != 0).sum())
        return total
    return int(sum(p.numel() for p in model.parameters()))


def model_file_size(model: Any) -> int:
    """Bytes of the model's deployable file: ``save_model`` output for torch models,
    the ``.onnx`` / ``.pt2`` file for exported ones."""
    if isinstance(model, OnnxModel | ExportedModel):
        return int(model.file_size)
    cfg = model.config
    n_f, n_t = int(cfg["input_dim"]), int(cfg["num_targets"])
    fnames = getattr(model, "feature_names", None) or [f"f{i}" for i in range(n_f)]
    tnames = getattr(model, "target_names", None) or [f"t{i}" for i in range(n_t)]
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(Path(tmp) / "m.pt", model, fnames, tnames)
        return path.stat().st_size


def latency(model: Any, features: Any, batch: int, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time (s) of ``model.predict`` on a batch of ``batch`` rows of
    ``features`` (rows repeated if needed), **per estimate** (divided by ``batch``)."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if x.shape[0] < batch:
        x = x.repeat(math.ceil(batch / x.shape[0]), 1)
    x = x[:batch].contiguous()
    for _ in range(warmup):
        model.predict(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / batch


def feature_latency(X: Any, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time (s) of :func:`shrinklab.features.extract_features` on one
    return window ``X (n, p)`` — the part of an end-to-end estimate that comes before
    the model (pass it to :func:`tradeoff_table` as ``feature_cost_s``)."""
    from shrinklab.features import extract_features

    x = torch.as_tensor(np.asarray(X))
    if x.ndim != 2:
        raise ValueError(f"X must be one (n, p) return window, got shape {tuple(x.shape)}")
    for _ in range(warmup):
        extract_features(x)
    times = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        extract_features(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def tradeoff_table(
    models: Mapping[str, Any],
    eval_set: Any,
    *,
    lw_intensities: Any = None,
    reference: str = "ensemble",
    repeats: int = 50,
    feature_cost_s: float | None = None,
    min_family_size: int = 50,
    min_family_gain: float = 1.0,
) -> pd.DataFrame:
    """Size / speed / accuracy of each model on ``eval_set``.

    Columns: ``parameters``, ``nonzero_parameters`` (−1 where unknown),
    ``file_bytes``, ``latency_b1_s`` and ``latency_b1024_s`` (median seconds per
    estimate, features → intensities, this CPU), ``e2e_b1_s`` (plus
    ``feature_cost_s``, the cost of extracting one sample's features, when given),
    ``prial`` (%, pooled losses), ``norm_prial`` (%, per-world normalised losses,
    :func:`shrinklab.ensemble.normalised_prial_of`) and
    ``gain_kept = (norm_PRIAL − norm_PRIAL_LW) / (norm_PRIAL_ref − norm_PRIAL_LW)``
    where ``lw_intensities (N, K)`` writes Ledoit–Wolf in the family (its intensity
    on the identity target; default: the stored ``eval_set.loss_lw`` of a
    :class:`shrinklab.dataset.TrainingSet`) and ``reference`` names the ensemble row;
    when ``eval_set`` has a ``family`` label per world, ``gain_kept_worst_family`` is
    the smallest ``gain_kept`` computed within one family, over the families with at
    least ``min_family_size`` worlds where the reference beats Ledoit–Wolf by at least
    ``min_family_gain`` normalised-PRIAL points (NaN if there is none).

    The gain is measured on normalised losses so that every world of the evaluation
    set counts the same: pooled over a mixture of worlds, PRIAL follows the few worlds
    with the largest losses, and a compressed model that is better there but worse
    in most worlds would look like it keeps (or beats) the reference's gain.
    """
    if reference not in models:
        raise ValueError(f"reference model {reference!r} not in models {list(models)}")
    feats = np.asarray(_get(eval_set, "features"), dtype=np.float32)
    from shrinklab.estimators import normalised_prial, prial

    G, c = _get(eval_set, "G"), _get(eval_set, "c")
    d = np.asarray(_get(eval_set, "d"), dtype=np.float64)
    fsopt = np.asarray(_get(eval_set, "loss_fsopt"), dtype=np.float64)
    if lw_intensities is not None:
        lw_loss = quadratic_loss(lw_intensities, G, c, d).numpy()
    elif _optional(eval_set, "loss_lw") is not None:
        lw_loss = np.asarray(_optional(eval_set, "loss_lw"), dtype=np.float64)
    else:
        raise ValueError("give lw_intensities, or an eval_set with a loss_lw field")
    family = _optional(eval_set, "family")
    masks = _family_masks(np.asarray(family), len(d), min_family_size) if family is not None else {}

    def by_family(loss: np.ndarray) -> dict[Any, float]:
        return {f: normalised_prial(loss[m], d[m], fsopt[m]) for f, m in masks.items()}

    losses: dict[str, np.ndarray] = {}
    rows = []
    for name, model in models.items():
        w = predict_numpy(model, feats).intensities
        losses[name] = loss = quadratic_loss(w, G, c, d).numpy()
        lat1 = latency(model, feats, 1, repeats=repeats)
        row = {
            "model": name,
            "parameters": count_parameters(model),
            "nonzero_parameters": count_parameters(model, nonzero=True),
            "file_bytes": model_file_size(model),
            "latency_b1_s": lat1,
            "latency_b1024_s": latency(model, feats, 1024, repeats=max(3, repeats // 5)),
            "e2e_b1_s": lat1 + feature_cost_s if feature_cost_s is not None else float("nan"),
            "prial": prial(loss, d, fsopt),
            "norm_prial": normalised_prial(loss, d, fsopt),
        }
        rows.append(row)
    prial_lw, norm_prial_lw = prial(lw_loss, d, fsopt), normalised_prial(lw_loss, d, fsopt)
    table = pd.DataFrame(rows).set_index("model")
    denom = table.loc[reference, "norm_prial"] - norm_prial_lw
    if not denom > 0:
        warnings.warn(
            f"the reference {reference!r} does not beat Ledoit–Wolf (normalised PRIAL "
            f"{table.loc[reference, 'norm_prial']:.2f} vs {norm_prial_lw:.2f}); gain_kept is NaN",
            stacklevel=2,
        )
        table["gain_kept"] = float("nan")
    else:
        table["gain_kept"] = (table["norm_prial"] - norm_prial_lw) / denom
    if family is not None:
        lw_f, ref_f = by_family(lw_loss), by_family(losses[reference])
        fams = [f for f in ref_f if ref_f[f] - lw_f[f] >= min_family_gain]
        table["gain_kept_worst_family"] = [
            min(
                ((by_family(losses[name])[f] - lw_f[f]) / (ref_f[f] - lw_f[f]) for f in fams),
                default=float("nan"),
            )
            for name in table.index
        ]
    table.attrs["prial_lw"] = prial_lw
    table.attrs["norm_prial_lw"] = norm_prial_lw
    table.attrs["reference"] = reference
    return table


def _optional(data: Any, name: str) -> Any:
    """Field ``name`` of a mapping or an object, ``None`` when it has none."""
    return data.get(name) if isinstance(data, Mapping) else getattr(data, name, None)


def _family_masks(family: np.ndarray, n: int, min_size: int) -> dict[Any, np.ndarray]:
    """``{family label: boolean mask}`` of the families with at least ``min_size`` of
    the ``n`` worlds."""
    if family.shape != (n,):
        raise ValueError(f"family labels have shape {family.shape}, expected ({n},)")
    labels = [f for f in np.unique(family) if int((family == f).sum()) >= int(min_size)]
    return {f.item() if hasattr(f, "item") else f: family == f for f in labels}


def choose_deployable(
    table: pd.DataFrame,
    min_gain_kept: float = 0.99,
    reference: str | None = None,
    latency_col: str = "latency_b1_s",
    *,
    max_latency_ratio: float = 0.5,
    size_col: str = "nonzero_parameters",
    max_size_ratio: float = 0.5,
) -> tuple[str, str]:
    """The deployable model: among the models that keep at least ``min_gain_kept`` of
    the reference's gain over Ledoit–Wolf (``gain_kept`` of :func:`tradeoff_table`, on
    per-world normalised losses; and ``gain_kept_worst_family`` too, in every world
    family, when the table has it) *and* are clearly faster than it
    (``latency_col`` at most ``max_latency_ratio`` × the reference's) *or* clearly
    smaller (``size_col`` at most ``max_size_ratio`` × the reference's), the smallest
    by ``size_col`` (ties: higher ``norm_prial``, or ``prial`` without it, then name); the reference itself if there is
    none.

    Latency only gates (a factor of two does not flip with timing noise); size is
    deterministic, and the choice among the eligible models is by size, so rerunning
    the pipeline deploys the same model whenever the latency gate is not needed.
    Without ``size_col`` in the table only latency gates and the fastest eligible
    model is taken. Returns ``(name, reason)``.
    """
    reference = reference or table.attrs.get("reference", "ensemble")
    if reference not in table.index:
        raise ValueError(f"reference {reference!r} not in the table")
    for name, ratio in (
        ("max_latency_ratio", max_latency_ratio),
        ("max_size_ratio", max_size_ratio),
    ):
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {ratio}")
    ref_lat = float(table.loc[reference, latency_col])
    others = table.drop(index=reference)
    keeps_ok = others["gain_kept"] >= min_gain_kept
    where = ""
    if "gain_kept_worst_family" in others:
        # in every family as well: a pooled 99 % can hide a loss in most families that
        # one family where the compressed model is better makes up for
        worst = others["gain_kept_worst_family"]
        keeps_ok &= worst.isna() | (worst >= min_gain_kept)
        where = " overall and in every world family"
    keeps = others[keeps_ok]
    if keeps.empty:
        return reference, (
            f"no compressed model keeps >= {100 * min_gain_kept:.0f}% of the {reference}'s "
            f"PRIAL gain over Ledoit-Wolf{where}; deploying the {reference}"
        )
    faster = keeps[latency_col] <= max_latency_ratio * ref_lat
    smaller = (
        keeps[size_col] <= max_size_ratio * float(table.loc[reference, size_col])
        if size_col in keeps
        else pd.Series(False, index=keeps.index)
    )
    ok = keeps[faster | smaller]
    if ok.empty:
        return reference, (
            f"models keeping >= {100 * min_gain_kept:.0f}% of the gain are neither clearly faster "
            f"(<= {max_latency_ratio:g}x latency) nor clearly smaller (<= {max_size_ratio:g}x "
            f"{size_col}) than the {reference}; deploying the {reference}"
        )
    score = "norm_prial" if "norm_prial" in ok else "prial"
    if size_col in ok:
        order = ok.assign(_name=ok.index).sort_values(
            [size_col, score, "_name"], ascending=[True, False, True]
        )
        best, how = str(order.index[0]), f"the smallest ({size_col})"
    else:
        best, how = str(ok[latency_col].idxmin()), "the fastest"
    lat = float(ok.loc[best, latency_col])
    size = (
        f", {int(ok.loc[best, size_col])} vs {int(table.loc[reference, size_col])} {size_col}"
        if size_col in ok
        else ""
    )
    return best, (
        f"{best}, {how} of the models clearly faster or smaller than the {reference}, keeps "
        f"{100 * float(ok.loc[best, 'gain_kept']):.1f}% of its {score.replace('_', ' ')} gain over "
        f"Ledoit-Wolf ({score} {float(ok.loc[best, score]):.2f} vs "
        f"{float(table.loc[reference, score]):.2f}) "
        f"at {lat / ref_lat:.3f}x its latency "
        f"({lat * 1e6:.1f} vs {ref_lat * 1e6:.1f} us per estimate, batch 1){size}"
    )
