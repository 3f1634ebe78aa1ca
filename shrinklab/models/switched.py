"""A deployed model that serves the windows a discriminant calls funds with another general
network (docs/decisions/0068-fund-switch-with-synthetic-class.md).

``final.pt``'s general network is fine-tuned on the 20 bundled stocks; on universes of
diversified funds (the ETF fold, fund universes, Ken French's portfolios) the pretrained
general network is better. Decision 0067 separated the two kinds of window with a
quadratic discriminant of their features (Fisher 1936, with class covariances);
decision 0068 added the synthetic training worlds the fine-tuned network serves well as
a third class. This module holds what the deployed file needs:

* :class:`FeatureDiscriminant` — the discriminant, fitted from reference feature sets,
  its numbers kept as float64 buffers so that a model file carries it;
* :func:`with_general` — a gated model with another general network;
* :func:`switched_output` — one model's outputs on some rows, another's elsewhere;
* :class:`SwitchedModel` (model kind ``domain_switch``) — a gated model (``near``) whose
  windows with discriminant score above ``tau`` are served by the same gated model with
  ``far_general`` as its general network; optionally (decision 0071) the windows that a
  second discriminant calls real single-stock windows get extra shrinkage of their
  correlations (:func:`towards_diagonal`), and (decision 0073) the windows whose tails
  pre-test as Gaussian (:func:`shrinklab.core.tail_pretest.gaussian_rows`) move a share of
  their identity intensity to the QIS target (:func:`towards_qis`).

The studies that chose it live in :mod:`shrinklab.studies.domain_switch` and
:mod:`shrinklab.studies.fund_switch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.core.features import window_sizes
from shrinklab.core.tail_pretest import gaussian_rows
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.models.experts import GatedExpertModel
from shrinklab.models.network import ShrinkageOutput
from shrinklab.models.registry import build_model, model_spec

__all__ = [
    "FeatureDiscriminant",
    "SwitchedModel",
    "before_switch",
    "column_scale",
    "reference_sets",
    "share_to_qis",
    "standardised",
    "switched_output",
    "towards_diagonal",
    "towards_qis",
    "with_general",
]


def reference_sets(refs: Sequence[Any], ridge: float) -> list[np.ndarray]:
    """Reference feature sets as float64 ``(N, F)`` arrays, each with ``N > F``, one ``F``
    for all, finite; ``ridge`` positive (else ``ValueError``)."""
    out = [np.asarray(r, dtype=np.float64) for r in refs]
    for R in out:
        if R.ndim != 2 or R.shape[0] <= R.shape[1] or R.shape[1] != out[0].shape[1]:
            raise ValueError(f"need references (N, F) with N > F and one F, got {R.shape}")
        if not np.isfinite(R).all():
            raise ValueError("the reference features must be finite")
    if not ridge > 0:
        raise ValueError(f"ridge must be positive, got {ridge}")
    return out


def column_scale(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD of the columns of ``F`` (a constant column gets SD 1)."""
    sd = F.std(0)
    return F.mean(0), np.where(sd > 0, sd, 1.0)


