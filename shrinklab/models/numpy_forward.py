"""Float64 NumPy forward pass of a loaded model, for the estimator's small batches
(:func:`numpy_predict`).

A fit of :class:`shrinklab.sklearn.MLShrinkageCovariance` evaluates the model on one
feature row. In torch that costs about a millisecond of per-operation overhead for a
few thousand multiply-adds (the bundled model: a five-member ensemble, three family
experts of three members each and a family gate). :class:`NumpyForward` holds the
weights as float64 NumPy arrays, converted once per model and cached beside it, and
evaluates the same eval-mode operations:

* the members of an ensemble as one stack (the weights of
  :class:`shrinklab.models.stacked.StackedNetworks`, whose ``__call__`` this mirrors:
  batch norm with running statistics, LeakyReLU, residual skips, the heads, and the
  anchored gate with softmax or sparsemax, Martins & Astudillo, ICML 2016);
* the ensemble's combination of :meth:`EnsembleModel.combine_outputs` (mean of the
  members' intensities, mixture variance with temperature);
* the family gate of a :class:`~shrinklab.models.experts.GatedExpertModel` (MLP with
  ReLU on standardised features) and its hard switch
  (:func:`~shrinklab.models.experts.choose_expert`: an expert serves a row where its
  family's probability, or its families' total, exceeds the threshold; ``log_var`` stays
  the general model's), or its soft mixture (:func:`~shrinklab.models.experts.mix_intensities`,
  decision 0044);
* the switch of a :class:`~shrinklab.models.switched.SwitchedModel` (decision 0068):
  the far model on the rows its discriminant picks, then its finishing steps
  (decisions 0071, 0073 and 0074, :meth:`SwitchedModel.finish_output`).

The results equal ``model.predict`` to float32 rounding (the torch models run in
float32; tested at 1e-5). Near the gate's threshold the two may pick different models
for a row whose family probability is within float32 rounding of it. Models this does
not cover (attention, regime embeddings, compressed models, a general model that is a
single network with experts of other kinds...) give ``None``: the caller uses
``model.predict``. The pipeline never calls this module (its numbers come from
``model.predict``).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.experts import GatedExpertModel, apply_guards, apply_sole, choose_expert
from shrinklab.models.network import MLShrinkageNetwork, ShrinkageOutput
from shrinklab.models.stacked import StackedNetworks, can_stack
from shrinklab.models.switched import SwitchedModel

__all__ = ["NumpyForward", "forget", "np_sparsemax", "numpy_forward", "numpy_predict"]

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy().copy()


def np_sparsemax(z: np.ndarray) -> np.ndarray:
    """Sparsemax along the last axis (:func:`shrinklab.models.network.sparsemax`, the
    Euclidean projection onto the simplex; Martins & Astudillo, ICML 2016)."""
    zs = -np.sort(-z, axis=-1)
    cumsum = np.add.accumulate(zs, axis=-1) - 1.0  # np.cumsum without its wrapper
    k = np.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    k_z = np.add.reduce(k * zs > cumsum, -1, keepdims=True)
    tau = np.add.reduce(np.where(k == k_z, cumsum, 0.0), -1, keepdims=True) / k_z  # exact
    return np.maximum(z - tau, 0.0)


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.maximum.reduce(z, -1, keepdims=True))
    return e / np.add.reduce(e, -1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|


class _MemberStack:
    """The members of one ensemble (or one network) as float64 arrays, from the
    weights :class:`StackedNetworks` stacks; ``__call__(x (B, F))`` → ``(alpha (M, B),
    weights (M, B, K), log_var (M, B))``."""

    def __init__(self, members: Sequence[MLShrinkageNetwork]) -> None:
        # stacked from float64 copies: the batch-norm scales and the gate scale are
        # computed in float64 too, not rounded to float32 first
        stack = StackedNetworks([copy.deepcopy(m).double() for m in members])
        self.slope = float(stack.slope)
        self.gate = stack.gate
        self.input_norm = self._affine(stack.input_norm)
        # per block: [linear | skip projection] in one matrix, its bias, the norm, and
        # the skip (None, "identity", or "linear": the columns after d_out)
        self.blocks = []
        for w, b, aff, skip in stack.blocks:
            kind = skip if skip is None or isinstance(skip, str) else "linear"
            W = _np(w) if kind != "linear" else np.concatenate([_np(w), _np(skip)], axis=-1)
            self.blocks.append((W, _np(b), w.shape[-1], self._affine(aff), kind))
        # the heads (alpha, weights, log_var[, gate]) as one matrix; the gate's inverse
        # temperature folded into its columns
        head_w, head_b = [_np(w) for w in stack.head_w], [_np(b) for b in stack.head_b]
        if stack.anchored:
            head_w[3] = head_w[3] * _np(stack.gate_scale)
            head_b[3] = head_b[3] * _np(stack.gate_scale)
        self.head_w = np.concatenate(head_w, axis=-1)
        self.head_b = np.concatenate(head_b, axis=-1)
        ends = np.cumsum([w.shape[-1] for w in head_w]).tolist()
        self.head_slices = [slice(a, b) for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        self.anchored = stack.anchored
        if self.anchored:
            net = members[0]
            feats = net.anchor_features.cpu().numpy()
            # candidate value = Σ_anchors clamp(x_f, 0, 1) (or 1 for f = −1) on its target:
            # x_anchor (B, A) @ place (A, J·K) (anchor_candidates' one-hot index_add)
            self.anchor_cols = np.maximum(feats, 0)
            self.anchor_fixed = feats < 0
            J, K = net.n_anchor_groups, net.num_targets
            place = np.zeros((len(feats), J, K))
            place[
                np.arange(len(feats)),
                net.anchor_groups.cpu().numpy(),
                net.anchor_targets.cpu().numpy(),
            ] = 1.0
            self.anchor_place = place.reshape(len(feats), J * K)
            self.J, self.K = J, K

    @staticmethod
    def _affine(affine: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode batch norm ``(h − mean)·scale + bias`` as ``h·scale + shift``."""
        mean, scale, bias = (_np(t) for t in affine)
        return scale, bias - mean * scale

    def _leaky(self, z: np.ndarray) -> np.ndarray:
        if 0.0 <= self.slope <= 1.0:
            return np.maximum(z, self.slope * z)
        return np.where(z >= 0, z, self.slope * z)

    def candidates(self, x: np.ndarray) -> np.ndarray:
        """:meth:`MLShrinkageNetwork.anchor_candidates` ``(B, J, K)``."""
        v = np.minimum(np.maximum(x[:, self.anchor_cols], 0.0), 1.0)  # np.clip (finite x)
        v[:, self.anchor_fixed] = 1.0
        return (v @ self.anchor_place).reshape(x.shape[0], self.J, self.K)

    def __call__(self, x: np.ndarray) -> Outputs:
        scale, shift = self.input_norm
        h = x[None] * scale + shift  # (M, B, F)
        for W, b, d_out, (scale, shift), skip in self.blocks:
            zs = h @ W
            z = self._leaky(zs[..., :d_out] + b) * scale + shift
            if skip == "linear":
                z += zs[..., d_out:]
            elif skip is not None:
                z += h
            h = z
        y = h @ self.head_w + self.head_b
        out = [y[..., sl] for sl in self.head_slices]  # the heads (np.split, fewer calls)
        alpha = _sigmoid(out[0][..., 0])
        weights = _np_softmax(out[1])
        log_var = out[2][..., 0]
        if self.anchored:
            logits = out[3]
            gate = np_sparsemax(logits) if self.gate == "sparsemax" else _np_softmax(logits)
            w = gate[..., :1] * alpha[..., None] * weights
            w = w + np.add.reduce(gate[..., 1:, None] * self.candidates(x), -2)
            total = np.add.reduce(w, -1)
            safe = total > 1e-8
            weights = np.where(safe[..., None], w / np.maximum(total, 1e-8)[..., None], weights)
            alpha = np.clip(total, 0.0, 1.0)
        return alpha, weights, log_var


