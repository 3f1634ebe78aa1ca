"""Ensembles of shrinkage networks with calibrated uncertainty (spec §7, "Model Ensembling").

An :class:`EnsembleModel` is itself a model (``predict(features, regime=None) ->
ShrinkageOutput``) and is saved and loaded as one file by
:func:`shrinklab.network.save_model` / :func:`~shrinklab.network.load_model`
(model kind ``"ensemble"``; the members are rebuilt from their stored kinds and
configs, their weights and the temperature live in one ``state_dict``).

Combining the members (``combine="intensities"``, the default)
--------------------------------------------------------------
The members' per-target intensities ``w_m = α_m π_m`` are averaged,
``w̄ = Σ_m ρ_m w_m`` (``ρ`` the member weights, uniform unless given), and split
back into ``α = Σ_k w̄_k`` and ``π = w̄ / α``. Because ``Σ_k w_mk = α_m``, ``α`` is
also the mean of the members' ``α_m``; ``π`` is the ``α``-weighted mean of the
``π_m``. Averaging in ``w`` is the natural choice for this family: the Frobenius loss
``wᵀGw − 2cᵀw + d`` is convex in ``w``, so by Jensen's inequality the ensemble's loss
is never above the members' mean loss, on every sample. ``combine="mean"`` averages
``α`` and ``π`` separately instead (same ``α``, plain mean of ``π``).

Uncertainty
-----------
Each member predicts a Gaussian for the intensity, ``N(α_m, v_m)`` with
``v_m = exp(log_var_m)``. The ensemble is the mixture ``Σ_m ρ_m N(α_m, v_m)``; its
variance (law of total variance) is

    v = Σ_m ρ_m (α_m − ᾱ)²  +  Σ_m ρ_m v_m        (between-member + mean predicted)

[Lakshminarayanan, Pritzel & Blundell, "Simple and scalable predictive uncertainty
estimation using deep ensembles", NeurIPS 2017]. (The trainer fits each member's
uncertainty head to the squared intensity-vector error ``‖ŵ − w*‖²``; here it serves as
the variance of the intensity ``α``.) The output is

    log_var = log τ (between + λ · within)

with a temperature ``τ`` and a weight ``λ ≥ 0`` of the members' own variance, both
fitted on *validation* data only by maximum Gaussian likelihood
(:func:`fit_variance_weights`; ``τ`` alone, closed form: :func:`fit_temperature`);
defaults ``τ = λ = 1`` give the plain mixture variance. This is temperature scaling
of the variance [Guo et al., "On calibration of modern neural networks", ICML 2017;
Kuleshov, Fenner & Ermon, ICML 2018 for regression] with one extra weight: on
synthetic data the members' uncertainty heads were found far less informative
about the error than the members' spread, and ``λ`` lets the likelihood say so.

Intervals: conformal recalibration
----------------------------------
A single temperature matches the variance, not the shape: when the standardised
residuals ``z = (α* − α) / σ`` are heavier-tailed than Gaussian, the Gaussian
intervals ``α ± z_{(1+ℓ)/2} σ`` over-cover at 50 % and under-cover at high levels,
and no ``τ`` fixes both. :meth:`EnsembleModel.calibrate` therefore also stores the
sorted *normalised* nonconformity scores ``s_i = |α*_i − α_i| / σ_i`` of the
calibration (validation) samples, ``σ = exp(log_var / 2)`` the calibrated predicted
standard deviation (:func:`conformal_scores`), and the interval at level ``ℓ`` is

    α ± σ · s_(k),   k = ⌈(m + 1) ℓ⌉      (m calibration samples)

(:meth:`EnsembleModel.interval`, :func:`conformal_quantile`): split conformal
prediction with locally weighted (normalised) scores [Lei, G'Sell, Rinaldo, Tibshirani
& Wasserman, "Distribution-free predictive inference for regression", JASA 2018, §5.2;
Papadopoulos, Gammerman & Vovk 2008; the adaptive idea as in Romano, Patterson &
Candès, "Conformalized quantile regression", NeurIPS 2019]. For a new sample
exchangeable with the calibration samples the coverage is at least ``ℓ`` (and at most
``ℓ + 1/(m+1)`` without ties), at every level at once, whatever the residuals'
distribution; ``k > m`` gives the whole line. ``log_var`` keeps its meaning (the
temperature-calibrated variance; σ shapes the intervals per sample). The scores live
in the ``state_dict`` (buffer ``conformal_scores``, float64), so they survive
``save_model`` / ``load_model``; files written before they existed load with no
scores, and their intervals are Gaussian.

Calibration diagnostics: :func:`interval_coverage` (central Gaussian intervals, or the
conformal ones with ``scores=``), :func:`reliability_curve` (observed vs nominal
coverage over many levels, for the reliability diagram), :func:`gaussian_nll`, and the
selection rule :func:`select_ensemble` (a calibration gate,
:func:`coverage_within_tolerance`; then the best held-out PRIAL, ties within a paired
standard error broken by the narrower intervals).

Builders (all deterministic for fixed seeds on CPU)
---------------------------------------------------
* :func:`train_multi_seed` — the same architecture from ``n_members`` seeds.
* :func:`train_checkpoint_average` — stochastic weight averaging (or an EMA) of the
  weights at the ends of the last epochs of one run, batch-norm statistics
  recomputed [Izmailov et al., "Averaging weights leads to wider optima and better
  generalization", UAI 2018]; returned as a one-member ensemble so that it is
  calibrated and stored like the others.
* :func:`train_architecture_ensemble` — one member per architecture.
* :func:`train_boosted` — sequential members, each trained on a resample of the
  training set drawn with probabilities increasing with the current ensemble's
  normalised Frobenius loss (resampling boosting for regression, Drucker,
  "Improving regressors using boosting techniques", ICML 1997).

PRIAL of members and ensembles: :func:`prial_of`, :func:`prial_table`; over a mixture
of worlds, :func:`normalised_prial_of` weighs every world the same.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm
from torch import nn

from shrinklab.network import (
    MLShrinkageNetwork,
    ShrinkageOutput,
    eval_mode,
    register_model_kind,
)

__all__ = [
    "DEFAULT_ARCHITECTURES",
    "EnsembleModel",
    "boosting_probabilities",
    "conformal_quantile",
    "conformal_scores",
    "coverage_table",
    "coverage_within_tolerance",
    "fit_temperature",
    "fit_variance_weights",
    "gaussian_nll",
    "interval_coverage",
    "member_kind",
    "model_class",
    "predict_numpy",
    "prial_of",
    "normalised_prial_of",
    "prial_table",
    "quadratic_loss",
    "reliability_curve",
    "reliability_curves",
    "select_ensemble",
    "take",
    "train_architecture_ensemble",
    "train_boosted",
    "train_checkpoint_average",
    "train_multi_seed",
]

COMBINE_MODES = ("intensities", "mean")
INTERVAL_METHODS = ("auto", "conformal", "gaussian")


# --------------------------------------------------------------------- registry
def model_class(kind: str) -> type:
    """The class registered for model kind ``kind`` (see ``register_model_kind``)."""
    from shrinklab import network as _network

    kinds = _network._MODEL_KINDS  # the registry save_model/load_model use
    if kind not in kinds:  # compressed members (e.g. "int8") and gated models register on import
        import shrinklab.compress  # noqa: F401
        import shrinklab.experts  # noqa: F401
    if kind not in kinds:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(kinds)}")
    return kinds[kind]


def member_kind(model: nn.Module) -> str:
    """Registered kind name of ``model`` (exact type match, as ``save_model`` does)."""
    from shrinklab import network as _network

    for name, cls in _network._MODEL_KINDS.items():
        if type(model) is cls:
            return name
    raise ValueError(
        f"{type(model).__name__} is not a registered model kind; call register_model_kind"
    )


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"kind", "config"}`` of a registered model, from which :func:`build_model`
    rebuilds it untrained (how composite models store their parts)."""
    return {"kind": member_kind(model), "config": copy.deepcopy(_config_of(model))}


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """The untrained model of a :func:`model_spec`."""
    return model_class(spec["kind"]).from_config(spec["config"])