def standardised(features: Any, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``(features − mean) / sd`` for features ``(B, F)`` (numpy or torch), as float64."""
    f = features.detach().cpu().numpy() if torch.is_tensor(features) else features
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != mean.shape[0]:
        raise ValueError(f"features must be (B, {mean.shape[0]}), got {f.shape}")
    return (f - mean) / sd


class FeatureDiscriminant(nn.Module):
    """Quadratic discriminant of reference sets of features (equal priors; Fisher 1936,
    with class covariances). Class ``c`` scores ``s_c(f) = (z − μ_c)ᵀ (C_c + ridge·I)⁻¹
    (z − μ_c) + log det(C_c + ridge·I)`` on features standardised by the pooled mean and
    SD, ``z = (f − mean) / sd``; the score of a window is ``min(s_a, s_others…) − s_b``:
    twice the log-likelihood ratio of class ``b`` against the most likely other class
    under Gaussian classes, positive only where ``b`` is the most likely class.
    Decision 0067: ``a`` stock windows, ``b`` fund windows; decision 0068: a third class,
    synthetic training worlds.

    Build it with :meth:`fit`; the constructor makes an empty one of ``num_classes``
    classes of ``num_features`` features, to load a state into (a model file). The
    numbers are float64 buffers; scores are float64 NumPy arrays."""

    def __init__(self, num_classes: int, num_features: int, ridge: float = 1e-2) -> None:
        super().__init__()
        if int(num_classes) < 2 or int(num_features) < 1:
            raise ValueError(
                f"need >= 2 classes and >= 1 feature, got {num_classes}, {num_features}"
            )
        self.num_classes, self.num_features = int(num_classes), int(num_features)
        self.ridge = float(ridge)
        C, F = self.num_classes, self.num_features
        f64 = torch.float64
        self.register_buffer("mean", torch.zeros(F, dtype=f64))
        self.register_buffer("sd", torch.ones(F, dtype=f64))
        self.register_buffer("class_means", torch.zeros(C, F, dtype=f64))
        self.register_buffer("precisions", torch.eye(F, dtype=f64).repeat(C, 1, 1))
        self.register_buffer("log_dets", torch.zeros(C, dtype=f64))

    @classmethod
    def fit(
        cls, reference_a: Any, reference_b: Any, *others: Any, ridge: float = 1e-2
    ) -> FeatureDiscriminant:
        """The discriminant of ``a`` against ``b`` (and ``others``) from reference
        features ``(N_c, F)``; the pooled mean and SD of all of them standardise."""
        refs = reference_sets([reference_a, reference_b, *others], ridge)
        mean, sd = column_scale(np.vstack(refs))
        out = cls(len(refs), refs[0].shape[1], ridge)
        parts = []
        for R in refs:
            Z = (R - mean) / sd
            C = np.cov(Z, rowvar=False) + ridge * np.eye(Z.shape[1])
            parts.append((Z.mean(0), np.linalg.inv(C), float(np.linalg.slogdet(C)[1])))
        with torch.no_grad():
            out.mean.copy_(torch.from_numpy(mean))
            out.sd.copy_(torch.from_numpy(sd))
            out.class_means.copy_(torch.from_numpy(np.stack([m for m, _, _ in parts])))
            out.precisions.copy_(torch.from_numpy(np.stack([P for _, P, _ in parts])))
            out.log_dets.copy_(torch.tensor([ld for _, _, ld in parts], dtype=torch.float64))
        return out

    @property
    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "num_features": self.num_features,
                "ridge": self.ridge}  # fmt: skip

    def class_scores(self, features: Any) -> np.ndarray:
        """``s_c`` of every class, ``(C, B)`` float64."""
        mean, sd = self.mean.cpu().numpy(), self.sd.cpu().numpy()
        Z = standardised(features, mean, sd)
        means, precisions = self.class_means.cpu().numpy(), self.precisions.cpu().numpy()
        log_dets = self.log_dets.cpu().numpy()
        return np.stack(
            [
                np.einsum("bi,ij,bj->b", Z - m, P, Z - m) + ld
                for m, P, ld in zip(means, precisions, log_dets.tolist(), strict=True)
            ]
        )

    def score(self, features: Any) -> np.ndarray:
        """``min(s_a, s_others…) − s_b`` per window, ``(B,)`` float64."""
        a, b, *rest = self.class_scores(features)
        for other in rest:  # decision 0068: ``b`` must beat every other class too
            a = np.minimum(a, other)
        return a - b

    def forward(self, features: Any) -> np.ndarray:  # the same as score
        return self.score(features)


def with_general(model: GatedExpertModel, general: Any) -> GatedExpertModel:
    """``model`` (experts, gate, guards, mixing and ``extra`` the same modules and values)
    with ``general`` as its general network, in eval mode."""
    if not isinstance(model, GatedExpertModel):
        raise TypeError(f"model must be a GatedExpertModel, got {type(model).__name__}")
    out = model.with_changes(general=general)
    out.extra = dict(getattr(model, "extra", {}) or {})
    return out.eval()


def switched_output(
    near: ShrinkageOutput, far: ShrinkageOutput, rows: torch.Tensor
) -> ShrinkageOutput:
    """``far``'s intensities on the ``rows`` (bool ``(B,)``), ``near``'s elsewhere, in
    ``near``'s dtype; ``near``'s ``log_var`` everywhere."""
    alpha = torch.where(rows, far.alpha.to(near.alpha.dtype), near.alpha)
    weights = torch.where(rows[:, None], far.weights.to(near.weights.dtype), near.weights)
    return ShrinkageOutput(alpha, weights, near.log_var)


def towards_diagonal(out: ShrinkageOutput, rows: torch.Tensor, strength: float) -> ShrinkageOutput:
    """On the ``rows`` (bool ``(B,)``), ``Σ̂ ← (1 − c) Σ̂ + c·diag(S)`` with ``c = strength``,
    written in the family ``Σ̂ = S + α Σ_k π_k (T_k − S)``: ``α' = (1 − c) α + c`` and
    ``π' = ((1 − c) α π + c e_diag) / α'`` (``e_diag``: the ``diagonal`` target of
    :data:`shrinklab.core.targets.TARGET_NAMES`). It shrinks the correlations towards
    zero by ``c`` and keeps the sample variances (Ledoit & Wolf 2004's diagonal target);
    decision 0071. Elsewhere ``out`` unchanged."""
    c = float(strength)
    if not 0.0 <= c <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    k = TARGET_NAMES.index("diagonal")
    if out.weights.shape[-1] != len(TARGET_NAMES):
        raise ValueError(f"need weights over the {len(TARGET_NAMES)} targets {TARGET_NAMES}")
    alpha = (1.0 - c) * out.alpha + c
    weights = (1.0 - c) * out.alpha[:, None] * out.weights
    weights[:, k] += c
    weights = weights / torch.clamp(alpha, min=torch.finfo(alpha.dtype).tiny)[:, None]
    rows = rows.to(out.alpha.device)
    return ShrinkageOutput(
        torch.where(rows, alpha, out.alpha),
        torch.where(rows[:, None], weights, out.weights),
        out.log_var,
    )


def towards_qis(out: ShrinkageOutput, rows: torch.Tensor, share: float) -> ShrinkageOutput:
    """On the ``rows`` (bool ``(B,)``), a ``share`` of the identity target's intensity
    ``α π_identity`` moved to the QIS target (Ledoit & Wolf 2022): ``α`` unchanged,
    ``π_identity ← (1 − s) π_identity``, ``π_qis ← π_qis + s π_identity``. The identity
    share is a hedge against heavy tails that costs where returns are Gaussian and QIS is
    nearly the oracle (decision 0073). Elsewhere ``out`` unchanged."""
    s = float(share)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share!r}")
    if out.weights.shape[-1] != len(TARGET_NAMES):
        raise ValueError(f"need weights over the {len(TARGET_NAMES)} targets {TARGET_NAMES}")
    i, q = TARGET_NAMES.index("identity"), TARGET_NAMES.index("qis")
    move = s * out.weights[:, i]
    weights = out.weights.clone()
    weights[:, i] -= move
    weights[:, q] += move
    rows = rows.to(out.weights.device)
    return ShrinkageOutput(out.alpha, torch.where(rows[:, None], weights, out.weights), out.log_var)


def share_to_qis(out: ShrinkageOutput, rows: torch.Tensor, share: float) -> ShrinkageOutput:
    """On the ``rows`` (bool ``(B,)``), a ``share`` of every target's weight moved to the
    QIS target (Ledoit & Wolf 2022): ``α`` unchanged, ``π ← (1 − s) π + s e_qis``. On long
    windows of diversified universes QIS and the sample covariance, which shrink less
    than the linear targets, are the best classical estimators (decision 0074).
    Elsewhere ``out`` unchanged."""
    s = float(share)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share!r}")
    if out.weights.shape[-1] != len(TARGET_NAMES):
        raise ValueError(f"need weights over the {len(TARGET_NAMES)} targets {TARGET_NAMES}")
    weights = (1.0 - s) * out.weights
    weights[:, TARGET_NAMES.index("qis")] += s
    rows = rows.to(out.weights.device)
    return ShrinkageOutput(out.alpha, torch.where(rows[:, None], weights, out.weights), out.log_var)


class SwitchedModel(nn.Module):
    """``near`` (a :class:`GatedExpertModel`) on the windows whose discriminant score is
    at most ``tau``; on the others the same gated model with ``far_general`` as its
    general network (:func:`with_general`; decisions 0067 and 0068: the pretrained
    network on windows most like funds). ``log_var`` is ``near``'s everywhere, and so are
    ``extra`` (the volatility timing), ``feature_names`` and ``target_names`` when the
    model is built in memory (a model file carries its own). ``far_scale`` in ``[0, 1]``
    multiplies the far model's intensity ``α`` (its target weights unchanged; 1: as it
    is; decision 0069).

    With ``stock`` (a second :class:`FeatureDiscriminant` whose class ``b`` is real stock
    windows; decision 0071), the windows not served far whose ``stock`` score is above
    ``stock_tau`` get :func:`towards_diagonal` with ``stock_strength``. With
    ``gauss_share`` above zero (decision 0073), every window whose kurtosis pre-test
    statistic is at most ``gauss_z`` and whose statistic's normal-theory SE is at most
    ``gauss_se`` (:func:`shrinklab.core.tail_pretest.gaussian_rows`) then gets
    :func:`towards_qis` with ``gauss_share``."""

    model_kind = "domain_switch"

    def __init__(
        self,
        near: GatedExpertModel,
        far_general: nn.Module,
        discriminant: FeatureDiscriminant,
        tau: float = 0.0,
        far_scale: float = 1.0,
        stock: FeatureDiscriminant | None = None,
        stock_tau: float = 0.0,
        stock_strength: float = 0.0,
        gauss_share: float = 0.0,
        gauss_z: float = 0.0,
        gauss_se: float = 0.05,
        long_n: float = 0.0,
        long_share: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(long_share) <= 1.0:
            raise ValueError(f"long_share must be in [0, 1], got {long_share!r}")
        if not (np.isfinite(long_n) and float(long_n) >= 0):
            raise ValueError(f"long_n must be a finite number >= 0, got {long_n!r}")
        if not 0.0 <= float(gauss_share) <= 1.0:
            raise ValueError(f"gauss_share must be in [0, 1], got {gauss_share!r}")
        if not np.isfinite(gauss_z):
            raise ValueError(f"gauss_z must be finite, got {gauss_z!r}")
        if not float(gauss_se) > 0:
            raise ValueError(f"gauss_se must be positive, got {gauss_se!r}")
        if not 0.0 <= float(far_scale) <= 1.0:
            raise ValueError(f"far_scale must be in [0, 1], got {far_scale!r}")
        if not 0.0 <= float(stock_strength) <= 1.0:
            raise ValueError(f"stock_strength must be in [0, 1], got {stock_strength!r}")
        if not np.isfinite(stock_tau):
            raise ValueError(f"stock_tau must be finite, got {stock_tau!r}")
        if stock is not None and stock.num_features != discriminant.num_features:
            raise ValueError("the stock discriminant must take the switch's features")
        if not isinstance(near, GatedExpertModel):
            raise TypeError(f"near must be a GatedExpertModel, got {type(near).__name__}")
        if not np.isfinite(tau):
            raise ValueError(f"tau must be finite, got {tau!r}")
        if discriminant.num_features != near.input_dim:
            raise ValueError(
                f"the discriminant takes {discriminant.num_features} features, "
                f"the model {near.input_dim}"
            )
        self.input_dim, self.num_targets = near.input_dim, near.num_targets
        self.near, self.far_general, self.discriminant = near, far_general, discriminant
        self.tau, self.far_scale = float(tau), float(far_scale)
        self.stock = stock
        self.stock_tau, self.stock_strength = float(stock_tau), float(stock_strength)
        self.gauss_share, self.gauss_z = float(gauss_share), float(gauss_z)
        self.gauss_se = float(gauss_se)
        self.long_n, self.long_share = float(long_n), float(long_share)
        # shares every module with ``near`` and ``far_general``: kept out of the module
        # tree, so the state is saved once
        object.__setattr__(self, "far", with_general(near, far_general))
        for name in ("extra", "feature_names", "target_names", "feature_schema"):
            if hasattr(near, name):
                value = getattr(near, name)
                setattr(self, name, dict(value) if isinstance(value, dict) else value)

    @property
    def config(self) -> dict[str, Any]:
        config = {
            "input_dim": self.input_dim,
            "num_targets": self.num_targets,
            "near": model_spec(self.near),
            "far_general": model_spec(self.far_general),
            "discriminant": self.discriminant.config,
            "tau": self.tau,
        }
        if self.far_scale != 1.0:  # only then: earlier configs load unchanged
            config["far_scale"] = self.far_scale
        if self.stock is not None:  # decision 0071
            config["stock"] = {
                "discriminant": self.stock.config,
                "tau": self.stock_tau,
                "strength": self.stock_strength,
            }
        if self.gauss_share != 0.0:  # decision 0073
            config["gaussian"] = {"share": self.gauss_share, "z": self.gauss_z, "se": self.gauss_se}
        if self.long_share != 0.0:  # decision 0074
            config["long_fund_qis"] = {"n": self.long_n, "share": self.long_share}
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SwitchedModel:
        return cls(
            build_model(config["near"]),
            build_model(config["far_general"]),
            FeatureDiscriminant(**dict(config["discriminant"])),
            tau=float(config["tau"]),
            far_scale=float(config.get("far_scale", 1.0)),
            **cls._stock_of(config.get("stock")),
            **cls._gaussian_of(config.get("gaussian")),
            **cls._long_of(config.get("long_fund_qis")),
        )

    @staticmethod
    def _stock_of(stock: Mapping[str, Any] | None) -> dict[str, Any]:
        if stock is None:
            return {}
        return {
            "stock": FeatureDiscriminant(**dict(stock["discriminant"])),
            "stock_tau": float(stock["tau"]),
            "stock_strength": float(stock["strength"]),
        }

    @staticmethod
    def _gaussian_of(gaussian: Mapping[str, Any] | None) -> dict[str, Any]:
        if gaussian is None:
            return {}
        return {k: float(gaussian[v]) for k, v in
                (("gauss_share", "share"), ("gauss_z", "z"), ("gauss_se", "se"))}  # fmt: skip

    @staticmethod
    def _long_of(long: Mapping[str, Any] | None) -> dict[str, Any]:
        if long is None:
            return {}
        return {"long_n": float(long["n"]), "long_share": float(long["share"])}

    def with_changes(self, **changes: Any) -> SwitchedModel:
        """This model with some of its constructor's arguments changed (every other part,
        the modules, discriminants and steps, and ``extra`` kept; eval mode): the one way
        the studies build a candidate from ``final.pt``, so no step is dropped."""
        args = {
            "near": self.near, "far_general": self.far_general,
            "discriminant": self.discriminant, "tau": self.tau, "far_scale": self.far_scale,
            "stock": self.stock, "stock_tau": self.stock_tau,
            "stock_strength": self.stock_strength, "gauss_share": self.gauss_share,
            "gauss_z": self.gauss_z, "gauss_se": self.gauss_se,
            "long_n": self.long_n, "long_share": self.long_share,
        }  # fmt: skip
        unknown = sorted(set(changes) - set(args))
        if unknown:
            raise TypeError(f"unknown arguments {unknown}; one of {sorted(args)}")
        out = SwitchedModel(**(args | changes))
        out.extra = dict(getattr(self, "extra", {}) or {})
        return out.eval()

    def _as_input(self, features: Any) -> torch.Tensor:
        return self.near._as_input(features)

    def is_far(self, features: Any) -> torch.Tensor:
        """Bool ``(B,)``: the windows served with ``far_general``."""
        return torch.as_tensor(self.discriminant.score(features) > self.tau)

    def is_stock(self, features: Any, far: torch.Tensor | None = None) -> torch.Tensor:
        """Bool ``(B,)``: the windows that get decision 0071's extra shrinkage (none
        without a ``stock`` discriminant); ``far``: :meth:`is_far` of the same features,
        where the caller has it."""
        if self.stock is None or self.stock_strength == 0.0:
            return torch.zeros(int(np.shape(features)[0]), dtype=torch.bool)
        far = self.is_far(features) if far is None else far.cpu()
        return torch.as_tensor(self.stock.score(features) > self.stock_tau) & ~far

    def is_gaussian(self, features: Any) -> torch.Tensor:
        """Bool ``(B,)``: the windows that get decision 0073's move to QIS (none when
        ``gauss_share`` is zero)."""
        if self.gauss_share == 0.0:
            return torch.zeros(int(np.shape(features)[0]), dtype=torch.bool)
        return torch.as_tensor(gaussian_rows(features, self.gauss_z, self.gauss_se))

    def is_long_fund(self, features: Any, far: torch.Tensor | None = None) -> torch.Tensor:
        """Bool ``(B,)``: the windows that get decision 0074's move to QIS, those served
        with ``far_general`` whose length is at least ``long_n`` (none when
        ``long_share`` is zero); ``far``: :meth:`is_far` of the same features, where the
        caller has it."""
        if self.long_share == 0.0:
            return torch.zeros(int(np.shape(features)[0]), dtype=torch.bool)
        far = self.is_far(features) if far is None else far.cpu()
        return torch.as_tensor(window_sizes(features)[0] >= self.long_n) & far

    def far_share(self, features: Any) -> float:
        """Share of the windows in ``features`` served with ``far_general``."""
        return float(self.is_far(features).double().mean())

    def _scaled(self, out: ShrinkageOutput) -> ShrinkageOutput:
        """The far model's outputs with ``α`` times ``far_scale``."""
        if self.far_scale == 1.0:
            return out
        return ShrinkageOutput(out.alpha * self.far_scale, out.weights, out.log_var)

    def forward(self, x: torch.Tensor, regime: Any = None) -> ShrinkageOutput:
        rows = self.is_far(x)
        out = switched_output(
            self.near(x, regime), self._scaled(self.far(x, regime)), rows.to(x.device)
        )
        return self.finish_output(out, x, rows)

    def finish_output(
        self, out: ShrinkageOutput, features: Any, far: torch.Tensor
    ) -> ShrinkageOutput:
        """``out`` after decision 0074's move to QIS on long fund-like windows, decision
        0071's extra shrinkage and decision 0073's move to QIS (each where the model has
        it)."""
        if self.long_share != 0.0:
            out = share_to_qis(out, self.is_long_fund(features, far), self.long_share)
        if self.stock is not None and self.stock_strength != 0.0:
            out = towards_diagonal(out, self.is_stock(features, far), self.stock_strength)
        if self.gauss_share != 0.0:
            out = towards_qis(out, self.is_gaussian(features), self.gauss_share)
        return out

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        """Eval-mode, no-grad prediction: ``near.predict`` on every row, the far model's
        only on the rows :meth:`is_far` picks (as the gated model's hard switch runs each
        expert on its own rows)."""
        x = self._as_input(features)
        far_rows = self.is_far(features)  # features as given
        idx = far_rows.nonzero().squeeze(-1).to(x.device)
        out = self.near.predict(x, regime)
        if idx.numel() == 0:
            return self.finish_output(out, features, far_rows)
        if regime is not None and torch.as_tensor(regime).ndim > 0:
            regime = torch.as_tensor(regime)[idx]
        far = self._scaled(self.far.predict(x[idx], regime))
        alpha = out.alpha.index_put((idx,), far.alpha.to(out.alpha.dtype))
        weights = out.weights.index_put((idx,), far.weights.to(out.weights.dtype))
        return self.finish_output(ShrinkageOutput(alpha, weights, out.log_var), features, far_rows)


def before_switch(model: nn.Module) -> nn.Module:
    """The gated model inside a :class:`SwitchedModel` (its ``near`` model, carrying the
    switched model's ``extra``: the volatility timing), or ``model`` itself: ``final.pt``
    as it was before decision 0068, which the scripts of earlier decisions take apart."""
    if not isinstance(model, SwitchedModel):
        return model
    near = model.near
    near.extra = dict(getattr(model, "extra", {}) or {})
    return near