class _Ensemble:
    """An :class:`EnsembleModel` of stackable members: the stack, then the combination of
    :meth:`EnsembleModel.combine_outputs` (mean of the intensities ``α_m π_m`` or of
    ``α`` and ``π``; ``log_var = log τ (between + λ within)``; see
    :mod:`shrinklab.models.ensemble`)."""

    def __init__(self, model: EnsembleModel) -> None:
        self.members = list(model.members)
        self.stack = _MemberStack(self.members)
        self.rho = _np(model.member_weights)
        self.intensities_mean = model.combine == "intensities"
        self.temperature = float(model.temperature)
        self.within_weight = float(model.within_weight)

    def __call__(self, x: np.ndarray) -> Outputs:
        return self.combine(*self.stack(x))

    def intensities(self, A: np.ndarray, P: np.ndarray) -> np.ndarray:
        """The ensemble's ``α π`` ``(B, K)`` from its members' ``(M, B)``, ``(M, B, K)`` (the
        intensities of :meth:`combine`, without its variance)."""
        if self.intensities_mean:
            return np.tensordot(self.rho, A[..., None] * P, axes=1)
        return (self.rho @ A)[:, None] * np.tensordot(self.rho, P, axes=1)

    def combine(self, A: np.ndarray, P: np.ndarray, log_var: np.ndarray) -> Outputs:
        """The ensemble's outputs from its members' ``(M, B)``, ``(M, B, K)``, ``(M, B)``."""
        rho = self.rho
        alpha = rho @ A
        mean_pi = np.tensordot(rho, P, axes=1)
        if self.intensities_mean:
            w = np.tensordot(rho, A[..., None] * P, axes=1)
            safe = alpha > 0
            weights = np.where(safe[:, None], w / np.where(safe, alpha, 1.0)[:, None], mean_pi)
        else:
            weights = mean_pi
        between = rho @ (A - alpha) ** 2
        within = rho @ np.exp(np.clip(log_var, -30.0, 30.0))
        var = self.temperature * (between + self.within_weight * within)
        return alpha, weights, np.log(np.maximum(var, 1e-12))


