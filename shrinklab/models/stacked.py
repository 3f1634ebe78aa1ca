"""Eval-mode forward of several :class:`~shrinklab.models.network.MLShrinkageNetwork` of one
architecture in one batched pass (:class:`StackedNetworks`).

An ensemble's members share their architecture; their weights are stacked along a new
leading dimension ``M`` and every layer is one batched matrix product
(``torch.baddbmm``), so an ensemble of ``M`` small MLPs costs about one network's Python
overhead instead of ``M`` (the same idea as ``torch.func.stack_module_state`` with
``vmap``, written out for this one architecture). The operations are those of
``MLShrinkageNetwork.forward`` in eval mode (batch norm with its running statistics,
dropout off); the results agree with the per-member loop to float32 rounding (tested).

The stack is a snapshot of the weights: :meth:`StackedNetworks.is_current` tells whether
the members' tensors are still those (same objects, not modified in place since), so a
caller rebuilds it after training or ``load_state_dict``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shrinklab.models.network import MLShrinkageNetwork, gate_map

__all__ = ["StackedNetworks", "can_stack", "stacked_member_outputs"]

# config keys that do not change the eval-mode forward
_EVAL_IRRELEVANT = ("dropout", "input_dropout")


def can_stack(members: Sequence[nn.Module]) -> bool:
    """Whether ``members`` are plain networks of one architecture that
    :class:`StackedNetworks` evaluates (no attention, no regime embedding)."""
    if not members or not all(type(m) is MLShrinkageNetwork for m in members):
        return False
    configs = [{k: v for k, v in m.config.items() if k not in _EVAL_IRRELEVANT} for m in members]
    first = configs[0]
    if first["use_attention"] or first["n_regimes"] > 0:
        return False
    return all(c == first for c in configs[1:])


def _bn_affine(norms: Sequence[nn.BatchNorm1d]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked ``(mean, inv_std·weight, bias)`` pieces of eval-mode batch norms as
    ``(M, 1, d)`` tensors ``(mean, scale, bias)``: ``(x − mean)·scale + bias`` with
    ``scale = weight / sqrt(running_var + eps)``."""
    mean = torch.stack([b.running_mean for b in norms])[:, None, :]
    scale = torch.stack([b.weight / torch.sqrt(b.running_var + b.eps) for b in norms])
    bias = torch.stack([b.bias for b in norms])[:, None, :]
    return mean, scale[:, None, :], bias


class StackedNetworks:
    """The eval-mode outputs of ``M`` networks of one architecture (:func:`can_stack`)
    from one batched pass; ``__call__(x (B, F))`` → ``(alpha (M, B), weights (M, B, K),
    log_var (M, B))`` in the networks' dtype."""

    def __init__(self, members: Sequence[MLShrinkageNetwork]) -> None:
        if not can_stack(members):
            raise ValueError(
                "members must be networks of one architecture without attention/regimes"
            )
        members = list(members)
        self._tensors = [t for m in members for t in (*m.parameters(), *m.buffers())]
        self._versions = self._fingerprint()
        net = members[0]
        self.gate = net.config["gate"]
        self.slope = net.config["negative_slope"]
        # normal tensors even when first built inside torch.inference_mode (the estimator)
        with torch.inference_mode(False), torch.no_grad():
            self.input_norm = _bn_affine([m.input_norm for m in members])
            self.blocks = []
            for i in range(len(net.blocks)):
                bl = [m.blocks[i] for m in members]
                w = torch.stack([b.linear.weight.T for b in bl])  # (M, d_in, d_out)
                b = torch.stack([b.linear.bias for b in bl])[:, None, :]
                skip = bl[0].skip
                if isinstance(skip, nn.Linear):
                    skip_w: torch.Tensor | str | None = torch.stack([b.skip.weight.T for b in bl])
                else:
                    skip_w = None if skip is None else "identity"
                self.blocks.append((w, b, _bn_affine([b.norm for b in bl]), skip_w))
            heads = [net.alpha_head, net.weights_head, net.log_var_head]
            self.k = net.num_targets
            self.anchored = net.gate_head is not None
            if self.anchored:
                heads.append(net.gate_head)
            names = ["alpha_head", "weights_head", "log_var_head", "gate_head"][: len(heads)]
            self.head_w = [torch.stack([getattr(m, h).weight.T for m in members]) for h in names]
            self.head_b = [
                torch.stack([getattr(m, h).bias for m in members])[:, None] for h in names
            ]
            if self.anchored:
                self.gate_scale = torch.stack([m.gate_log_scale.exp() for m in members])[:, None]
                self.net0 = net  # anchors are in the config, the same for every member

    def is_current(self) -> bool:
        """Whether the members' tensors are unchanged since the stack was built (not
        modified in place, not moved: same version counter and storage)."""
        return self._fingerprint() == self._versions

    def _fingerprint(self) -> list[tuple[int, int]]:
        return [(t._version, t.data_ptr()) for t in self._tensors]

    @staticmethod
    def _norm(h: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        mean, scale, bias = affine
        return (h - mean) * scale + bias

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        leaky = torch.nn.functional.leaky_relu
        h = self._norm(x.unsqueeze(0), self.input_norm)  # (M, B, F)
        for w, b, affine, skip_w in self.blocks:
            z = self._norm(leaky(torch.baddbmm(b, h, w), self.slope), affine)
            if skip_w is not None:
                z = z + (h if isinstance(skip_w, str) else torch.bmm(h, skip_w))
            h = z
        out = [torch.baddbmm(b, h, w) for w, b in zip(self.head_w, self.head_b)]
        alpha = torch.sigmoid(out[0]).squeeze(-1)
        weights = torch.softmax(out[1], dim=-1)
        log_var = out[2].squeeze(-1)
        if self.anchored:
            gate = gate_map(self.gate)(out[3] * self.gate_scale)  # (M, B, J+1)
            cand = self.net0.anchor_candidates(x)  # (B, J, K)
            w = gate[..., :1] * alpha[..., None] * weights
            w = w + (gate[..., 1:, None] * cand).sum(dim=-2)
            total = w.sum(dim=-1)
            safe = total > 1e-8
            weights = torch.where(safe[..., None], w / total.clamp_min(1e-8)[..., None], weights)
            alpha = total.clamp(0.0, 1.0)
        return alpha, weights, log_var


# One stack per ensemble (weak keys: the cache does not keep a model alive).
_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stacked_member_outputs(
    owner: nn.Module, members: Sequence[nn.Module], x: torch.Tensor, regime: Any = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Eval-mode outputs ``(alpha (M, B), weights (M, B, K), log_var (M, B))`` of the
    ``members`` of ``owner`` (an ensemble) in one batched pass, or ``None`` where that
    does not apply (``regime`` given, or members :func:`can_stack` refuses); the stack is
    built on first use and rebuilt when the members' weights change."""
    if regime is not None:
        return None
    stack = _STACKS.get(owner)
    if stack is None or not stack.is_current():
        if not can_stack(members):
            return None
        stack = StackedNetworks(members)
        _STACKS[owner] = stack
    with torch.no_grad():
        return stack(x)
