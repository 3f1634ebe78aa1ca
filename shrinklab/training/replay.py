"""Synthetic replay while fine-tuning on real returns
(docs/decisions/0025-fine-tuning-with-synthetic-replay.md).

Fine-tuning on realised GMV variance (:mod:`shrinklab.training.finetune`) makes the
network forget the synthetic worlds it was pretrained on. Rehearsal — keeping part of
the old task's objective while learning the new one (Robins, "Catastrophic forgetting,
rehearsal and pseudorehearsal", *Connection Science* 7, 1995) — is the standard cure.
At each optimisation step the fine-tuning loss gains

    λ · mean_i L(ŵ_i)/d_i

on a batch of synthetic training worlds drawn (with replacement) by a seeded
:class:`torch.Generator` of its own, so the fine-tuning's other random streams are
untouched. ``L/d`` is the pretraining loss of docs/decisions/0009-loss-l-over-d.md:
the Frobenius loss of ``Σ̂(ŵ)`` in its O(K²) quadratic form divided by that of the
sample covariance (:func:`shrinklab.training.losses.quadratic_frobenius`). The
synthetic batch has its own forward pass (no market regime: the "unknown" token, as in
pretraining), so the real batch's forward is the one of plain fine-tuning.
``λ = 0`` is plain fine-tuning: no replay object is built and nothing is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrinklab.training import losses as L
from shrinklab.training.device import autocast
from shrinklab.training.objective import tensor_field

__all__ = [
    "ReplaySpec",
    "SyntheticReplay",
    "check_replay",
    "resume_replay",
    "synthetic_l_over_d",
]


def check_replay(weight: float, batch_size: int) -> None:
    """Raise ``ValueError`` unless ``weight`` is a finite number ``>= 0`` and
    ``batch_size`` a positive integer."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ValueError(f"replay_weight must be a number, got {weight!r}")
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"replay_weight must be finite and >= 0, got {weight!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"replay_batch must be a positive integer, got {batch_size!r}")


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay: ``data`` a synthetic training set (fields ``features (N, F)``,
    ``G (N, K, K)``, ``c (N, K)``, ``d (N,)``, e.g. a
    :class:`shrinklab.data.dataset.TrainingSet`), the weight ``λ``, the worlds per step
    and the seed of the replay generator."""

    data: Any
    weight: float
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_replay(self.weight, self.batch_size)

    def settings(self) -> dict[str, Any]:
        """The plain settings (for checkpoints: a resumed run must use the same)."""
        n = int(tensor_field(self.data, "d").shape[0])
        return {"weight": float(self.weight), "batch": self.batch_size, "seed": self.seed, "n": n}


class SyntheticReplay:
    """The replay term of one fine-tuning run: the set on ``device`` and its generator."""

    def __init__(self, spec: ReplaySpec, device: torch.device) -> None:
        ds = spec.data
        self.spec = spec
        self.x = tensor_field(ds, "features").to(device=device, dtype=torch.float32)
        f64 = dict(device=device, dtype=torch.float64)
        self.G, self.c = tensor_field(ds, "G").to(**f64), tensor_field(ds, "c").to(**f64)
        self.d = tensor_field(ds, "d").to(**f64)
        self.n = int(self.x.shape[0])
        if self.n == 0:
            raise ValueError("the replay set has no worlds")
        if bool((self.d <= 0).any()):
            raise ValueError("replay worlds need d = ‖S − Σ‖² > 0")
        self.device = device
        self.generator = torch.Generator().manual_seed(int(spec.seed))

    def draw(self) -> torch.Tensor:
        """Indices of the next replay batch (CPU generator, so the same on any device)."""
        idx = torch.randint(0, self.n, (self.spec.batch_size,), generator=self.generator)
        return idx.to(self.device)

    def loss(self, model: nn.Module, amp_dtype: torch.dtype | None) -> torch.Tensor:
        """``λ · mean L/d`` on a freshly drawn batch (float64 scalar, differentiable)."""
        idx = self.draw()
        with autocast(self.device, amp_dtype):
            out = model(self.x[idx])
        w = out.intensities.double()
        ld = L.quadratic_frobenius(w, self.G[idx], self.c[idx], self.d[idx])
        return self.spec.weight * ld

    def state(self) -> dict[str, Any]:
        return {"settings": self.spec.settings(), "rng": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("settings") != self.spec.settings():
            raise ValueError(
                f"checkpoint replay settings {state.get('settings')} differ from "
                f"{self.spec.settings()}; use another out_dir or resume=False"
            )
        self.generator.set_state(state["rng"])


def resume_replay(saved: dict[str, Any] | None, replay: SyntheticReplay | None) -> None:
    """Restore the replay generator from a checkpoint's ``saved`` state (``None``: the
    checkpoint had no replay); a run and a checkpoint that differ in replay are refused."""
    if (saved is None) != (replay is None):
        raise ValueError("checkpoint and run differ in synthetic replay; use another out_dir")
    if replay is not None:
        replay.load_state(saved)


@torch.no_grad()
def synthetic_l_over_d(model: nn.Module, data: Any, chunk: int = 4096) -> float:
    """Eval-mode mean ``L/d`` of ``model`` on a synthetic set (the replay term's loss)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    x = tensor_field(data, "features").to(device=dev, dtype=torch.float32)
    G, c, d = (tensor_field(data, k).to(device=dev, dtype=torch.float64) for k in "Gcd")
    total = 0.0
    try:
        for s in range(0, x.shape[0], chunk):
            w = model(x[s : s + chunk]).intensities.double()
            sl = slice(s, s + chunk)
            total += float(L.quadratic_frobenius(w, G[sl], c[sl], d[sl], reduction="sum"))
    finally:
        model.train(was)
    return total / x.shape[0]
