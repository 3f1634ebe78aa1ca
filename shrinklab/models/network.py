"""The shrinkage network: features in, shrinkage intensity and target weights out.

Implements the "ML-Enhanced Shrinkage: Neural Network Architecture" specification
(architecture, layers, activations, initialization, size, implementation) for the estimator family

    Σ̂ = S + Σ_k α π_k (T_k − S),   α = sigmoid(·) ∈ [0, 1],   π = softmax(·) ∈ simplex.

Architecture (all sizes configurable, defaults from the specification):

* input: batch normalisation with running statistics (used at inference) and input
  dropout (default 10 %); an optional learned embedding of a categorical market
  regime is concatenated after normalisation (index ``n_regimes`` means "unknown").
* hidden blocks ``Linear → LeakyReLU(0.2) → BatchNorm (post-activation) → Dropout``
  with decreasing widths ``(128, 64, 32)``; dropout 30 % on every block but the last
  (the "decision" layer), as the specification sets it (the pipeline departs from
  both dropout rates: ``pretrain.dropout`` and ``input_dropout`` in params.yaml,
  ``docs/decisions/0004-dropout-0.1.md``); a
  residual skip connection around every block (identity when the widths agree, a
  bias-free linear projection otherwise).
* optional self-attention over feature tokens (each scalar feature is embedded as a
  token ``x_f · e_f + b_f``, one multi-head attention layer, mean-pooled) whose pooled
  context joins the input of the decision layer; :meth:`MLShrinkageNetwork.attention_weights`
  returns the attention map as a feature-importance diagnostic.
* heads: intensity ``α = sigmoid`` ``(B,)``, target weights ``π = softmax`` over the K
  targets ``(B, K)`` (``K = 1`` gives ``π ≡ 1``), and ``log_var`` ``(B,)``, the log of the
  predicted variance of the intensity error (uncertainty head).
* optional *anchored* output (``anchors``): the intensities are a gated convex
  combination ``w = g_0 · απ + Σ_j g_j c_j`` (``g = softmax``, or :func:`sparsemax` with
  ``gate="sparsemax"``, which can put exactly zero on an expert) of the free head and of
  the classical estimators of the family, read from the raw input features
  (``c = ρ̂_LW e_identity``, ``ρ̂_OAS e_identity``, ``ρ̂_CC e_cc``, ``ρ̂_SF e_sf``,
  ``e_qis``, and the multi-target point ``Σ_k mt_k e_k`` of the ``mt_<target>``
  features). Each classical estimator is then one corner the network can reach
  exactly, so it can match the best of them where that is optimal and move between
  them elsewhere — a mixture of experts [Jacobs, Jordan, Nowlan & Hinton, Neural
  Computation 3, 1991] whose experts are Ledoit–Wolf (2004), OAS (Chen et al. 2010),
  constant correlation (Ledoit & Wolf 2004), single index (Ledoit & Wolf 2003), QIS
  (Ledoit & Wolf 2022) and multi-target shrinkage over identity, constant
  correlation, single factor and QIS (Lancewicki & Aladjem 2014;
  :func:`shrinklab.core.estimators.multi_target_weights`). An anchor is a
  ``[feature, target, candidate]`` triple; a candidate sums its anchors. The outputs
  are still ``α = Σ_k w_k`` and ``π = w / α``.

Initialisation: He (Kaiming, LeakyReLU slope 0.2) for the hidden layers [He et al.,
"Delving deep into rectifiers", ICCV 2015], Glorot uniform for the heads [Glorot &
Bengio, AISTATS 2010] with biases set from empirical priors by
:meth:`MLShrinkageNetwork.set_output_priors` (bias of α = logit of the mean oracle
intensity, bias of π = log of the mean oracle target weights), and optionally from
pretrained (synthetic-data) weights: :func:`load_pretrained_weights`,
:meth:`MLShrinkageNetwork.from_pretrained`.

Persistence: :func:`save_model` / :func:`load_model` write one ``torch.save`` file with
``kind``, ``config``, ``state_dict``, ``feature_names``, ``feature_schema``,
``target_names`` and ``extra``; other model kinds (ensembles, compressed models)
register themselves with :func:`register_model_kind`.

Batch normalisation layers are :class:`SyncableBatchNorm1d`: plain ``BatchNorm1d``
(same ``state_dict``) that, while :attr:`SyncableBatchNorm1d.sync` is on and
``torch.distributed`` is initialised, computes batch statistics over all processes
(differentiably, with any backend, including gloo on CPU where ``nn.SyncBatchNorm``
is not supported). The trainer switches it on under DistributedDataParallel.

Over 600 lines on purpose: one class, the network and its anchored output head,
whose forward pass reads best in one place; persistence and the registry live in
:mod:`shrinklab.models.persistence` and :mod:`shrinklab.models.registry`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from shrinklab.core.features import CLASSICAL_POINTS, FEATURE_NAMES, MULTI_TARGET_SOURCES
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.models.persistence import load_model_payload, load_pretrained_weights

__all__ = [
    "MLShrinkageNetwork",
    "ShrinkageOutput",
    "classical_anchors",
    "resolve_anchors",
    "SyncableBatchNorm1d",
    "output_priors",
    "eval_mode",
    "gate_map",
    "sparsemax",
    "predict_numpy",
]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the ``with`` block, its training mode restored after
    (the prediction helpers of every model kind use it). A model already entirely in
    eval mode (as every loaded model is) is left alone: no walk setting the mode of each
    submodule twice per call."""
    if not any(m.training for m in model.modules()):  # already in eval mode: nothing to toggle
        yield model
        return
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean projection of ``z`` onto the probability simplex along ``dim``
    [Martins & Astudillo, "From softmax to sparsemax: a sparse model of attention and
    multi-label classification", ICML 2016]: ``max(z − τ, 0)`` with the threshold ``τ``
    that makes the entries sum to 1. Unlike softmax it returns exact zeros; it is
    piecewise linear, and autograd through this form gives its Jacobian
    ``diag(s) − s sᵀ/|s|`` on the support ``s``."""
    z_sorted, _ = torch.sort(z, dim=dim, descending=True)
    cumsum = z_sorted.cumsum(dim) - 1.0
    k = torch.arange(1, z.shape[dim] + 1, device=z.device, dtype=z.dtype)
    shape = [1] * z.ndim
    shape[dim] = -1
    k = k.view(shape)
    support = (k * z_sorted > cumsum).to(z.dtype)  # 1 + k z_(k) > Σ_{j≤k} z_(j)
    k_z = support.sum(dim=dim, keepdim=True)
    tau = cumsum.gather(dim, k_z.long() - 1) / k_z
    return (z - tau).clamp_min(0.0)


_GATES = {"softmax": lambda z: torch.softmax(z, dim=-1), "sparsemax": sparsemax}


def gate_map(gate: str):
    """The map from gate logits to the simplex named ``gate`` (``"softmax"`` or ``"sparsemax"``)."""
    return _GATES[_check_gate(gate)]


def _check_gate(gate: str) -> str:
    if gate not in _GATES:
        raise ValueError(f"gate must be one of {sorted(_GATES)}, got {gate!r}")
    return str(gate)


class ShrinkageOutput(NamedTuple):
    """Network output: intensity ``alpha (B,)``, target weights ``weights (B, K)``
    (rows on the simplex) and ``log_var (B,)`` (log predicted variance)."""

    alpha: torch.Tensor
    weights: torch.Tensor
    log_var: torch.Tensor

    @property
    def intensities(self) -> torch.Tensor:
        """Per-target intensities ``w_k = α π_k``, shape ``(B, K)``."""
        return self.alpha[:, None] * self.weights


class SyncableBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics can be synchronised across processes.

    With ``sync = False`` (default) or without an initialised process group it is
    exactly ``nn.BatchNorm1d``. With ``sync = True`` in training mode, the batch mean
    and (biased) variance are computed over the union of the local batches of all
    ranks with a differentiable all-reduce, so a DDP run normalises like a single
    process that sees the global batch [Ioffe & Szegedy, ICML 2015].
    """

    sync: bool = False

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch name)
        if not (self.training and self.sync and _dist_ready()):
            return super().forward(input)
        import torch.distributed as dist
        import torch.distributed.nn.functional as dist_fn

        x = input.float()
        local = torch.cat(
            [
                x.sum(0),
                (x * x).sum(0),
                torch.tensor([x.shape[0]], dtype=x.dtype, device=x.device),
            ]
        )
        total = dist_fn.all_reduce(local, op=dist.ReduceOp.SUM)
        c = x.shape[1]
        count = total[2 * c]
        mean = total[:c] / count
        var = (total[c : 2 * c] / count - mean * mean).clamp_min(0.0)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                n = float(count.item())
                unbiased = var * (n / max(n - 1.0, 1.0))
                self.num_batches_tracked.add_(1)
                m = self.momentum
                if m is None:  # cumulative average, as in BatchNorm
                    m = 1.0 / float(self.num_batches_tracked.item())
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        return out.to(input.dtype)


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _ResidualBlock(nn.Module):
    """``Linear → LeakyReLU → BatchNorm → (+ skip) → Dropout``."""

    def __init__(self, d_in: int, d_out: int, slope: float, dropout: float, residual: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.act = nn.LeakyReLU(slope)
        self.norm = SyncableBatchNorm1d(d_out)
        self.dropout = nn.Dropout(dropout)
        if not residual:
            self.skip: nn.Module | None = None
        elif d_in == d_out:
            self.skip = nn.Identity()
        else:
            self.skip = nn.Linear(d_in, d_out, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.norm(self.act(self.linear(h)))
        if self.skip is not None:
            z = z + self.skip(h)
        return self.dropout(z)


class _FeatureAttention(nn.Module):
    """Self-attention over feature tokens: token ``f`` is ``x_f e_f + b_f`` (dim d);
    one multi-head attention layer with a residual and layer norm, mean-pooled
    [Vaswani et al., NeurIPS 2017; the per-feature tokeniser follows Gorishniy et
    al., "Revisiting deep learning models for tabular data", NeurIPS 2021]."""

    def __init__(self, n_features: int, dim: int, heads: int) -> None:
        super().__init__()
        self.token_weight = nn.Parameter(torch.empty(n_features, dim))
        self.token_bias = nn.Parameter(torch.empty(n_features, dim))
        nn.init.normal_(self.token_weight, std=1.0 / math.sqrt(dim))
        nn.init.normal_(self.token_bias, std=1.0 / math.sqrt(dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = x[:, :, None] * self.token_weight + self.token_bias  # (B, F, d)
        ctx, weights = self.attn(
            tokens, tokens, tokens, need_weights=need_weights, average_attn_weights=True
        )
        pooled = self.norm(tokens + ctx).mean(dim=1)
        return pooled, weights


class MLShrinkageNetwork(nn.Module):
    """Feed-forward shrinkage network of the specification (see module docstring).

    Parameters
    ----------
    input_dim : number of features F.
    num_targets : number of shrinkage targets K (``1`` is allowed: ``π ≡ 1``).
    hidden_dims : widths of the hidden blocks (specification: 128-256, 64-128, 32-64).
    dropout : dropout after each hidden block except the last (specification: 30 %).
    input_dropout : dropout on the normalised input (specification: 10-20 %).
    negative_slope : LeakyReLU slope (specification: 0.2).
    residual : residual skip connections around every hidden block.
    use_attention, attention_dim, attention_heads : optional feature self-attention.
    n_regimes, regime_dim : optional market-regime embedding (0 = off).
    anchors : ``"auto"`` (default) anchors the output on the classical estimators when
        the input is the full feature vector of :mod:`shrinklab.core.features` and the
        targets are :data:`shrinklab.core.targets.TARGET_NAMES` (off otherwise); ``None`` is
        off; or an explicit list of ``[feature_index, target_index]`` pairs, where
        ``feature_index = -1`` is a fixed weight 1 (e.g. pure QIS). See the module
        docstring.
    gate : map from the gate's logits to the simplex, ``"softmax"`` (default) or
        ``"sparsemax"`` (:func:`sparsemax`: exact zeros, so the output can be exactly one
        classical estimator, e.g. pure QIS, instead of keeping a few per cent on
        targets that are far off in this world).
    """

    model_kind = "mlp"

    def __init__(
        self,
        input_dim: int,
        num_targets: int = 5,
        hidden_dims: Sequence[int] = (128, 64, 32),
        dropout: float = 0.3,
        input_dropout: float = 0.1,
        negative_slope: float = 0.2,
        residual: bool = True,
        use_attention: bool = False,
        attention_dim: int = 16,
        attention_heads: int = 2,
        n_regimes: int = 0,
        regime_dim: int = 4,
        anchors: str | Sequence[Sequence[int]] | None = "auto",
        gate: str = "softmax",
    ) -> None:
        super().__init__()
        hidden_dims = tuple(int(h) for h in hidden_dims)
        if int(input_dim) < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        if int(num_targets) < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}")
        if len(hidden_dims) < 1 or min(hidden_dims) < 1:
            raise ValueError(f"hidden_dims must be non-empty positive widths, got {hidden_dims}")
        for name, rate in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        if int(n_regimes) < 0:
            raise ValueError(f"n_regimes must be >= 0, got {n_regimes}")
        if use_attention and int(attention_dim) % int(attention_heads) != 0:
            raise ValueError(
                f"attention_dim ({attention_dim}) must be divisible by attention_heads "
                f"({attention_heads})"
            )
        self._config: dict[str, Any] = {
            "input_dim": int(input_dim),
            "num_targets": int(num_targets),
            "hidden_dims": list(hidden_dims),
            "dropout": float(dropout),
            "input_dropout": float(input_dropout),
            "negative_slope": float(negative_slope),
            "residual": bool(residual),
            "use_attention": bool(use_attention),
            "attention_dim": int(attention_dim),
            "attention_heads": int(attention_heads),
            "n_regimes": int(n_regimes),
            "regime_dim": int(regime_dim),
            "anchors": resolve_anchors(anchors, int(input_dim), int(num_targets)),
            "gate": _check_gate(gate),
        }
        self.input_dim = int(input_dim)
        self.num_targets = int(num_targets)
        self.n_regimes = int(n_regimes)

        self.input_norm = SyncableBatchNorm1d(self.input_dim)
        self.input_drop = nn.Dropout(float(input_dropout))
        d = self.input_dim
        if self.n_regimes > 0:
            # index n_regimes is the "unknown regime" token used when regime=None
            self.regime_embedding: nn.Embedding | None = nn.Embedding(
                self.n_regimes + 1, int(regime_dim)
            )
            d += int(regime_dim)
        else:
            self.regime_embedding = None
        self.attention = (
            _FeatureAttention(self.input_dim, int(attention_dim), int(attention_heads))
            if use_attention
            else None
        )

        blocks = []
        n_blocks = len(hidden_dims)
        for i, width in enumerate(hidden_dims):
            last = i == n_blocks - 1
            d_in = d + (int(attention_dim) if (last and use_attention) else 0)
            blocks.append(
                _ResidualBlock(
                    d_in,
                    width,
                    float(negative_slope),
                    0.0 if last else float(dropout),
                    bool(residual),
                )
            )
            d = width
        self.blocks = nn.ModuleList(blocks)
        self.alpha_head = nn.Linear(d, 1)
        self.weights_head = nn.Linear(d, self.num_targets)
        self.log_var_head = nn.Linear(d, 1)
        anchor_list = self._config["anchors"] or []
        if anchor_list:
            self.register_buffer(
                "anchor_features", torch.tensor([a[0] for a in anchor_list], dtype=torch.long)
            )
            self.register_buffer(
                "anchor_targets", torch.tensor([a[1] for a in anchor_list], dtype=torch.long)
            )
            # which candidate (expert) each anchor belongs to; derived from the config, so
            # not in the state_dict (files written before groups existed still load)
            self.register_buffer(
                "anchor_groups",
                torch.tensor([a[2] for a in anchor_list], dtype=torch.long),
                persistent=False,
            )
            self.n_anchor_groups = 1 + max(a[2] for a in anchor_list)
            self.gate_head: nn.Linear | None = nn.Linear(d, self.n_anchor_groups + 1)
            # learned inverse temperature of the gate, outside the L2 penalty (1-D), so
            # the gate can saturate on one estimator where that one is best
            self.gate_log_scale: nn.Parameter | None = nn.Parameter(torch.zeros(1))
        else:
            self.gate_head = None
            self.gate_log_scale = None
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """He init for hidden layers, Glorot uniform for the heads, uninformative priors."""
        slope = self._config["negative_slope"]
        for block in self.blocks:
            nn.init.kaiming_normal_(block.linear.weight, a=slope, nonlinearity="leaky_relu")
            nn.init.zeros_(block.linear.bias)
            if isinstance(block.skip, nn.Linear):
                nn.init.kaiming_normal_(block.skip.weight, nonlinearity="linear")
        heads = [self.alpha_head, self.weights_head, self.log_var_head]
        if self.gate_head is not None:
            heads.append(self.gate_head)  # zero bias: uniform gate at the start
        for head in heads:
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)
        self.set_output_priors(0.5, None)

    def set_output_priors(
        self,
        alpha_mean: float,
        weights_mean: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        log_var_mean: float | None = None,
    ) -> None:
        """Bias the heads towards empirical priors (the specification's initialization strategy, "bias towards empirical priors").

        ``alpha`` bias = ``logit(alpha_mean)``, target-weight bias = ``log(weights_mean)``
        (uniform when ``None``), ``log_var`` bias = ``log_var_mean`` (unchanged when
        ``None``). With zero input to the heads the network then outputs exactly
        these priors.
        """
        a = float(alpha_mean)
        if not math.isfinite(a) or not 0.0 <= a <= 1.0:
            raise ValueError(f"alpha_mean must be in [0, 1], got {alpha_mean}")
        a = min(max(a, 1e-4), 1.0 - 1e-4)
        if weights_mean is None:
            pi = np.full(self.num_targets, 1.0 / self.num_targets)
        else:
            pi = np.asarray(
                weights_mean.detach().cpu() if torch.is_tensor(weights_mean) else weights_mean,
                dtype=np.float64,
            ).reshape(-1)
            if pi.shape != (self.num_targets,):
                raise ValueError(
                    f"weights_mean must have {self.num_targets} entries, got {pi.shape[0]}"
                )
            if not np.all(np.isfinite(pi)) or np.any(pi < 0) or pi.sum() <= 0:
                raise ValueError("weights_mean must be finite, non-negative, not all zero")
            pi = np.maximum(pi / pi.sum(), 1e-6)
            pi = pi / pi.sum()
        with torch.no_grad():
            self.alpha_head.bias.fill_(math.log(a / (1.0 - a)))
            self.weights_head.bias.copy_(torch.as_tensor(np.log(pi), dtype=torch.float32))
            if log_var_mean is not None:
                self.log_var_head.bias.fill_(float(log_var_mean))

    # --------------------------------------------------------------- forward
    def _regime_input(self, regime: Any, batch: int, device: torch.device) -> torch.Tensor:
        assert self.regime_embedding is not None
        if regime is None:
            idx = torch.full((batch,), self.n_regimes, dtype=torch.long, device=device)
        else:
            idx = torch.as_tensor(regime, device=device).long().reshape(-1)
            if idx.numel() == 1 and batch != 1:
                idx = idx.expand(batch)
            if idx.shape[0] != batch:
                raise ValueError(f"regime has {idx.shape[0]} entries for a batch of {batch}")
            if bool(((idx < 0) | (idx > self.n_regimes)).any()):
                raise ValueError(
                    f"regime indices must be in [0, {self.n_regimes - 1}] "
                    f"(or {self.n_regimes} = unknown)"
                )
        return self.regime_embedding(idx)

    def _trunk(self, x: torch.Tensor, regime: Any = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"features must have shape (B, {self.input_dim}), got {tuple(x.shape)}"
            )
        h = self.input_drop(self.input_norm(x))
        ctx = self.attention(h)[0] if self.attention is not None else None
        if self.regime_embedding is not None:
            h = torch.cat([h, self._regime_input(regime, x.shape[0], x.device)], dim=1)
        elif regime is not None:
            raise ValueError("regime given but the network has n_regimes=0")
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if i == last and ctx is not None:
                h = torch.cat([h, ctx], dim=1)
            h = block(h)
        return h

    def forward(self, x: torch.Tensor, regime: Any = None) -> ShrinkageOutput:
        """``x (B, F)`` → :class:`ShrinkageOutput` (alpha ``(B,)``, weights ``(B, K)``,
        log_var ``(B,)``); ``regime`` (``(B,)`` ints) only with ``n_regimes > 0``."""
        h = self._trunk(x, regime)
        alpha = torch.sigmoid(self.alpha_head(h)).squeeze(-1)
        weights = torch.softmax(self.weights_head(h), dim=-1)
        log_var = self.log_var_head(h).squeeze(-1)
        if self.gate_head is not None:
            alpha, weights = self._anchored(x, h, alpha, weights)
        return ShrinkageOutput(alpha, weights, log_var)

    def anchor_candidates(self, x: torch.Tensor) -> torch.Tensor:
        """Intensity vectors ``(B, J, K)`` of the ``J`` anchor estimators, from raw features ``x``.

        Each anchor ``[f, t, g]`` puts ``clamp(x[:, f], 0, 1)`` (a classical intensity)
        on target ``t`` of candidate ``g``, or weight 1 when ``f = -1``; a candidate is
        the sum of its anchors (one for a single-target estimator, several for the
        multi-target one).
        """
        if self.gate_head is None:
            raise ValueError("the network was built without anchors")
        f, t = self.anchor_features, self.anchor_targets
        fixed = f < 0
        value = x[:, f.clamp_min(0)].clamp(0.0, 1.0)
        value = torch.where(fixed, torch.ones_like(value), value)
        onehot = torch.nn.functional.one_hot(t, self.num_targets).to(x.dtype)  # (A, K)
        per_anchor = value[:, :, None] * onehot[None, :, :]  # (B, A, K)
        out = per_anchor.new_zeros(x.shape[0], self.n_anchor_groups, self.num_targets)
        return out.index_add(1, self.anchor_groups, per_anchor)

    def _anchored(
        self, x: torch.Tensor, h: torch.Tensor, alpha: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated convex combination of the free head and the anchors → ``(α, π)``."""
        assert self.gate_head is not None
        assert self.gate_log_scale is not None
        logits = self.gate_head(h) * self.gate_log_scale.exp()
        gate = _GATES[self._config["gate"]](logits)  # (B, J+1)
        cand = self.anchor_candidates(x)  # (B, J, K)
        w = gate[:, :1] * alpha[:, None] * weights + (gate[:, 1:, None] * cand).sum(dim=1)
        total = w.sum(dim=-1)
        # π = w / α; where α ≈ 0 the direction is irrelevant: keep the free head's π
        safe = total > 1e-8
        pi = torch.where(safe[:, None], w / total.clamp_min(1e-8)[:, None], weights)
        return total.clamp(0.0, 1.0), pi

    @torch.no_grad()
    def attention_weights(self, features: Any) -> torch.Tensor:
        """Attention map ``(B, F, F)`` (heads averaged) in eval mode; needs ``use_attention``."""
        if self.attention is None:
            raise ValueError("the network was built with use_attention=False")
        with eval_mode(self):
            h = self.input_norm(self._as_input(features))
            _, weights = self.attention(h, need_weights=True)
        assert weights is not None
        return weights

    def _as_input(self, features: Any) -> torch.Tensor:
        param = next(self.parameters())
        x = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features)
        x = x.to(device=param.device, dtype=param.dtype)
        if x.ndim == 1:
            x = x[None, :]
        if not bool(torch.isfinite(x).all()):
            raise ValueError("features contain NaN or inf")
        return x

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        """Eval-mode, no-grad forward on numpy or torch features ``(B, F)`` (or ``(F,)``).

        The training/eval mode of the module is restored afterwards.
        """
        with eval_mode(self):
            return self(self._as_input(features), regime)

    # ---------------------------------------------------------------- config
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments; ``MLShrinkageNetwork.from_config(net.config)`` rebuilds it."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MLShrinkageNetwork:
        config = dict(config)
        config.setdefault("anchors", None)  # files written before anchors existed
        config.setdefault("gate", "softmax")  # files written before the sparsemax gate
        return cls(**config)

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> MLShrinkageNetwork:
        """Network with the stored config (updated by ``overrides``) and the stored
        weights wherever shapes agree (e.g. a new ``num_targets`` keeps the trunk)."""
        payload = load_model_payload(path)
        config = dict(payload["config"])
        config.update(overrides)
        model = cls.from_config(config)
        load_pretrained_weights(model, payload["state_dict"])
        return model


def classical_anchors(input_dim: int, num_targets: int) -> list[list[int]] | None:
    """``[feature_index, target_index, candidate]`` anchors of the classical estimators for
    the full feature vector of :mod:`shrinklab.core.features` (``None`` for any other input
    layout).

    One candidate each: Ledoit–Wolf and OAS → identity, constant correlation →
    constant-correlation target, single index → single-factor target, QIS as a fixed
    corner (``-1``); then one candidate with several anchors, multi-target shrinkage
    (the ``mt_<target>`` features, :data:`shrinklab.core.features.MULTI_TARGET_SOURCES`).
    """

    if input_dim != len(FEATURE_NAMES) or num_targets != len(TARGET_NAMES):
        return None
    out = [
        [FEATURE_NAMES.index(f) if f is not None else -1, TARGET_NAMES.index(t), g]
        for g, (f, t) in enumerate(CLASSICAL_POINTS.values())
    ]
    g = len(out)
    out += [
        [FEATURE_NAMES.index(f"mt_{t}"), TARGET_NAMES.index(t), g] for t in MULTI_TARGET_SOURCES
    ]
    return out


def resolve_anchors(
    anchors: str | Sequence[Sequence[int]] | None, input_dim: int, num_targets: int
) -> list[list[int]] | None:
    """Normalise the ``anchors`` argument of :class:`MLShrinkageNetwork` to a list of
    ``[feature_index, target_index, candidate]`` triples (or ``None``), validating them.

    Pairs ``[feature_index, target_index]`` (the format before multi-anchor candidates,
    still read from old files) are one candidate each; triples must number their
    candidates ``0 … G−1``, each used; a list mixing both is refused.
    """
    if anchors is None or anchors is False:
        return None
    if isinstance(anchors, str):
        if anchors != "auto":
            raise ValueError(f"anchors must be 'auto', None or a list of pairs, got {anchors!r}")
        return classical_anchors(input_dim, num_targets)
    entries = [[int(a) for a in entry] for entry in anchors]
    if not entries:
        return None
    sizes = {len(e) for e in entries}
    if sizes == {2}:
        entries = [[f, t, j] for j, (f, t) in enumerate(entries)]
    elif sizes != {3}:
        raise ValueError(
            "anchors must be all [feature, target] pairs or all [feature, target, candidate] "
            f"triples; got entries of lengths {sorted(sizes)}"
        )
    for f, t, _ in entries:
        if not (-1 <= f < input_dim) or not (0 <= t < num_targets):
            raise ValueError(
                f"anchor [{f}, {t}] out of range for input_dim={input_dim}, "
                f"num_targets={num_targets}"
            )
    groups = {g for _, _, g in entries}
    if groups != set(range(len(groups))):
        raise ValueError(f"anchor candidates must be numbered 0 … G−1; got {sorted(groups)}")
    return entries


def output_priors(oracle_w: Any) -> tuple[float, np.ndarray]:
    """Empirical priors from oracle intensities ``w* (N, K)``: the mean total
    intensity ``mean_i Σ_k w*_ik`` and the mean target weights ``mean_i w*_i / Σ_k w*_ik``
    over samples with a positive total (uniform if there are none)."""
    w = np.asarray(oracle_w.detach().cpu() if torch.is_tensor(oracle_w) else oracle_w, float)
    if w.ndim != 2 or w.shape[0] == 0:
        raise ValueError(f"oracle_w must have shape (N, K) with N >= 1, got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("oracle_w contains NaN or inf")
    w = np.clip(w, 0.0, None)
    total = w.sum(axis=1)
    alpha_mean = float(np.clip(total.mean(), 0.0, 1.0))
    pos = total > 1e-12
    if pos.any():
        pi = (w[pos] / total[pos, None]).mean(axis=0)
    else:
        pi = np.full(w.shape[1], 1.0 / w.shape[1])
    return alpha_mean, pi


def predict_numpy(model: Any, features: Any, regime: Any = None) -> ShrinkageOutput:
    """``model.predict`` with numpy/torch features, as a ShrinkageOutput of float64 CPU tensors."""
    out = model.predict(features) if regime is None else model.predict(features, regime)
    return ShrinkageOutput(*(torch.as_tensor(v).detach().cpu().double() for v in out))