class _Network:
    def __init__(self, model: MLShrinkageNetwork) -> None:
        self.members = [model]
        self.stack = _MemberStack(self.members)

    def __call__(self, x: np.ndarray) -> Outputs:
        return self.combine(*self.stack(x))

    @staticmethod
    def combine(A: np.ndarray, P: np.ndarray, log_var: np.ndarray) -> Outputs:
        return A[0], P[0], log_var[0]

    @staticmethod
    def intensities(A: np.ndarray, P: np.ndarray) -> np.ndarray:
        return A[0][:, None] * P[0]


class _Gated:
    """A :class:`GatedExpertModel`: the family gate in NumPy and the hard switch of
    :meth:`GatedExpertModel.expert_choice` or the soft mixture of its modules."""

    def __init__(self, model: GatedExpertModel, general: Any, experts: list[Any]) -> None:
        gate = model.gate
        self.mean, self.scale = _np(gate.feature_mean), _np(gate.feature_scale)
        linears = [m for m in gate.mlp if isinstance(m, nn.Linear)]
        if len(linears) != len(gate.hidden_dims) + 1:  # pragma: no cover - FamilyGate's layout
            raise ValueError("unexpected FamilyGate layout")
        self.layers = [(_np(m.weight).T.copy(), _np(m.bias)) for m in linears]
        self.cols = [gate.families.index(f) for f in model.expert_families]
        self.threshold = float(model.threshold)
        self.slots, self.pool_shared = list(model.expert_slots), bool(model.pool_shared)
        self.guards = model.guard_columns()  # decision 0058 (apply_guards)
        self.sole = model.sole_columns()  # decision 0075 (apply_sole)
        self.general, self.experts = general, experts
        self.families_of = model.families_by_module()
        self.soft = model.mixing == "soft"
        # under soft mixing every module runs on every row: the members of all of them as
        # one stack when they stack (one pass instead of one per module; the same values)
        parts = [general, *experts]
        members = [m for part in parts for m in getattr(part, "members", [None])]
        self.module_of_family = np.zeros((len(self.slots), len(experts)))
        self.module_of_family[np.arange(len(self.slots)), self.slots] = 1.0
        self.fused = None
        if self.soft and None not in members and can_stack(members):
            self.fused = _MemberStack(members)
            ends = np.cumsum([len(part.members) for part in parts]).tolist()
            self.spans = [slice(a, b) for a, b in zip([0, *ends[:-1]], ends, strict=True)]

    def _proba(self, x: np.ndarray) -> torch.Tensor:
        """The gate's probabilities of the expert families, ``(B, E)``."""
        h = (x - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return torch.from_numpy(_np_softmax(h)[:, self.cols])

    def _family_weights(self, x: np.ndarray) -> np.ndarray:
        """:meth:`GatedExpertModel.family_weights` on the NumPy gate's probabilities (the
        guards by :func:`~shrinklab.models.experts.apply_guards`, the sole servers by
        :func:`~shrinklab.models.experts.apply_sole`)."""
        xt = torch.from_numpy(x)
        return apply_sole(
            apply_guards(self._proba(x).double(), xt, self.guards), xt, self.sole
        ).numpy()

    def choice(self, x: np.ndarray) -> np.ndarray:
        """Index of the serving expert per row (``-1``: the general model)."""
        return choose_expert(self._proba(x), self.slots, self.threshold, self.pool_shared).numpy()

    def _module_outputs(self, x: np.ndarray) -> tuple[Outputs, np.ndarray]:
        """The general model's outputs and each expert module's intensities ``α π``
        ``(M, B, K)``, on every row."""
        if self.fused is None:
            outs = [expert(x) for expert in self.experts]
            return self.general(x), np.stack([a[:, None] * w for a, w, _ in outs])
        A, P, L = self.fused(x)
        general = self.general.combine(A[self.spans[0]], P[self.spans[0]], L[self.spans[0]])
        parts = zip(self.experts, self.spans[1:], strict=True)
        return general, np.stack([e.intensities(A[sl], P[sl]) for e, sl in parts])

    def _soft(self, x: np.ndarray) -> Outputs:
        """:func:`~shrinklab.models.experts.mix_intensities` with
        :func:`~shrinklab.models.experts.module_probabilities`, in NumPy."""
        (alpha, weights, log_var), expert_w = self._module_outputs(x)
        share = self._family_weights(x) @ self.module_of_family  # (B, M)
        mixed = alpha[:, None] * weights * (1.0 - share.sum(1, keepdims=True))
        mixed += np.einsum("bm,mbk->bk", share, expert_w)
        a = mixed.sum(1)
        pos = a > 0
        pi = np.where(pos[:, None], mixed / np.where(pos, a, 1.0)[:, None], weights)
        return a, pi, log_var

    def __call__(self, x: np.ndarray) -> Outputs:
        if self.soft:
            return self._soft(x)
        choice = self.choice(x)
        alpha, weights, log_var = self.general(x)
        alpha, weights = alpha.copy(), weights.copy()
        for j, expert in enumerate(self.experts):
            rows = np.flatnonzero(np.isin(choice, self.families_of[j]))
            if rows.size:
                a, w, _ = expert(x[rows])
                alpha[rows], weights[rows] = a, w
        return alpha, weights, log_var


class _Switched:
    """A :class:`~shrinklab.models.switched.SwitchedModel`: the near model's outputs, the
    far model's intensities on the rows its discriminant scores above ``tau`` (the
    discriminant is float64 NumPy already)."""

    def __init__(self, model: SwitchedModel, near: Any, far: Any) -> None:
        self.discriminant, self.tau, self.scale = model.discriminant, model.tau, model.far_scale
        self.near, self.far, self.model = near, far, model

    def __call__(self, x: np.ndarray) -> Outputs:
        far = self.discriminant.score(x) > self.tau
        rows = np.flatnonzero(far)
        alpha, weights, log_var = self.near(x)
        if rows.size:
            a, w, _ = self.far(x[rows])
            alpha, weights = alpha.copy(), weights.copy()
            alpha[rows], weights[rows] = a * self.scale, w
        far_t = torch.from_numpy(far)
        stock = self.model.is_stock(x, far=far_t)  # decision 0071
        gauss = self.model.is_gaussian(x)  # decision 0073
        long = self.model.is_long_fund(x, far=far_t)  # decision 0074
        if stock.any() or gauss.any() or long.any():  # the torch path's steps, in float64
            out = ShrinkageOutput(*(torch.as_tensor(v) for v in (alpha, weights, log_var)))
            out = self.model.finish_output(out, x, far_t)
            alpha, weights = out.alpha.numpy(), out.weights.numpy()
        return alpha, weights, log_var


def _build(model: nn.Module) -> Any:
    """The NumPy evaluator of ``model``, or ``None`` where this module does not apply."""
    if type(model) is MLShrinkageNetwork:
        return _Network(model) if can_stack([model]) else None
    if type(model) is EnsembleModel:
        return _Ensemble(model) if can_stack(list(model.members)) else None
    if type(model) is GatedExpertModel:
        parts = [_build(m) for m in (model.general, *model.experts)]
        return None if any(p is None for p in parts) else _Gated(model, parts[0], parts[1:])
    if type(model) is SwitchedModel:
        near, far = _build(model.near), _build(model.far)
        return None if near is None or far is None else _Switched(model, near, far)
    return None


class NumpyForward:
    """Float64 NumPy evaluator of ``model`` in eval mode (see the module docstring);
    ``supported`` is False for model kinds it does not cover. A snapshot of the weights
    taken when it is built."""

    def __init__(self, model: nn.Module) -> None:
        self.input_dim = getattr(model, "input_dim", None)
        with torch.inference_mode(False), torch.no_grad():  # also when called in inference mode
            self._eval = _build(model)
        self.supported = self._eval is not None

    def __call__(self, features: np.ndarray) -> Outputs:
        """``(alpha (B,), weights (B, K), log_var (B,))`` float64 of features ``(B, F)``."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or (self.input_dim is not None and x.shape[1] != self.input_dim):
            raise ValueError(f"features must have shape (B, {self.input_dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf")
        return self._eval(x)


# One evaluator per model (weak keys: the cache does not keep a model alive).
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HOOKED: weakref.WeakSet = weakref.WeakSet()


def _forget(module: nn.Module, *_: Any) -> None:
    _FORWARDS.pop(module, None)


def numpy_forward(model: nn.Module) -> NumpyForward | None:
    """The cached :class:`NumpyForward` of ``model``, or ``None`` for a kind it does not
    cover. Like ``model.predict`` it evaluates the eval-mode forward whatever the module's
    training flag.

    The weights are converted on first use and kept with the model (checking every tensor
    of the bundled model for changes would cost more than the forward itself): a
    ``load_state_dict`` on the model drops the snapshot; other in-place changes of a
    model's weights after its first use here are not followed (call :func:`forget`).
    The estimator's models are loaded from files and cached as loaded
    (:func:`shrinklab.sklearn.load_pretrained`)."""
    if not isinstance(model, nn.Module):
        return None
    fwd = _FORWARDS.get(model)
    if fwd is None:
        fwd = NumpyForward(model)
        _FORWARDS[model] = fwd
        if model not in _HOOKED:
            model.register_load_state_dict_post_hook(_forget)
            _HOOKED.add(model)
    return fwd if fwd.supported else None


def forget(model: nn.Module) -> None:
    """Drop the cached :class:`NumpyForward` of ``model`` (rebuilt on next use)."""
    _forget(model)


def numpy_predict(model: nn.Module, features: np.ndarray) -> Outputs | None:
    """``(alpha, weights, log_var)`` float64 arrays of ``model`` on ``features (B, F)``
    (:class:`NumpyForward`), or ``None`` where it does not apply (use ``model.predict``)."""
    fwd = numpy_forward(model)
    return None if fwd is None else fwd(features)
