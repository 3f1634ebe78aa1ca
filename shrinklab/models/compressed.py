"""Compression of a trained shrinkage model into a small, fast deployable one (the
specification's post-training "Model Compression" step).

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
  :class:`~shrinklab.models.network.MLShrinkageNetwork` student on the teacher's (ensemble's)
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
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.models.network import ShrinkageOutput
from shrinklab.models.registry import member_kind, model_class, save_model

__all__ = [
    "ExportedModel",
    "OnnxModel",
    "QuantizedNetwork",
    "count_parameters",
    "export_onnx",
    "export_program",
    "model_file_size",
    "onnx_parity",
    "quantize_int8",
]


OUTPUT_NAMES = ("alpha", "weights", "log_var")


# ----------------------------------------------------------------------- pruning
def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``Linear`` layers outside the attention block (whose ``out_proj`` weight is used
    functionally by ``MultiheadAttention`` and must stay a plain parameter)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and "attention" not in name.split(".")
    ]


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
        names = {id(m) for _, m in prunable_layers(base)}
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


def quantize_int8(model: nn.Module, mode: str = "weight_only") -> QuantizedNetwork:
    """Int8-quantized copy of ``model`` (float32) with torchao; see :class:`QuantizedNetwork`."""
    base = copy.deepcopy(model).float().eval()
    return QuantizedNetwork(base, mode=mode)


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
    ``log_var (B,)``, using the ``torch.export``-based exporter of ``torch.onnx``. The
    exporter's stack traces (absolute source paths) are dropped, so the file does not
    depend on where the repository is checked out."""
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
    _drop_stack_traces(path)
    return path


_STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


def _drop_stack_traces(path: Path) -> None:
    """Remove the exporter's per-node Python stack traces from the ONNX file at ``path``:
    they hold the absolute paths of the source files, so the same model exported from two
    checkouts would differ byte for byte (a fresh clone's ``make repro`` would not
    reproduce ``models/onnx``). Nothing that onnxruntime reads is touched."""
    import onnx

    proto = onnx.load(str(path))
    for graph in [proto.graph, *proto.functions]:
        for node in graph.node:
            keep = [p for p in node.metadata_props if p.key != _STACK_TRACE_KEY]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
    onnx.save(proto, str(path))


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
