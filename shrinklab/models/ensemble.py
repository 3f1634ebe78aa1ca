"""Ensembles of shrinkage networks with calibrated uncertainty (the specification's
post-training "Model Ensembling" step).

An :class:`EnsembleModel` is itself a model (``predict(features, regime=None) ->
ShrinkageOutput``) and is saved and loaded as one file by
:func:`shrinklab.models.registry.save_model` / :func:`~shrinklab.models.registry.load_model`
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

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.models.calibration import (
    as_1d,
    check_levels,
    conformal_scores,
    fit_temperature,
    fit_variance_weights,
    interval_multipliers,
)
from shrinklab.models.network import ShrinkageOutput, eval_mode
from shrinklab.models.registry import (
    build_model,
    config_of,
    member_kind,
    model_spec,
)
from shrinklab.models.stacked import stacked_member_outputs

__all__ = [
    "EnsembleModel",
]


COMBINE_MODES = ("intensities", "mean")


INTERVAL_METHODS = ("auto", "conformal", "gaussian")


# ----------------------------------------------------------------------- model
class EnsembleModel(nn.Module):
    """Average of member models with a mixture variance, a fitted temperature and
    conformal intervals (see the module docstring).

    Parameters
    ----------
    members : models with ``forward(x, regime=None) -> ShrinkageOutput`` and a
        registered kind (e.g. :class:`~shrinklab.models.network.MLShrinkageNetwork`),
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
        dims = {(config_of(m).get("input_dim"), config_of(m).get("num_targets")) for m in members}
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
        s = as_1d(scores, "scores")
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
        stacked = [torch.stack([getattr(o, f) for o in outs]) for f in ShrinkageOutput._fields]
        return self._stacked_components(*stacked)

    def _stacked_components(
        self, A: torch.Tensor, P: torch.Tensor, log_var: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`variance_components` from the members' outputs stacked along dim 0:
        ``A (M, B)``, ``P (M, B, K)``, ``log_var (M, B)``."""
        M, B, K = P.shape
        rho = self.member_weights.to(A.dtype)
        # clamp: an untrained variance head can emit log-variances that overflow exp()
        V = torch.exp(log_var.clamp(-30.0, 30.0))  # (M, B)
        alpha = rho @ A

        def mean_over_members(Z: torch.Tensor) -> torch.Tensor:  # Σ_m ρ_m Z_m, (B, K)
            return (rho @ Z.reshape(M, B * K)).reshape(B, K)

        if self.combine == "intensities":
            w = mean_over_members(A[..., None] * P)
            # π = w̄ / α; where α = 0 every member has α_m = 0 and π is the mean π_m
            mean_pi = mean_over_members(P)
            safe = alpha > 0
            weights = torch.where(
                safe[:, None], w / torch.where(safe, alpha, 1.0)[:, None], mean_pi
            )
        else:
            weights = mean_over_members(P)
        between = rho @ (A - alpha) ** 2
        within = rho @ V
        return alpha, weights, between, within

    def combine_outputs(
        self, outs: Sequence[ShrinkageOutput], temperature: torch.Tensor | float | None = None
    ) -> ShrinkageOutput:
        """Ensemble output from member outputs: ``log_var = log τ (between + λ within)``
        (see the module docstring); ``temperature`` overrides ``τ``."""
        stacked = [torch.stack([getattr(o, f) for o in outs]) for f in ShrinkageOutput._fields]
        return self._combine_stacked(*stacked, temperature=temperature)

    def _combine_stacked(
        self,
        A: torch.Tensor,
        P: torch.Tensor,
        log_var: torch.Tensor,
        temperature: torch.Tensor | float | None = None,
    ) -> ShrinkageOutput:
        """:meth:`combine_outputs` from the members' outputs stacked along dim 0."""
        alpha, weights, between, within = self._stacked_components(A, P, log_var)
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

    def _eval_member_outputs(self, x: torch.Tensor, regime: Any = None) -> list[ShrinkageOutput]:
        """The members' eval-mode outputs: one batched pass over all members when they
        share one network architecture (:mod:`shrinklab.models.stacked`; the same values
        as the per-member loop to float32 rounding), else the loop."""
        stacked = stacked_member_outputs(self, list(self.members), x, regime)
        if stacked is None:
            with eval_mode(self):
                return self.member_outputs(x, regime)
        return [ShrinkageOutput(*parts) for parts in zip(*stacked)]

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        """Eval-mode, no-grad ensemble prediction (training mode unchanged)."""
        x = self._as_input(features)
        stacked = stacked_member_outputs(self, list(self.members), x, regime)
        if stacked is not None:  # one batched pass, combined without unstacking
            return self._combine_stacked(*stacked)
        return self.combine_outputs(self._eval_member_outputs(x, regime))

    @torch.no_grad()
    def predict_members(self, features: Any, regime: Any = None) -> list[ShrinkageOutput]:
        """Each member's eval-mode prediction."""
        return self._eval_member_outputs(self._as_input(features), regime)

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
        outs = self._eval_member_outputs(self._as_input(features), regime)
        truth = as_1d(alpha_true, "alpha_true")
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
        lv = float(check_levels([level])[0])
        if method == "conformal" and not self.has_conformal:
            raise ValueError("no conformal scores stored: call calibrate() first")
        use_scores = method != "gaussian" and self.has_conformal
        scores = self.conformal_scores.cpu().numpy() if use_scores else None
        return float(interval_multipliers(np.array([lv]), scores)[0])

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
