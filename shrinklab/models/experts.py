"""Family experts behind a feature gate: a hard mixture of experts for the shrinkage model.

Why
---
One network trained on every synthetic world family pays for the sharing: on the
independent synthetic holdout (6,000 worlds, seed 777) a network trained on the
factor worlds alone reaches a loss ratio to the best classical estimator of 0.842 in
those worlds, against 0.940 for the network trained on all families; sp500 0.852 vs
0.906, 1/3/10 0.857 vs 0.874 (``shrinklab.studies.family_mixing``,
``reports/model_selection/family_mixing.csv``). The features identify these families
well (a classifier recalls 85 %, 88 % and 87 % of them on the holdout).

What
----
:class:`GatedExpertModel` keeps a *general* model (a network or an ensemble) and adds
one *expert* network per chosen family, trained on that family's worlds only
(:func:`train_family_experts`), and a :class:`FamilyGate`, a small classifier of the
world family from the features, trained with cross-entropy on the generator's family
labels of the training worlds (:func:`train_family_gate`). For features ``x``:

    output(x) = expert_f(x)   if  P(family f | x) > threshold   (f an expert family)
                general(x)    otherwise

With ``threshold ≥ 0.5`` at most one family can pass. One module may serve several
families (decision 0035: the pretrained ensemble for the four non-market families); with
``pool_shared`` such a module serves where the *total* probability of its families
exceeds the threshold (decision 0043: the question is whether a world is non-market, not
which of the four it is), and still at most one module passes. The gate switches the
intensity ``α`` and the target weights ``π``; the predicted variance (``log_var``) stays the
general model's (for an ensemble: its calibrated mixture variance), so the
uncertainty and the conformal intervals keep their calibration on the general model.

With ``mixing="soft"`` (decision 0044) the modules are averaged instead of switched:
with ``P_m`` the gate's total probability of the families module ``m`` serves,

    w(x) = (1 − Σ_m P_m) · w_general(x) + Σ_m P_m · w_m(x),   α = Σ_k w_k,  π = w / α,

over the intensities ``w = α π`` (each module's ``w`` is a point of the estimator family,
and the Frobenius loss is convex in ``w``, so the mixture's loss is at most the
gate-weighted average of the modules' losses); the threshold is then not used.

A *guard* (soft mixing only; decision 0058) makes an expert family's probability count
for its module only where the gate is sure of it, ``P(f | x) > threshold``, and, with
``max_log_ratio``, where the window's ``log p/n`` (the feature ``log_p_over_n``) is at
most that (inside the training worlds' range, where the gate's families were learned);
elsewhere that probability counts for the module of its ``fallback`` family instead
(:data:`GUARD_KEYS`, :meth:`GatedExpertModel.family_weights`).

A *sole server* (soft mixing only; decision 0075) goes the other way: where the gate is
sure of an expert family, ``P(f | x) > threshold`` with the threshold at least 0.5 (so at
most one family per window) and, with ``max_log_ratio``, ``log p/n`` at most that, the
module serving that family takes the whole weight instead of its probability
(:data:`SOLE_KEYS`, :func:`apply_sole`); elsewhere the soft mixture is unchanged.

The switch is the "hard" form of a mixture of experts [Jacobs, Jordan, Nowlan &
Hinton, "Adaptive mixtures of local experts", Neural Computation 1991], with the
gate trained on known labels rather than jointly: on synthetic worlds the family is
known truth. The high threshold keeps the general model wherever the gate is unsure
(real data, families the generator does not have): there the model is the general
model unchanged. On real returns the gate is applied as it is; the walk-forward
evaluation (notebook 06) shows what it does there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.models.network import ShrinkageOutput, eval_mode
from shrinklab.models.registry import build_model, model_spec

__all__ = [
    "GUARD_KEYS",
    "MIXINGS",
    "SOLE_KEYS",
    "FamilyGate",
    "GatedExpertModel",
    "apply_guards",
    "apply_sole",
    "choose_expert",
    "mix_intensities",
    "module_probabilities",
]

MIXINGS = ("hard", "soft")
"""How a :class:`GatedExpertModel` combines its modules: the switch or the gate-weighted
average (decision 0044)."""

GUARD_KEYS = ("threshold", "max_log_ratio", "fallback")
"""The keys of a guard of :class:`GatedExpertModel` (``guards={family: {...}}``):
``threshold`` in (0, 1), ``max_log_ratio`` (a float or ``None``: no limit on p/n) and
``fallback``, an expert family served by another module, or ``None``: the general model
(decision 0058)."""

SOLE_KEYS = ("threshold", "max_log_ratio")
"""The keys of a sole server of :class:`GatedExpertModel` (``sole={family: {...}}``):
``threshold`` in [0.5, 1) and ``max_log_ratio`` (a float or ``None``: no limit on p/n)
(decision 0075)."""

_LOG_RATIO = FEATURE_NAMES.index("log_p_over_n")


def apply_guards(
    proba: torch.Tensor,
    features: torch.Tensor,
    guards: Sequence[tuple[int, int | None, float, float | None]],
) -> torch.Tensor:
    """``proba (B, E)`` (float64, the gate's probabilities of the expert families) with, for
    each guard ``(column, fallback column, threshold, largest log p/n or None)``, the
    column's probability moved to the fallback column in the rows where the guard is
    closed: not above the threshold, or ``log p/n`` (of ``features (B, F)``) above the
    limit; a fallback column ``None`` drops it, so that the general model, which weighs
    one minus the experts' sum in the soft mixture, receives it. Without guards,
    ``proba`` itself. The one home of the guard rule, for
    :meth:`GatedExpertModel.family_weights` and the NumPy evaluator."""
    if not guards:
        return proba
    proba = proba.clone()
    for i, j, threshold, limit in guards:
        open_ = proba[:, i] > threshold
        if limit is not None:
            open_ &= features[:, _LOG_RATIO].double() <= limit
        moved = torch.where(open_, 0.0, proba[:, i])
        proba[:, i] -= moved
        if j is not None:
            proba[:, j] += moved
    return proba


def apply_sole(
    weights: torch.Tensor,
    features: torch.Tensor,
    sole: Sequence[tuple[int, float, float | None]],
) -> torch.Tensor:
    """``weights (B, E)`` (float64, the expert families' weights after
    :func:`apply_guards`) with, for each sole server ``(column, threshold, largest log p/n
    or None)``, the rows where that column exceeds the threshold (and ``log p/n`` of
    ``features (B, F)`` is within the limit) set to one at the column and zero elsewhere:
    the module serving the family takes the whole weight, the general model none
    (decision 0075). Thresholds are at least 0.5, so at most one column passes per row.
    Without sole servers, ``weights`` itself. The one home of the rule, for
    :meth:`GatedExpertModel.family_weights` and the NumPy evaluator."""
    if not sole:
        return weights
    out = weights
    for i, threshold, limit in sole:
        on = weights[:, i] > threshold
        if limit is not None:
            on &= features[:, _LOG_RATIO].double() <= limit
        one_hot = torch.zeros_like(weights)
        one_hot[:, i] = 1.0
        out = torch.where(on[:, None], one_hot, out)
    return out


def _checked_sole(
    sole: Mapping[str, Mapping[str, Any]] | None, families: Sequence[str], mixing: str
) -> dict[str, dict[str, Any]]:
    """``sole`` as plain dicts, with a clear error for anything :data:`SOLE_KEYS` does
    not allow."""
    if not sole:
        return {}
    if mixing != "soft":
        raise ValueError("sole servers need the soft mixture (mixing='soft')")
    out = {}
    for fam, spec in sole.items():
        if not isinstance(spec, Mapping) or set(spec) != set(SOLE_KEYS):
            got = sorted(spec) if isinstance(spec, Mapping) else type(spec).__name__
            raise ValueError(
                f"the sole server {fam!r} needs exactly the keys {SOLE_KEYS}, got {got}"
            )
        if fam not in families:
            raise ValueError(f"sole server {fam!r} has no expert (experts: {list(families)})")
        threshold, limit = float(spec["threshold"]), spec["max_log_ratio"]
        if not 0.5 <= threshold < 1.0:
            raise ValueError(
                f"the sole threshold of {fam!r} must be in [0.5, 1) (one family at most), "
                f"got {threshold}"
            )
        if limit is not None and not math.isfinite(float(limit)):
            raise ValueError(f"max_log_ratio of {fam!r} must be finite or None, got {limit}")
        out[str(fam)] = {
            "threshold": threshold,
            "max_log_ratio": None if limit is None else float(limit),
        }
    return out


def _checked_guards(
    guards: Mapping[str, Mapping[str, Any]] | None,
    families: Sequence[str],
    slots: Sequence[int],
    mixing: str,
) -> dict[str, dict[str, Any]]:
    """``guards`` as plain dicts, with a clear error for anything :data:`GUARD_KEYS` does
    not allow."""
    if not guards:
        return {}
    if mixing != "soft":
        raise ValueError("guards need the soft mixture (mixing='soft')")
    out = {}
    for fam, guard in guards.items():
        if set(guard) != set(GUARD_KEYS):
            raise ValueError(
                f"the guard of {fam!r} needs exactly the keys {GUARD_KEYS}, got {sorted(guard)}"
            )
        if fam not in families:
            raise ValueError(f"guarded family {fam!r} has no expert (experts: {list(families)})")
        threshold, fallback = float(guard["threshold"]), guard["fallback"]
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"the guard threshold of {fam!r} must be in (0, 1), got {threshold}")
        if fallback is not None and (
            fallback not in families
            or slots[families.index(fallback)] == slots[families.index(fam)]
        ):
            raise ValueError(
                f"the fallback of {fam!r} must be an expert family served by another module "
                f"or None (the general model), got {fallback!r}"
            )
        limit = guard["max_log_ratio"]
        out[str(fam)] = {
            "threshold": threshold,
            "max_log_ratio": None if limit is None else float(limit),
            "fallback": None if fallback is None else str(fallback),
        }
    return out


def choose_expert(
    proba: torch.Tensor, slots: Sequence[int], threshold: float, pool_shared: bool = False
) -> torch.Tensor:
    """Index of the serving expert family per row (``-1``: the general model), from the
    gate's probabilities ``proba (B, E)`` of the expert families, the module that serves
    each family (``slots``, length E) and the threshold: the most probable family serves
    where its probability exceeds ``threshold``; with ``pool_shared`` a module's
    probability is the total of its families', and the module with the largest total
    serves where it exceeds ``threshold`` (as its most probable family).
    :class:`GatedExpertModel` and the NumPy evaluator
    (:mod:`shrinklab.models.numpy_forward`) both use this one rule."""
    best = proba.argmax(dim=1)
    if not pool_shared:
        fires = proba.gather(1, best[:, None])[:, 0] > threshold
        return torch.where(fires, best, torch.full_like(best, -1))
    slot = torch.as_tensor(list(slots), device=proba.device)
    total = module_probabilities(proba, slots)
    module = total.argmax(dim=1)
    fires = total.gather(1, module[:, None])[:, 0] > threshold
    own = torch.where(slot[None, :] == module[:, None], proba, torch.full_like(proba, -1.0))
    return torch.where(fires, own.argmax(dim=1), torch.full_like(best, -1))


def module_probabilities(proba: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
    """``(B, M)``: for each module, the total of the probabilities ``proba (B, E)`` of the
    expert families it serves (``slots``, length E: the module of each family)."""
    slot = torch.as_tensor(list(slots), device=proba.device)
    n_modules = int(slot.max()) + 1 if slot.numel() else 0
    return proba.new_zeros(proba.shape[0], n_modules).index_add_(1, slot, proba)


def mix_intensities(
    general: torch.Tensor, modules: Sequence[torch.Tensor], weights: torch.Tensor
) -> torch.Tensor:
    """The soft mixture ``(1 − Σ_m P_m) w_general + Σ_m P_m w_m`` of intensities ``(B, K)``
    with module probabilities ``weights (B, M)`` (module docstring; decision 0044)."""
    out = general * (1.0 - weights.sum(1, keepdim=True))
    for m, w in enumerate(modules):
        out = out + weights[:, m : m + 1] * w
    return out


def _soft_output(general: ShrinkageOutput, mixed: torch.Tensor) -> ShrinkageOutput:
    """``(α, π, log_var)`` from mixed intensities (float64); ``π`` of the general model
    where ``α = 0``."""
    alpha = mixed.sum(1)
    pos = alpha > 0
    pi = torch.where(
        pos[:, None], mixed / torch.where(pos, alpha, 1.0)[:, None], general.weights.double()
    )
    dtype = general.alpha.dtype
    return ShrinkageOutput(alpha.to(dtype), pi.to(general.weights.dtype), general.log_var)


class FamilyGate(nn.Module):
    """Classifier ``x ↦ P(family | x)`` over ``families`` (an MLP with ReLU on
    standardised features; the feature mean and scale are buffers fitted by
    :func:`train_family_gate`)."""

    def __init__(
        self, input_dim: int, families: Sequence[str], hidden_dims: Sequence[int] = (128, 128)
    ) -> None:
        super().__init__()
        families = [str(f) for f in families]
        if len(families) < 2 or len(set(families)) != len(families):
            raise ValueError(f"the gate needs at least two distinct families, got {families}")
        if int(input_dim) < 1:
            raise ValueError(f"input_dim must be positive, got {input_dim}")
        self.input_dim, self.families = int(input_dim), families
        self.hidden_dims = [int(h) for h in hidden_dims]
        layers: list[nn.Module] = []
        d = self.input_dim
        for h in self.hidden_dims:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, len(families)))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("feature_mean", torch.zeros(self.input_dim))
        self.register_buffer("feature_scale", torch.ones(self.input_dim))

    @property
    def config(self) -> dict[str, Any]:
        return {
            "input_dim": self.input_dim,
            "families": list(self.families),
            "hidden_dims": list(self.hidden_dims),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FamilyGate:
        return cls(**dict(config))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_scale
        return self.mlp(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Family probabilities, shape ``(B, len(families))``."""
        return torch.softmax(self.logits(x), dim=-1)


class GatedExpertModel(nn.Module):
    """General model with family experts switched in by a :class:`FamilyGate` (see
    the module docstring). ``experts`` maps family names (among the gate's
    families) to models with the general model's ``input_dim`` and ``num_targets`` (the
    same module may serve several families: it is kept, saved and run once);
    ``threshold`` in ``[0.5, 1)`` so that at most one expert is used per sample."""

    model_kind = "gated_experts"

    def __init__(
        self,
        general: nn.Module,
        experts: Mapping[str, nn.Module],
        gate: FamilyGate,
        threshold: float = 0.8,
        pool_shared: bool = False,
        mixing: str = "hard",
        guards: Mapping[str, Mapping[str, Any]] | None = None,
        sole: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
        t = float(threshold)
        if not 0.5 <= t < 1.0:
            raise ValueError(f"threshold must be in [0.5, 1) (one expert at most), got {threshold}")
        if not experts:
            raise ValueError("a gated model needs at least one expert")
        missing = sorted(set(experts) - set(gate.families))
        if missing:
            raise ValueError(f"experts {missing} are not among the gate's families {gate.families}")
        dims = {(int(general.config["input_dim"]), int(general.config["num_targets"]))}
        dims |= {
            (int(m.config["input_dim"]), int(m.config["num_targets"])) for m in experts.values()
        }
        if len(dims) != 1:
            raise ValueError(
                f"general model and experts disagree on (input_dim, num_targets): {dims}"
            )
        self.input_dim, self.num_targets = next(iter(dims))
        if gate.input_dim != self.input_dim:
            raise ValueError(
                f"the gate takes {gate.input_dim} features, the models {self.input_dim}"
            )
        self.general = general
        self.expert_families = [str(f) for f in experts]
        # one module may serve several families (decision 0035: the pretrained ensemble for
        # the non-market families); it is stored, saved and run once
        unique: list[nn.Module] = []
        self.expert_slots: list[int] = []
        for f in self.expert_families:
            j = next((k for k, m in enumerate(unique) if m is experts[f]), None)
            if j is None:
                unique.append(experts[f])
                j = len(unique) - 1
            self.expert_slots.append(j)
        self.experts = nn.ModuleList(unique)
        self.gate = gate
        self.threshold = t
        self.pool_shared = bool(pool_shared)
        self.mixing = mixing
        self.guards = _checked_guards(guards, self.expert_families, self.expert_slots, mixing)
        self.sole = _checked_sole(sole, self.expert_families, mixing)

    # -------------------------------------------------------------- config
    @property
    def config(self) -> dict[str, Any]:
        owner = {
            j: self.expert_families[self.expert_slots.index(j)] for j in range(len(self.experts))
        }
        config = {
            "input_dim": self.input_dim,
            "num_targets": self.num_targets,
            "threshold": self.threshold,
            "general": model_spec(self.general),
            "experts": {owner[j]: model_spec(m) for j, m in enumerate(self.experts)},
            "gate": self.gate.config,
        }
        shared = {
            f: owner[j]
            for f, j in zip(self.expert_families, self.expert_slots, strict=True)
            if owner[j] != f
        }
        if shared:  # only then: the config of a model without shared experts is unchanged
            config["expert_order"] = list(self.expert_families)
            config["shared_experts"] = shared
        if self.pool_shared:  # only then: earlier configs load unchanged
            config["pool_shared"] = True
        if self.mixing != "hard":  # likewise
            config["mixing"] = self.mixing
        if self.guards:  # likewise
            config["guards"] = {f: dict(g) for f, g in self.guards.items()}
        if self.sole:  # likewise (decision 0075)
            config["sole"] = {f: dict(g) for f, g in self.sole.items()}
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GatedExpertModel:

        built = {f: build_model(spec) for f, spec in config["experts"].items()}
        shared = dict(config.get("shared_experts", {}))
        order = list(config.get("expert_order", built))
        experts = {f: built[shared.get(f, f)] for f in order}
        return cls(
            build_model(config["general"]),
            experts,
            FamilyGate.from_config(config["gate"]),
            threshold=config["threshold"],
            pool_shared=bool(config.get("pool_shared", False)),
            mixing=str(config.get("mixing", "hard")),
            guards=config.get("guards"),
            sole=config.get("sole"),
        )

    def with_changes(self, **changes: Any) -> GatedExpertModel:
        """This model with some of its constructor's arguments changed (``general``,
        ``experts``, ``gate``, ``threshold``, ``pool_shared``, ``mixing``, ``guards``,
        ``sole``); every other one kept, the modules and gate shared, not copied: the one
        way the helpers rebuild a gated model, so that none drops a part."""
        args = {
            "general": self.general, "experts": self.expert_map(), "gate": self.gate,
            "threshold": self.threshold, "pool_shared": self.pool_shared,
            "mixing": self.mixing, "guards": self.guards, "sole": self.sole,
        }  # fmt: skip
        unknown = sorted(set(changes) - set(args))
        if unknown:
            raise TypeError(f"unknown arguments {unknown}; one of {sorted(args)}")
        return GatedExpertModel(**(args | changes))

    def expert_map(self) -> dict[str, nn.Module]:
        """``{family: the module that serves it}`` (a shared module appears under each of
        its families)."""
        return {
            f: self.experts[j] for f, j in zip(self.expert_families, self.expert_slots, strict=True)
        }

    def families_by_module(self) -> list[list[int]]:
        """For each module of ``experts``, the indices (into ``expert_families``, the
        values of :meth:`expert_choice`) of the families it serves."""
        return [
            [i for i, s in enumerate(self.expert_slots) if s == j] for j in range(len(self.experts))
        ]

    def _served_by(self, choice: torch.Tensor, families: list[int]) -> torch.Tensor:
        """Mask of the samples whose chosen family is one of ``families``."""
        return torch.isin(choice, torch.tensor(families, device=choice.device))

    # -------------------------------------------------------------- forward
    def _expert_proba(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's probabilities of the expert families, ``(B, E)``."""
        cols = [self.gate.families.index(f) for f in self.expert_families]
        return self.gate(x)[:, cols]

    def expert_choice(self, x: torch.Tensor) -> torch.Tensor:
        """Index into ``expert_families`` of the expert used per sample (``-1``: general);
        under soft mixing, the module with the largest probability when it exceeds the
        threshold (a description of the gate only: every module contributes)."""
        proba = self._expert_proba(x)
        return choose_expert(proba, self.expert_slots, self.threshold, self.pool_shared)

    def family_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's probabilities of the expert families, ``(B, E)`` float64, with each
        guarded family's probability moved to its fallback family where its guard is
        closed (:data:`GUARD_KEYS`), then one-hot where a sole server's family is sure
        (:data:`SOLE_KEYS`); without either, the probabilities themselves."""
        weights = apply_guards(self._expert_proba(x).double(), x, self.guard_columns())
        return apply_sole(weights, x, self.sole_columns())

    def sole_columns(self) -> list[tuple[int, float, float | None]]:
        """The sole servers as :func:`apply_sole` takes them (columns into
        ``expert_families``)."""
        fam = self.expert_families
        return [(fam.index(f), g["threshold"], g["max_log_ratio"]) for f, g in self.sole.items()]

    def guard_columns(self) -> list[tuple[int, int | None, float, float | None]]:
        """The guards as :func:`apply_guards` takes them (columns into
        ``expert_families``; ``None``: the general model)."""
        fam = self.expert_families
        return [
            (
                fam.index(f),
                None if g["fallback"] is None else fam.index(g["fallback"]),
                g["threshold"],
                g["max_log_ratio"],
            )
            for f, g in self.guards.items()
        ]

    def module_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Each module's weight in the soft mixture, ``(B, M)`` float64: the sum of
        :meth:`family_weights` over the families it serves."""
        return module_probabilities(self.family_weights(x), self.expert_slots)

    def forward(self, x: torch.Tensor, regime: Any = None) -> ShrinkageOutput:
        out = self.general(x, regime)
        if self.mixing == "soft":
            parts = [e(x, regime).intensities.double() for e in self.experts]
            mixed = mix_intensities(out.intensities.double(), parts, self.module_weights(x))
            return _soft_output(out, mixed)
        choice = self.expert_choice(x)
        alpha, weights = out.alpha, out.weights
        for expert, families in zip(self.experts, self.families_by_module(), strict=True):
            use = self._served_by(choice, families)
            if not bool(use.any()):
                continue
            e = expert(x, regime)
            alpha = torch.where(use, e.alpha.to(alpha.dtype), alpha)
            weights = torch.where(use[:, None], e.weights.to(weights.dtype), weights)
        return ShrinkageOutput(alpha, weights, out.log_var)

    def _as_input(self, features: Any) -> torch.Tensor:
        x = self.general._as_input(features)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"features must have shape (B, {self.input_dim}), got {tuple(x.shape)}"
            )
        return x

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        """Eval-mode, no-grad prediction (training mode unchanged): the gate first, then
        the general model and each expert only on the rows it serves (the same values
        as :meth:`forward` in eval mode, to float32 rounding)."""
        x = self._as_input(features)
        if self.mixing == "soft":
            with eval_mode(self.gate):
                weights_m = self.module_weights(x)
            out = self.general.predict(x, regime)
            parts = [e.predict(x, regime).intensities.double() for e in self.experts]
            return _soft_output(out, mix_intensities(out.intensities.double(), parts, weights_m))
        with eval_mode(self.gate):
            choice = self.expert_choice(x)
        out = self.general.predict(x, regime)
        alpha, weights = out.alpha, out.weights
        for expert, families in zip(self.experts, self.families_by_module(), strict=True):
            rows = self._served_by(choice, families).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            r = regime
            if r is not None and torch.as_tensor(r).ndim > 0:
                r = torch.as_tensor(r)[rows]
            e = expert.predict(x[rows], r)
            alpha = alpha.index_put((rows,), e.alpha.to(alpha.dtype))
            weights = weights.index_put((rows,), e.weights.to(weights.dtype))
        return ShrinkageOutput(alpha, weights, out.log_var)

    @torch.no_grad()
    def interval(
        self, features: Any, level: float = 0.9, regime: Any = None, method: str = "auto"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Central level-``ℓ`` interval of the intensity, ``α ± σ · q_ℓ``: ``α`` of the
        model that serves each sample, ``σ`` and ``q_ℓ`` (conformal by default) of the
        general model, which must be an :class:`~shrinklab.models.ensemble.EnsembleModel`
        (see :meth:`~shrinklab.models.ensemble.EnsembleModel.interval`). The conformal
        calibration is the general model's; where an expert serves, its ``α`` is on
        average closer to the oracle than the general one (that is why it serves)."""
        multiplier = getattr(self.general, "interval_multiplier", None)
        if multiplier is None:
            raise TypeError(
                f"the general model ({type(self.general).__name__}) has no intervals; "
                "an EnsembleModel has"
            )
        q = multiplier(level, method)
        out = self.predict(features, regime)
        half = torch.exp(0.5 * out.log_var.double()) * q
        return out.alpha.double() - half, out.alpha.double() + half

    @torch.no_grad()
    def expert_share(self, features: Any) -> dict[str, float]:
        """Share of the samples in ``features`` that each expert (and ``general``) serves;
        under soft mixing, the mean weight of each family (its gate probability) and of
        the general model."""
        x = self._as_input(features)
        if self.mixing == "soft":
            with eval_mode(self.gate):
                proba = self.family_weights(x)
            out = {"general": float((1.0 - proba.sum(1)).mean())}
            return out | {f: float(proba[:, i].mean()) for i, f in enumerate(self.expert_families)}
        choice = self.expert_choice(x)
        out = {"general": float((choice == -1).float().mean())}
        return out | {
            f: float((choice == i).float().mean()) for i, f in enumerate(self.expert_families)
        }