# ----------------------------------------------------------------------- model
class EnsembleModel(nn.Module):
    """Average of member models with a mixture variance, a fitted temperature and
    conformal intervals (see the module docstring).

    Parameters
    ----------
    members : models with ``forward(x, regime=None) -> ShrinkageOutput`` and a
        registered kind (e.g. :class:`~shrinklab.network.MLShrinkageNetwork`),
        all with the same ``input_dim`` and ``num_targets``.
    temperature : scale on the variance (``> 0``; 1 = uncalibrated).
    combine : ``"intensities"`` (average ``w = απ``; default) or ``"mean"``
        (average ``α`` and ``π`` separately). See the module docstring.
    member_weights : non-negative mixture weights ``ρ`` (normalised to sum 1);
        uniform when ``None``.
    label : free-text name of the ensemble kind (``"multi_seed"``, ``"boosted"``...).
    """

    model_kind = "ensemble"

    def __init__(
        self,
        members: Sequence[nn.Module],
        temperature: float = 1.0,
        combine: str = "intensities",
        member_weights: Sequence[float] | None = None,
        label: str = "ensemble",
    ) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
        dims = {(_config_of(m).get("input_dim"), _config_of(m).get("num_targets")) for m in members}
        if len(dims) != 1:
            raise ValueError(f"members disagree on (input_dim, num_targets): {sorted(dims)}")
        self.input_dim, self.num_targets = next(iter(dims))
        for m in members:
            member_kind(m)  # fail early if a kind is unregistered
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.label = str(label)
        if member_weights is None:
            rho = torch.full((len(members),), 1.0 / len(members), dtype=torch.float64)
        else:
            rho = torch.as_tensor(np.asarray(member_weights, dtype=np.float64))
            if rho.shape != (len(members),):
                raise ValueError(f"member_weights must have {len(members)} entries")
            if not bool(torch.isfinite(rho).all()) or bool((rho < 0).any()) or rho.sum() <= 0:
                raise ValueError("member_weights must be finite, non-negative, not all zero")
            rho = rho / rho.sum()
        self.register_buffer("member_weights", rho.to(torch.float32))
        self.register_buffer("temperature", torch.tensor(1.0))
        self.register_buffer("within_weight", torch.tensor(1.0))
        # sorted normalised conformal scores of the calibration set; empty = none fitted
        self.register_buffer("conformal_scores", torch.empty(0, dtype=torch.float64))
        self.set_temperature(temperature)

    # -------------------------------------------------------------- config
    @property
    def config(self) -> dict[str, Any]:
        """Plain-dict config; :meth:`from_config` rebuilds the (untrained) ensemble."""
        return {
            "input_dim": self.input_dim,
            "num_targets": self.num_targets,
            "combine": self.combine,
            "label": self.label,
            "members": [model_spec(m) for m in self.members],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EnsembleModel:
        members = [build_model(m) for m in config["members"]]
        return cls(members, combine=config.get("combine", "intensities"), label=config["label"])

    def set_temperature(self, temperature: float, within_weight: float | None = None) -> None:
        """Set ``τ`` (and, if given, the weight ``λ`` of the members' own variance).

        The conformal scores are relative to the predicted ``σ``: a change of ``τ`` or
        ``λ`` discards them (the intervals fall back to Gaussian until
        :meth:`calibrate` or :meth:`set_conformal_scores` is called again)."""
        t = float(temperature)
        if not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        lam = float(self.within_weight) if within_weight is None else float(within_weight)
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"within_weight must be finite and >= 0, got {within_weight}")
        same_t = float(self.temperature) == float(torch.tensor(t, dtype=self.temperature.dtype))
        same_lam = float(self.within_weight) == float(
            torch.tensor(lam, dtype=self.within_weight.dtype)
        )
        if not (same_t and same_lam):
            self.set_conformal_scores(None)
        self.temperature.fill_(t)
        self.within_weight.fill_(lam)

    def set_conformal_scores(self, scores: Any) -> None:
        """Store the normalised calibration scores ``|α* − α| / σ`` (any order; kept
        sorted, float64), or clear them with ``None``."""
        device = self.conformal_scores.device
        if scores is None:
            self.conformal_scores = torch.empty(0, dtype=torch.float64, device=device)
            return
        s = _as_1d(scores, "scores")
        if np.any(s < 0):
            raise ValueError("conformal scores must be non-negative")
        self.conformal_scores = torch.as_tensor(np.sort(s), dtype=torch.float64, device=device)

    @property
    def has_conformal(self) -> bool:
        """Whether conformal scores are stored (else :meth:`interval` is Gaussian)."""
        return self.conformal_scores.numel() > 0

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # the number of conformal scores is data-dependent: take the stored length; a
        # file from before conformal calibration has none (Gaussian intervals)
        key = prefix + "conformal_scores"
        stored = state_dict.get(key)
        device = self.conformal_scores.device
        n = int(stored.numel()) if torch.is_tensor(stored) else 0
        self.conformal_scores = torch.zeros(n, dtype=torch.float64, device=device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if stored is None and key in missing_keys:
            missing_keys.remove(key)

    # ------------------------------------------------------------- forward
    def member_outputs(self, x: torch.Tensor, regime: Any = None) -> list[ShrinkageOutput]:
        return [m(x, regime) for m in self.members]

    def variance_components(
        self, outs: Sequence[ShrinkageOutput]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(alpha, weights, between, within)`` of the ensemble from member outputs:
        the combined intensity and target weights, the between-member variance
        ``Σ ρ_m (α_m − ᾱ)²`` and the mean predicted variance ``Σ ρ_m v_m``."""
        dtype = outs[0].alpha.dtype
        rho = self.member_weights.to(dtype)
        A = torch.stack([o.alpha for o in outs])  # (M, B)
        P = torch.stack([o.weights for o in outs])  # (M, B, K)
        # clamp: an untrained variance head can emit log-variances that overflow exp()
        V = torch.stack([torch.exp(o.log_var.clamp(-30.0, 30.0)) for o in outs])  # (M, B)
        alpha = torch.einsum("m,mb->b", rho, A)
        if self.combine == "intensities":
            w = torch.einsum("m,mbk->bk", rho, A[..., None] * P)
            # π = w̄ / α; where α = 0 every member has α_m = 0 and π is the mean π_m
            mean_pi = torch.einsum("m,mbk->bk", rho, P)
            safe = alpha > 0
            weights = torch.where(
                safe[:, None], w / torch.where(safe, alpha, 1.0)[:, None], mean_pi
            )
        else:
            weights = torch.einsum("m,mbk->bk", rho, P)
        between = torch.einsum("m,mb->b", rho, (A - alpha) ** 2)
        within = torch.einsum("m,mb->b", rho, V)
        return alpha, weights, between, within

    def combine_outputs(
        self, outs: Sequence[ShrinkageOutput], temperature: torch.Tensor | float | None = None
    ) -> ShrinkageOutput:
        """Ensemble output from member outputs: ``log_var = log τ (between + λ within)``
        (see the module docstring); ``temperature`` overrides ``τ``."""
        alpha, weights, between, within = self.variance_components(outs)
        t = self.temperature if temperature is None else temperature
        t = torch.as_tensor(t, dtype=alpha.dtype, device=alpha.device)
        lam = self.within_weight.to(alpha.dtype)
        # floor: a one-member ensemble with λ = 0 has no variance at all
        log_var = torch.log((t * (between + lam * within)).clamp_min(1e-12))
        return ShrinkageOutput(alpha, weights, log_var)

    def forward(self, x: torch.Tensor, regime: Any = None) -> ShrinkageOutput:
        return self.combine_outputs(self.member_outputs(x, regime))

    def _as_input(self, features: Any) -> torch.Tensor:
        param = next(self.parameters())
        x = features if torch.is_tensor(features) else torch.as_tensor(np.asarray(features))
        x = x.to(device=param.device, dtype=param.dtype)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"features must have shape (B, {self.input_dim}), got {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("features contain NaN or inf")
        return x

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        """Eval-mode, no-grad ensemble prediction (training mode restored afterwards)."""
        with eval_mode(self):
            return self(self._as_input(features), regime)

    @torch.no_grad()
    def predict_members(self, features: Any, regime: Any = None) -> list[ShrinkageOutput]:
        """Each member's eval-mode prediction."""
        with eval_mode(self):
            return self.member_outputs(self._as_input(features), regime)

    @torch.no_grad()
    def calibrate(
        self,
        features: Any,
        alpha_true: Any,
        regime: Any = None,
        fit_within_weight: bool = True,
        conformal: bool = True,
    ) -> float:
        """Fit the variance calibration on held-out (validation) data; returns ``τ``.

        ``alpha_true`` is the oracle intensity ``α* = Σ_k w*_k`` of each sample. With
        ``fit_within_weight`` (and at least two members) ``τ`` and ``λ`` are fitted
        jointly by :func:`fit_variance_weights`, else ``λ = 1`` and ``τ`` by
        :func:`fit_temperature`. With ``conformal`` the normalised scores
        ``|α* − α| / σ`` under the fitted variance are stored for :meth:`interval`
        (split conformal, Lei et al. 2018); else no scores are kept.
        """
        with eval_mode(self):
            outs = self.member_outputs(self._as_input(features), regime)
        truth = _as_1d(alpha_true, "alpha_true")
        if truth.size != outs[0].alpha.shape[0]:
            raise ValueError(
                f"alpha_true has {truth.size} entries for {outs[0].alpha.shape[0]} samples"
            )
        alpha, _, between, within = self.variance_components(outs)
        if fit_within_weight and len(self.members) > 1:
            t, lam = fit_variance_weights(alpha, between, within, truth)
        else:
            t, lam = fit_temperature(alpha, between + within, truth), 1.0
        self.set_temperature(t, lam)
        self.set_conformal_scores(None)
        if conformal:
            out = self.combine_outputs(outs)
            var = out.log_var.double().exp()  # as in interval(): σ from log_var in float64
            self.set_conformal_scores(conformal_scores(out.alpha.double(), var, truth))
        return t

    def interval_multiplier(self, level: float, method: str = "auto") -> float:
        """Half-width of the level-``ℓ`` interval in units of the predicted ``σ``:
        the conformal quantile ``s_(⌈(m+1)ℓ⌉)`` of the stored scores (``inf`` when
        ``⌈(m+1)ℓ⌉ > m``), or the Gaussian ``z_{(1+ℓ)/2}``. ``method``: ``"auto"``
        (conformal when scores are stored, else Gaussian), ``"conformal"`` (``ValueError``
        without scores) or ``"gaussian"``."""
        if method not in INTERVAL_METHODS:
            raise ValueError(f"method must be one of {INTERVAL_METHODS}, got {method!r}")
        lv = float(_check_levels([level])[0])
        if method == "conformal" and not self.has_conformal:
            raise ValueError("no conformal scores stored: call calibrate() first")
        use_scores = method != "gaussian" and self.has_conformal
        scores = self.conformal_scores.cpu().numpy() if use_scores else None
        return float(_multipliers(np.array([lv]), scores)[0])

    @torch.no_grad()
    def interval(
        self, features: Any, level: float = 0.9, regime: Any = None, method: str = "auto"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Central level-``ℓ`` interval ``α ± σ · q_ℓ`` of the intensity (float64
        ``(lower, upper)``, each ``(B,)``); ``q_ℓ`` from :meth:`interval_multiplier`
        (conformal by default when calibrated). Not clipped to ``[0, 1]``."""
        q = self.interval_multiplier(level, method)
        out = self.predict(features, regime)
        alpha = out.alpha.double()
        half = torch.exp(0.5 * out.log_var.double()) * q
        return alpha - half, alpha + half


register_model_kind(EnsembleModel.model_kind, EnsembleModel)


def _config_of(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, dict):
        raise ValueError(f"{type(model).__name__} has no config dict")
    return cfg


# ------------------------------------------------------------------ calibration
def _as_1d(v: Any, name: str) -> np.ndarray:
    if torch.is_tensor(v):
        v = v.detach().cpu().double().numpy()
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _triple(pred_mean: Any, pred_var: Any, truth: Any) -> tuple[np.ndarray, ...]:
    mu = _as_1d(pred_mean, "pred_mean")
    var = _as_1d(pred_var, "pred_var")
    y = _as_1d(truth, "truth")
    if not (mu.shape == var.shape == y.shape):
        raise ValueError(
            f"pred_mean, pred_var and truth must have the same length, got "
            f"{mu.size}, {var.size}, {y.size}"
        )
    if np.any(var <= 0):
        raise ValueError("pred_var must be > 0")
    return mu, var, y


def gaussian_nll(pred_mean: Any, pred_var: Any, truth: Any) -> float:
    """Mean Gaussian negative log-likelihood ``½ log(2π v) + (y − μ)² / (2v)``."""
    mu, var, y = _triple(pred_mean, pred_var, truth)
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + 0.5 * (y - mu) ** 2 / var))


def fit_temperature(pred_mean: Any, pred_var: Any, truth: Any) -> float:
    """Variance temperature ``τ`` minimising the Gaussian NLL of ``N(μ, τ v)``.

    Closed form: ``d/dτ Σ ½[log τ v_i + r_i² / (τ v_i)] = 0`` gives
    ``τ = mean(r_i² / v_i)`` with ``r = y − μ`` (the mean squared z-score). Fit it
    on validation data only. Raises ``ValueError`` if every residual is 0.
    """
    mu, var, y = _triple(pred_mean, pred_var, truth)
    t = float(np.mean((y - mu) ** 2 / var))
    if t <= 0 or not math.isfinite(t):
        raise ValueError("temperature undefined: all residuals are zero")
    return t


def fit_variance_weights(
    pred_mean: Any,
    between: Any,
    within: Any,
    truth: Any,
    lam_range: tuple[float, float] = (1e-6, 1e6),
) -> tuple[float, float]:
    """``(τ, λ)`` maximising the Gaussian likelihood of ``N(μ, τ (b + λ w))`` on
    validation data (``b`` between-member variance, ``w`` members' predicted
    variance). For fixed ``λ`` the optimal ``τ`` is closed form
    (:func:`fit_temperature`); ``λ`` maximises the profile likelihood over
    ``lam_range`` (log-grid, then a bounded 1-D refinement). A useless uncertainty
    head gets ``λ → 0``; a useless member spread gets a large ``λ``. If the members
    agree exactly everywhere (``b ≡ 0``) only ``τ λ`` is identified: ``λ = 1``."""
    from scipy.optimize import minimize_scalar

    mu, y = _as_1d(pred_mean, "pred_mean"), _as_1d(truth, "truth")
    b, w = _as_1d(between, "between"), _as_1d(within, "within")
    if not (mu.shape == y.shape == b.shape == w.shape):
        raise ValueError("pred_mean, between, within and truth must have the same length")
    if np.any(b < 0) or np.any(w < 0):
        raise ValueError("between and within must be non-negative")
    r2 = (y - mu) ** 2
    if not np.any(r2 > 0):
        raise ValueError("temperature undefined: all residuals are zero")
    if not np.any(b > 0):
        return fit_temperature(mu, w, y), 1.0
    lo, hi = (math.log(v) for v in lam_range)

    def profile(log_lam: float) -> float:
        v = b + math.exp(log_lam) * w
        if np.any(v <= 0):
            return math.inf
        t = float(np.mean(r2 / v))
        return float(np.mean(np.log(t * v)))

    grid = np.linspace(lo, hi, 121)
    vals = [profile(g) for g in grid]
    i = int(np.argmin(vals))
    res = minimize_scalar(
        profile, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]), method="bounded"
    )
    best = res.x if res.fun <= vals[i] else grid[i]
    lam = math.exp(best)
    return float(np.mean(r2 / (b + lam * w))), lam


def _check_levels(levels: Sequence[float]) -> np.ndarray:
    lv = np.asarray(levels, dtype=np.float64).reshape(-1)
    if lv.size == 0 or np.any(~np.isfinite(lv)) or np.any((lv <= 0) | (lv >= 1)):
        raise ValueError(f"levels must be in (0, 1), got {levels}")
    return lv


def conformal_scores(pred_mean: Any, pred_var: Any, truth: Any) -> np.ndarray:
    """Sorted normalised nonconformity scores ``|y − μ| / √v`` of a calibration set
    (split conformal with locally weighted residuals; Lei et al., JASA 2018, §5.2)."""
    mu, var, y = _triple(pred_mean, pred_var, truth)
    return np.sort(np.abs(y - mu) / np.sqrt(var))


def conformal_quantile(scores: Any, level: float) -> float:
    """Split-conformal quantile of ``m`` calibration scores at level ``ℓ``: the
    ``k``-th smallest, ``k = ⌈(m + 1) ℓ⌉`` (the empirical quantile at the corrected
    level ``k / m``), or ``inf`` when ``k > m``. A new exchangeable score is ``≤`` it
    with probability ``≥ ℓ``, and ``≤ ℓ + 1/(m+1)`` without ties [Vovk, Gammerman &
    Shafer 2005; Lei et al. 2018, Thm. 2.2]. ``(m+1)ℓ`` is rounded to 9 decimals
    before the ceiling so that e.g. ``m = 19, ℓ = 0.9`` gives ``k = 18``."""
    s = _as_1d(scores, "scores")
    if np.any(s < 0):
        raise ValueError("scores must be non-negative")
    lv = float(_check_levels([level])[0])
    m = s.size
    k = math.ceil(round((m + 1) * lv, 9))
    if k > m:
        return math.inf
    return float(np.partition(s, k - 1)[k - 1])


def _multipliers(levels: np.ndarray, scores: Any) -> np.ndarray:
    """Interval half-widths in units of ``√v``: Gaussian ``z_{(1+ℓ)/2}`` or conformal."""
    if scores is None:
        return norm.ppf(0.5 + levels / 2)
    return np.array([conformal_quantile(scores, v) for v in levels])


def interval_coverage(
    pred_mean: Any,
    pred_var: Any,
    truth: Any,
    levels: Sequence[float] = (0.5, 0.9),
    *,
    scores: Any = None,
) -> dict[float, float]:
    """Fraction of ``truth`` inside the central intervals ``μ ± q_ℓ √v`` for each
    nominal level ``ℓ``: ``{ℓ: coverage}``. ``q_ℓ = z_{(1+ℓ)/2}`` (Gaussian), or with
    calibration ``scores`` (:func:`conformal_scores`, computed on *other* data) the
    conformal :func:`conformal_quantile`."""
    mu, var, y = _triple(pred_mean, pred_var, truth)
    lv = _check_levels(levels)
    z = np.abs(y - mu) / np.sqrt(var)
    q = _multipliers(lv, scores)
    return {float(level): float(np.mean(z <= qi)) for level, qi in zip(lv, q)}


def reliability_curve(
    pred_mean: Any,
    pred_var: Any,
    truth: Any,
    levels: Sequence[float] | None = None,
    *,
    scores: Any = None,
) -> pd.DataFrame:
    """Observed vs nominal coverage of central intervals (reliability diagram):
    Gaussian, or conformal with calibration ``scores`` (as :func:`interval_coverage`).

    Columns ``nominal``, ``observed``, ``mean_width`` (mean interval width; ``inf``
    where the conformal interval is the whole line) and ``n``; a calibrated model lies
    on the diagonal. Default levels 0.05, 0.10, …, 0.95.
    """
    lv = _check_levels(np.arange(1, 20) / 20 if levels is None else levels)
    mu, var, y = _triple(pred_mean, pred_var, truth)
    cov = interval_coverage(mu, var, y, lv, scores=scores)
    sd = np.sqrt(var)
    q = _multipliers(lv, scores)
    return pd.DataFrame(
        {
            "nominal": lv,
            "observed": [cov[float(v)] for v in lv],
            "mean_width": [float(np.mean(2 * qi * sd)) for qi in q],
            "n": y.size,
        }
    )


def coverage_within_tolerance(
    coverage: Mapping[float, float],
    n: int,
    *,
    n_calibration: int | None = None,
    n_se: float = 3.0,
    one_sided: bool = False,
) -> bool:
    """Whether every observed coverage ``c_ℓ`` (``{ℓ: c_ℓ}`` on ``n`` independent
    samples) lies within ``n_se`` standard errors of ``ℓ`` (``one_sided``: is not
    *below* ``ℓ`` by more; over-coverage passes). The standard error is the binomial
    ``√(ℓ(1−ℓ)/n)``; with ``n_calibration = m`` (conformal intervals) the calibration
    draw adds ``ℓ(1−ℓ)/m`` to the variance (the coverage given the calibration set is
    Beta-distributed with about that variance; Vovk, "Conditional validity of
    inductive conformal predictors", ACML 2012)."""
    if n < 1 or (n_calibration is not None and n_calibration < 1):
        raise ValueError("n and n_calibration must be >= 1")
    if not math.isfinite(n_se) or n_se <= 0:
        raise ValueError(f"n_se must be finite and > 0, got {n_se}")
    if not coverage:
        raise ValueError("coverage is empty")
    for level, c in coverage.items():
        lv = float(_check_levels([level])[0])
        var = lv * (1 - lv) * (1 / n + (1 / n_calibration if n_calibration else 0.0))
        gap = lv - float(c) if one_sided else abs(float(c) - lv)
        if gap > n_se * math.sqrt(var):
            return False
    return True


def _level_tag(level: float) -> str:
    return f"{100 * level:g}".replace(".", "_")


def _calibration_inputs(
    model: Any, data: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(α, σ², α*, conformal scores or None)`` of ``model`` on ``data``."""
    out = predict_numpy(model, _get(data, "features"))
    scores = None
    if isinstance(model, EnsembleModel) and model.has_conformal:
        scores = model.conformal_scores.cpu().numpy()
    return out.alpha.numpy(), out.log_var.exp().numpy(), _alpha_star(data), scores


def coverage_table(
    models: Mapping[str, Any], data: Any, levels: Sequence[float] = (0.5, 0.9)
) -> pd.DataFrame:
    """Calibration of each model's intensity intervals on ``data`` (fields
    ``features``, ``oracle_w``; truth ``α* = Σ_k w*_k``), one row per model (index
    ``model``): ``temperature``, ``within_weight``, ``n_calibration`` (number of
    conformal scores, 0 if none), per level ``ℓ`` (tag ``50``, ``90``…) the observed
    coverage of the Gaussian (``gaussian_50``) and conformal (``conformal_50``; NaN
    without scores) intervals and their mean widths (``width_50_gaussian``,
    ``width_50_conformal``), the Gaussian NLL ``nll`` and ``n``. Use it on data that
    played no part in the calibration."""
    lv = _check_levels(levels)
    rows = []
    for name, model in models.items():
        mu, var, y, scores = _calibration_inputs(model, data)
        row: dict[str, Any] = {
            "model": name,
            "temperature": float(getattr(model, "temperature", torch.tensor(1.0))),
            "within_weight": float(getattr(model, "within_weight", torch.tensor(1.0))),
            "n_calibration": 0 if scores is None else int(scores.size),
        }
        for method, sc in (("gaussian", None), ("conformal", scores)):
            if method == "conformal" and sc is None:
                curve = pd.DataFrame({"observed": np.nan, "mean_width": np.nan}, index=lv)
            else:
                curve = reliability_curve(mu, var, y, lv, scores=sc).set_index("nominal")
            for v in lv:
                row[f"{method}_{_level_tag(v)}"] = float(curve.loc[v, "observed"])
                row[f"width_{_level_tag(v)}_{method}"] = float(curve.loc[v, "mean_width"])
        row["nll"] = gaussian_nll(mu, var, y)
        row["n"] = int(y.size)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def reliability_curves(
    models: Mapping[str, Any],
    data: Any,
    methods: Sequence[str] = ("conformal", "gaussian"),
    levels: Sequence[float] | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`reliability_curve` of each model on ``data`` for each interval method
    (``"conformal"``: skipped for a model without scores; ``"gaussian"``), keyed
    ``"name (method)"`` — the input of :func:`shrinklab.plots.reliability_diagram`."""
    bad = sorted(set(methods) - {"conformal", "gaussian"})
    if bad:
        raise ValueError(f"methods must be 'conformal' or 'gaussian', got {bad}")
    curves = {}
    for name, model in models.items():
        mu, var, y, scores = _calibration_inputs(model, data)
        for method in methods:
            if method == "conformal" and scores is None:
                continue
            sc = scores if method == "conformal" else None
            curves[f"{name} ({method})"] = reliability_curve(mu, var, y, levels, scores=sc)
    return curves


def _row_calibrated(row: pd.Series, levels: np.ndarray, n_se: float, one_sided: bool) -> bool:
    """:func:`coverage_within_tolerance` for a :func:`coverage_table` row (conformal
    coverage when the model has scores, else Gaussian)."""
    m = int(row["n_calibration"])
    method = "conformal" if m > 0 else "gaussian"
    cov = {float(v): float(row[f"{method}_{_level_tag(v)}"]) for v in levels}
    return coverage_within_tolerance(
        cov, int(row["n"]), n_calibration=m or None, n_se=n_se, one_sided=one_sided
    )


def select_ensemble(
    models: Mapping[str, Any],
    data: Any,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    n_se: float = 3.0,
    one_sided: bool = True,
    tie_se: float = 1.0,
) -> tuple[str, pd.DataFrame]:
    """Choose the deployed model on held-out ``data`` (validation worlds not used for
    calibration): ``(name, table)``.

    1. *Calibration gate*: a model is ``calibrated`` when its interval coverage on
       ``data`` at every level (conformal when it has scores, else Gaussian) passes
       :func:`coverage_within_tolerance` with ``n_se`` standard errors (the calibration
       draw counted via its number of scores); with ``one_sided`` (default) only
       under-coverage fails: when ``data`` is the validation set that early stopping
       used, the members fit it a little better than fresh worlds and every kind
       over-covers it somewhat. If none passes, all are kept.
    2. *PRIAL*: among those, the best PRIAL and every model ``tied`` with it: whose
       PRIAL is below the best by at most ``tie_se`` paired standard errors
       (:func:`shrinklab.ablation.prial_with_se`, delta method on the same samples),
       and every model with a PRIAL above such a model's.
    3. *Sharpness*: among the tied, the narrowest mean interval at the highest level.

    "Maximise sharpness subject to calibration" [Gneiting, Balabdaoui & Raftery,
    "Probabilistic forecasts, calibration and sharpness", JRSS B 2007], with the
    covariance's PRIAL first because the covariance is the product. ``table`` (one row
    per model) holds ``prial``, ``prial_vs_best`` and its ``prial_vs_best_se``, the
    coverage and width columns of :func:`coverage_table`, ``calibrated``, ``tied``
    and ``chosen``.
    """
    from shrinklab.ablation import prial_with_se

    if not models:
        raise ValueError("models is empty")
    if not math.isfinite(tie_se) or tie_se < 0:
        raise ValueError(f"tie_se must be finite and >= 0, got {tie_se}")
    lv = _check_levels(levels)
    table = coverage_table(models, data, lv)
    w = {k: predict_numpy(m, _get(data, "features")).intensities for k, m in models.items()}
    table["prial"] = [prial_with_se(w[k], data)[0] for k in table.index]
    table["calibrated"] = [_row_calibrated(row, lv, n_se, one_sided) for _, row in table.iterrows()]
    pool = [k for k in table.index if table.loc[k, "calibrated"]] or list(table.index)
    best = max(pool, key=lambda k: float(table.loc[k, "prial"]))
    gaps = {k: prial_with_se(w[k], data, reference_w=w[best])[2:] for k in table.index}
    table["prial_vs_best"] = [gaps[k][0] for k in table.index]
    table["prial_vs_best_se"] = [gaps[k][1] for k in table.index]
    close = [k for k in pool if k == best or gaps[k][0] >= -tie_se * gaps[k][1]]
    # monotone in PRIAL: a kind above a tied kind is tied too (a noisier kind must not
    # be tied while a better, steadier one is not)
    floor = min(float(table.loc[k, "prial"]) for k in close)
    table["tied"] = [k in pool and float(table.loc[k, "prial"]) >= floor for k in table.index]
    top = _level_tag(float(lv.max()))
    width = table[f"width_{top}_conformal"].fillna(table[f"width_{top}_gaussian"])
    chosen = str(width[table["tied"]].idxmin())
    table["chosen"] = table.index == chosen
    return chosen, table


# ------------------------------------------------------------------------ PRIAL
def quadratic_loss(w: Any, G: Any, c: Any, d: Any) -> torch.Tensor:
    """Frobenius loss of ``Σ̂(w)`` from the stored quadratic form, ``wᵀGw − 2cᵀw + d``
    per sample (``w (N,K)``, ``G (N,K,K)``, ``c (N,K)``, ``d (N,)``), in float64 on
    CPU (:func:`shrinklab.losses.quadratic_frobenius`, unnormalised)."""
    from shrinklab.losses import quadratic_frobenius

    w, G, c, d = (_as_f64(v) for v in (w, G, c, d))
    return quadratic_frobenius(w, G, c, d, normalise=False, reduction="none")


def _as_f64(v: Any) -> torch.Tensor:
    t = v if torch.is_tensor(v) else torch.as_tensor(np.asarray(v))
    return t.detach().cpu().double()


def _get(data: Any, name: str) -> Any:
    if isinstance(data, Mapping):
        return data[name]
    return getattr(data, name)


def predict_numpy(model: Any, features: Any, regime: Any = None) -> ShrinkageOutput:
    """``model.predict`` with numpy/torch features, as a ShrinkageOutput of float64 CPU tensors."""
    out = model.predict(features) if regime is None else model.predict(features, regime)
    return ShrinkageOutput(*(torch.as_tensor(v).detach().cpu().double() for v in out))


def prial_of(w: Any, data: Any) -> float:
    """PRIAL (%) of intensities ``w (N, K)`` on a dataset with fields ``G, c, d,
    loss_fsopt``: ``100 (mean d − mean L(w)) / (mean d − mean loss_fsopt)``
    (``d`` is the sample covariance's loss; Ledoit & Wolf 2022)."""
    from shrinklab.estimators import prial

    G, c, d = _get(data, "G"), _get(data, "c"), _get(data, "d")
    loss = quadratic_loss(w, G, c, d)
    return prial(loss, torch.as_tensor(np.asarray(d)).double(), _get(data, "loss_fsopt"))


def normalised_prial_of(w: Any, data: Any) -> float:
    """PRIAL (%) of intensities ``w (N, K)`` on per-world normalised losses
    (:func:`shrinklab.estimators.normalised_prial`: every world weighs the same, scale
    invariant), for comparing models over a synthetic *distribution* of worlds, where
    :func:`prial_of` follows the few worlds with the largest ``‖S − Σ‖²``. It ranks
    models like the mean normalised loss, the training objective."""
    from shrinklab.estimators import normalised_prial

    G, c, d = _get(data, "G"), _get(data, "c"), _get(data, "d")
    return normalised_prial(quadratic_loss(w, G, c, d), _as_f64(d), _get(data, "loss_fsopt"))


def prial_table(
    models: Mapping[str, Any],
    data: Any,
    *,
    include_members: bool = True,
    extra_intensities: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """PRIAL of each model (and, for ensembles, each member) and the multi-target
    oracle on ``data`` (fields ``features, G, c, d, loss_fsopt, oracle_w``).

    ``extra_intensities`` adds rows from given intensities ``(N, K)`` (e.g. a
    classical estimator written in the family). Columns: ``model``, ``kind``
    (``model``/``member``/``oracle``/``reference``), ``prial``, ``mean_norm_loss``
    (mean of ``L(w)/d``).
    """
    feats = _get(data, "features")
    d = torch.as_tensor(np.asarray(_get(data, "d"))).double()
    rows: list[dict[str, Any]] = []

    def add(name: str, kind: str, w: Any) -> None:
        loss = quadratic_loss(w, _get(data, "G"), _get(data, "c"), d)
        rows.append(
            {
                "model": name,
                "kind": kind,
                "prial": prial_of(w, data),
                "mean_norm_loss": float((loss / d.clamp_min(1e-300)).mean()),
            }
        )

    for name, model in models.items():
        if include_members and isinstance(model, EnsembleModel):
            for i, out in enumerate(model.predict_members(feats)):
                add(f"{name}[{i}]", "member", out.intensities.double())
        add(name, "model", predict_numpy(model, feats).intensities)
    for name, w in (extra_intensities or {}).items():
        add(name, "reference", w)
    add("oracle", "oracle", _get(data, "oracle_w"))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------- builders
_SUBSET_FIELDS = (
    "features",
    "oracle_w",
    "alpha_star",
    "G",
    "c",
    "d",
    "loss_fsopt",
    "p",
    "n",
    "df",
    "difficulty",
    "sample_seed",
)


def take(data: Any, idx: Any) -> SimpleNamespace:
    """Rows ``idx`` of a training-set-like object, as a namespace with the array fields
    the trainer and the metrics use (``features, oracle_w, G, c, d, loss_fsopt`` and,
    when present, ``alpha_star, p, n, df, difficulty, sample_seed``)."""
    idx = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx, dtype=np.int64)
    out = {}
    for name in _SUBSET_FIELDS:
        v = data.get(name) if isinstance(data, Mapping) else getattr(data, name, None)
        if v is None:
            continue
        if torch.is_tensor(v):
            out[name] = v[torch.as_tensor(idx)]
        elif np.ndim(v) >= 1:
            out[name] = np.asarray(v)[idx]
    return SimpleNamespace(**out)


def _network_config(train_set: Any, model_config: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = dict(model_config or {})
    cfg.setdefault("input_dim", int(np.shape(_get(train_set, "features"))[1]))
    cfg.setdefault("num_targets", int(np.shape(_get(train_set, "oracle_w"))[1]))
    return cfg


def _train_member(
    model_config: Mapping[str, Any],
    seed: int,
    train_set: Any,
    valid_set: Any,
    config: Any,
    out_dir: Path,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    model: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    from shrinklab.train import TrainConfig, train

    cfg = dataclasses.replace(config or TrainConfig(), seed=int(seed))
    if model is None:
        torch.manual_seed(int(seed))
        model = MLShrinkageNetwork(**model_config)
    history = train(
        model, train_set, valid_set, cfg, out_dir, resume=False, on_epoch_end=on_epoch_end
    )
    return model.cpu().eval(), history


def _finish(members: list[nn.Module], label: str, calibration_set: Any, **kw: Any) -> EnsembleModel:
    ens = EnsembleModel(members, label=label, **kw)
    if calibration_set is not None:
        ens.calibrate(_get(calibration_set, "features"), _alpha_star(calibration_set))
    return ens


def _alpha_star(data: Any) -> np.ndarray:
    """Oracle intensity ``α* = Σ_k w*_k`` per sample."""
    return _as_f64(_get(data, "oracle_w")).sum(1).numpy()


def train_multi_seed(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    n_members: int = 5,
    seeds: Sequence[int] | None = None,
    model_config: Mapping[str, Any] | None = None,
    config: Any = None,
    calibration_set: Any = None,
) -> EnsembleModel:
    """Deep ensemble: ``n_members`` networks of one architecture (``model_config``,
    keyword arguments of :class:`~shrinklab.network.MLShrinkageNetwork`; ``input_dim``
    and ``num_targets`` default to the data's) trained by
    :func:`shrinklab.train.train` with ``config`` (a ``TrainConfig``) from different
    seeds (``seeds``, default ``0, 1, …``: initialisation and batch order)
    [Lakshminarayanan et al. 2017]. Member ``i`` writes to ``out_dir/member_i``.
    With ``calibration_set`` the temperature is fitted on it (validation data only).
    """
    seeds = list(range(n_members)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) < 1:
        raise ValueError("need at least one member")
    mcfg = _network_config(train_set, model_config)
    members = [
        _train_member(mcfg, s, train_set, valid_set, config, Path(out_dir) / f"member_{i}")[0]
        for i, s in enumerate(seeds)
    ]
    return _finish(members, "multi_seed", calibration_set)


def train_architecture_ensemble(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    architectures: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
    config: Any = None,
    calibration_set: Any = None,
) -> EnsembleModel:
    """One member per architecture (keyword arguments of
    :class:`~shrinklab.network.MLShrinkageNetwork`). Default: the specification's MLP
    ``(128, 64, 32)``, the same with feature self-attention, and a wider
    ``(256, 128, 64)`` MLP. Member ``i`` uses seed ``seed + i``."""
    archs = list(architectures) if architectures is not None else list(DEFAULT_ARCHITECTURES)
    if len(archs) < 2:
        raise ValueError("an architecture ensemble needs at least two architectures")
    members = [
        _train_member(
            _network_config(train_set, a),
            seed + i,
            train_set,
            valid_set,
            config,
            Path(out_dir) / f"arch_{i}",
        )[0]
        for i, a in enumerate(archs)
    ]
    return _finish(members, "architecture", calibration_set)


DEFAULT_ARCHITECTURES: tuple[dict[str, Any], ...] = (
    {"hidden_dims": (128, 64, 32)},
    {"hidden_dims": (128, 64, 32), "use_attention": True},
    {"hidden_dims": (256, 128, 64)},
)


def train_checkpoint_average(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    model_config: Mapping[str, Any] | None = None,
    config: Any = None,
    seed: int = 0,
    start_epoch: int | None = None,
    method: str = "swa",
    ema_decay: float = 0.9,
    bn_batch_size: int = 1024,
    calibration_set: Any = None,
) -> EnsembleModel:
    """Checkpoint averaging over the epochs of one training run.

    ``method="swa"``: equal-weight average of the weights at the end of every epoch
    from ``start_epoch`` (default: the second half of ``config.epochs``) — stochastic
    weight averaging with the trainer's cyclic (cosine, warm restarts) learning rate
    [Izmailov et al., UAI 2018]; ``method="ema"``: exponential moving average with
    ``ema_decay`` per epoch. Early stopping is switched off (``patience`` set above
    ``epochs``) so that every epoch is seen. Batch-norm running statistics of the
    averaged weights are recomputed on the training set
    (``torch.optim.swa_utils.update_bn``). Returns a one-member
    :class:`EnsembleModel` (label ``"checkpoint_average"``) holding the averaged
    network, so that it is calibrated (``calibration_set``), saved and compared like
    the other ensemble kinds; ``.members[0]`` is the averaged network and ``.history``
    the training history (``history["averaged_epochs"]`` lists the epochs averaged).
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

    from shrinklab.train import TrainConfig

    if method not in ("swa", "ema"):
        raise ValueError(f"method must be 'swa' or 'ema', got {method!r}")
    if method == "ema" and not 0.0 < ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
    cfg = dataclasses.replace(config or TrainConfig(), seed=int(seed))
    cfg = dataclasses.replace(cfg, patience=cfg.epochs + 1)
    start = cfg.epochs // 2 if start_epoch is None else int(start_epoch)
    if not 0 <= start < cfg.epochs:
        raise ValueError(f"start_epoch must be in [0, {cfg.epochs}), got {start_epoch}")
    torch.manual_seed(int(seed))
    model = MLShrinkageNetwork(**_network_config(train_set, model_config))
    kw = {"multi_avg_fn": get_ema_multi_avg_fn(ema_decay)} if method == "ema" else {}
    averaged: dict[str, Any] = {}
    epochs: list[int] = []

    def on_epoch_end(epoch: int, record: dict[str, Any]) -> None:
        if epoch < start:
            return
        if "model" not in averaged:
            averaged["model"] = AveragedModel(model, device=torch.device("cpu"), **kw)
        averaged["model"].update_parameters(model)  # the first call copies
        epochs.append(epoch)

    _, history = _train_member(
        {}, seed, train_set, valid_set, cfg, Path(out_dir), on_epoch_end, model=model
    )
    net = averaged["model"].module
    feats = torch.as_tensor(np.asarray(_get(train_set, "features")), dtype=torch.float32)
    update_bn([feats[i : i + bn_batch_size] for i in range(0, feats.shape[0], bn_batch_size)], net)
    history = dict(history)
    history["averaged_epochs"] = epochs
    ens = _finish([net.eval()], "checkpoint_average", calibration_set)
    ens.history = history
    return ens


def boosting_probabilities(
    model: Any, data: Any, emphasis: str = "regret", uniform_mix: float = 0.1
) -> np.ndarray:
    """Resampling probabilities for the next boosting member: proportional to the
    current model's normalised Frobenius loss per sample, ``L(ŵ)/d`` (``emphasis="loss"``)
    or to its excess over the oracle, ``(L(ŵ) − L(w*))/d`` (``"regret"``, default: the
    part a better network can remove), mixed with ``uniform_mix`` of the uniform
    distribution so that no sample is dropped for good."""
    if emphasis not in ("regret", "loss"):
        raise ValueError(f"emphasis must be 'regret' or 'loss', got {emphasis!r}")
    if not 0.0 <= uniform_mix <= 1.0:
        raise ValueError(f"uniform_mix must be in [0, 1], got {uniform_mix}")
    G, c, d = _get(data, "G"), _get(data, "c"), _as_f64(_get(data, "d"))
    w = predict_numpy(model, _get(data, "features")).intensities
    score = quadratic_loss(w, G, c, d)
    if emphasis == "regret":
        score = score - quadratic_loss(_get(data, "oracle_w"), G, c, d)
    score = (score / d.clamp_min(1e-300)).clamp_min(0.0).numpy()
    n = score.size
    total = score.sum()
    base = score / total if total > 0 else np.full(n, 1.0 / n)
    return (1.0 - uniform_mix) * base + uniform_mix / n


def train_boosted(
    train_set: Any,
    valid_set: Any,
    out_dir: str | Path,
    *,
    n_members: int = 3,
    model_config: Mapping[str, Any] | None = None,
    config: Any = None,
    seed: int = 0,
    emphasis: str = "regret",
    uniform_mix: float = 0.1,
    calibration_set: Any = None,
) -> EnsembleModel:
    """Boosting by resampling [Drucker, ICML 1997; Freund & Schapire 1997]: member 0 is
    trained on the training set; member ``m`` on ``N`` rows drawn with replacement with
    the probabilities of :func:`boosting_probabilities` for the ensemble of members
    ``0..m−1`` (its worst normalised-Frobenius-loss cases are drawn most often). The
    trainer has no sample-weight hook, hence resampling. The members are averaged with
    equal weights (as the other ensembles). ``out_dir/boost_m`` per member; the draws
    use ``numpy.random.default_rng(seed)``."""
    if n_members < 1:
        raise ValueError("need at least one member")
    mcfg = _network_config(train_set, model_config)
    rng = np.random.default_rng(int(seed))
    n = int(np.shape(_get(train_set, "features"))[0])
    members: list[nn.Module] = []
    data = train_set
    for m in range(n_members):
        if m > 0:
            probs = boosting_probabilities(
                EnsembleModel(members), train_set, emphasis=emphasis, uniform_mix=uniform_mix
            )
            idx = rng.choice(n, size=n, replace=True, p=probs)
            # a TrainingSet keeps its type (and all fields) through its own subset()
            data = train_set.subset(idx) if hasattr(train_set, "subset") else take(train_set, idx)
        net, _ = _train_member(
            mcfg, seed + m, data, valid_set, config, Path(out_dir) / f"boost_{m}"
        )
        members.append(net)
    return _finish(members, "boosted", calibration_set)
