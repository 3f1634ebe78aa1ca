"""The learned peer: a rotation-invariant eigenvalue-cleaning network trained end to end.

Our own PyTorch implementation of the approach of Bongiorno, Manolakis & Mantegna,
"End-to-End Large Portfolio Optimization for Variance Minimization with Neural
Networks through Covariance Cleaning" (arXiv:2507.01918, 2025; "RIEnet"). It is a
baseline for the shrinkage network of :mod:`shrinklab.models.network`: instead of
choosing a mix of shrinkage targets, it keeps the eigenvectors of the sample
correlation matrix and learns a new spectrum, and it is trained on the realised
variance of the global minimum-variance (GMV) portfolio, not on a known Σ.

For returns ``X (B, n, p)`` (any ``n``, any ``p``; the parameters do not depend on
either):

1. **Lag kernel.** Day ``τ`` days before the end of the window (``τ = 0`` the most
   recent) gets the weight ``k(τ) ∝ softplus(a + b·exp(−softplus(c)·τ/n))``,
   normalised to mean one; the weighted covariance is ``S = Xcᵀ diag(k) Xc / n``
   (``Xc``: demeaned returns). Three parameters, initialised to equal weights (the
   paper uses a small parametric memory kernel of the same kind).
2. **Spectrum.** ``S = D C D`` with ``D = diag(σ)``; ``C = V diag(λ) Vᵀ``.
3. **Eigenvalue cleaning.** A bidirectional GRU (16 units per direction, the
   paper's default) reads the sorted spectrum, one step per eigenvalue, with the
   inputs ``(λ_k, log λ_k, p/n, 1/√n)``, and a linear read-out with a softplus gives
   positive cleaned eigenvalues ``ξ_k``, normalised to mean one (``tr = p``, as a
   correlation matrix). Eigenvalues at round-off level (the null space when
   ``p ≥ n``) share one cleaned value (their mean), so that the estimate does not
   depend on the arbitrary basis the eigensolver picks inside that space.
4. **Marginal-volatility head.** A per-asset network (8 hidden units) maps
   ``(log σ_i − mean_j log σ_j, p/n)`` to a log-correction ``h_i``, centred over the
   assets; the cleaned volatilities are ``σ̃_i = σ_i · exp(h_i − mean_j h_j)``. It is
   initialised to ``h = 0``. The centring pins the level of ``Σ̂``: the GMV loss is
   invariant to a common factor of all volatilities, so that factor would otherwise be
   left to chance (the paper normalises the implied variance for the same reason); with
   it, the geometric mean of the volatilities and the trace of the correlation part
   are those of the sample.
5. **Output.** ``Σ̂ = D̃ V diag(ξ) Vᵀ D̃``, the precision ``Σ̂⁻¹ = D̃⁻¹ V diag(1/ξ) Vᵀ
   D̃⁻¹`` (no matrix inversion) and the GMV weights ``Σ̂⁻¹1 / 1ᵀΣ̂⁻¹1``.

Properties: ``Σ̂`` is symmetric positive definite whenever every ``σ_i > 0``;
permuting the assets permutes ``Σ̂`` (the spectrum does not depend on the order,
the eigenvectors and the volatility head follow the assets); and scaling the
returns by ``c`` scales ``Σ̂`` by ``c²`` (the GRU sees the correlation spectrum and
the volatility head only relative volatilities). An asset with zero variance keeps
zero variance and zero covariance and gets zero GMV weight.

Gradients: the eigenvalues ``λ_k = v_kᵀ C v_k`` carry their exact first-order
derivative with respect to the lag kernel; the eigenvectors are treated as
constants in the backward pass (their derivative is singular at repeated
eigenvalues, e.g. the null space when ``p ≥ n``). The GRU and the volatility head,
which hold almost all parameters, get exact gradients.

:class:`RIENetCovariance` is a small scikit-learn-style estimator around a trained
network: ``fit(X)`` sets ``covariance_``, ``precision_``, ``weights_`` and
``location_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shrinklab.core.validation import as_returns, demean
from shrinklab.models.registry import load_model

__all__ = ["RIENetCovariance", "RIENetwork", "RIEOutput"]


_NULL_RTOL = 1e-10  # eigenvalues below this · p are the null space of C
_LOG_FLOOR = 1e-6  # floor of λ inside the GRU's log input


@dataclass
class RIEOutput:
    """One forward pass: ``covariance``, ``precision`` ``(B, p, p)``, ``weights`` (GMV,
    ``(B, p)``), the cleaned eigenvalues ``eigenvalues (B, p)`` (ascending order of the
    sample eigenvalues), the eigenvectors ``(B, p, p)`` and the cleaned volatilities
    ``volatility (B, p)``."""

    covariance: torch.Tensor
    precision: torch.Tensor
    weights: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    volatility: torch.Tensor


class RIENetwork(nn.Module):
    """Rotation-invariant eigenvalue cleaning with a marginal-volatility head
    (Bongiorno, Manolakis & Mantegna 2025, arXiv:2507.01918); module docstring.

    Computes in float64 (the parameters are float64). ``forward(X)`` takes returns
    ``(B, n, p)`` (or ``(n, p)``) and returns a :class:`RIEOutput`.
    """

    model_kind = "rie_network"

    def __init__(self, hidden: int = 16, vol_hidden: int = 8) -> None:
        super().__init__()
        if int(hidden) < 1 or int(vol_hidden) < 1:
            raise ValueError(f"hidden and vol_hidden must be >= 1, got {hidden}, {vol_hidden}")
        self.config = {"hidden": int(hidden), "vol_hidden": int(vol_hidden)}
        self.lag = nn.Parameter(torch.zeros(3))  # a, b, c of the lag kernel
        self.gru = nn.GRU(4, int(hidden), batch_first=True, bidirectional=True)
        self.readout = nn.Linear(2 * int(hidden), 1)
        self.vol_head = nn.Sequential(
            nn.Linear(2, int(vol_hidden)), nn.Tanh(), nn.Linear(int(vol_hidden), 1)
        )
        nn.init.zeros_(self.vol_head[2].weight)
        nn.init.zeros_(self.vol_head[2].bias)
        with torch.no_grad():  # start from a nearly flat cleaned spectrum (ξ ≈ softplus(0.5))
            self.readout.bias.fill_(0.5)
        self.double()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RIENetwork:
        return cls(**config)

    # ------------------------------------------------------------------ pieces
    def lag_weights(self, n: int) -> torch.Tensor:
        """Weights ``(n,)`` of the days of a window (oldest first), mean one."""
        a, b, c = self.lag
        tau = torch.arange(n - 1, -1, -1, dtype=self.lag.dtype, device=self.lag.device)
        k = F.softplus(a + b * torch.exp(-F.softplus(c) * tau / n))
        return k / k.mean()

    def _clean_spectrum(self, lam: torch.Tensor, null: torch.Tensor, n: int) -> torch.Tensor:
        B, p = lam.shape
        ratio = torch.full_like(lam, p / n)
        inv_root_n = torch.full_like(lam, 1.0 / np.sqrt(n))
        log_lam = torch.log(lam.clamp_min(_LOG_FLOOR))
        h, _ = self.gru(torch.stack([lam, log_lam, ratio, inv_root_n], dim=-1))
        xi = F.softplus(self.readout(h).squeeze(-1)) + 1e-6
        if bool(null.any()):
            cnt = null.sum(-1, keepdim=True).clamp_min(1)
            null_mean = (xi * null).sum(-1, keepdim=True) / cnt
            xi = torch.where(null, null_mean, xi)
        return xi / xi.mean(-1, keepdim=True)

    def forward(self, X: torch.Tensor) -> RIEOutput:
        if X.ndim == 2:
            X = X.unsqueeze(0)
        X = X.to(self.lag.dtype)
        B, n, p = X.shape
        Xc = demean(X)
        k = self.lag_weights(n)
        S = (Xc * k[:, None]).transpose(-1, -2) @ Xc / n
        S = 0.5 * (S + S.transpose(-1, -2))
        var = torch.diagonal(S, dim1=-2, dim2=-1)
        live = var > 0
        sigma = torch.sqrt(torch.where(live, var, torch.ones_like(var)))
        C = S / (sigma[:, :, None] * sigma[:, None, :])
        eye = torch.eye(p, dtype=C.dtype, device=C.device).expand(B, p, p)
        C = torch.where(live[:, :, None] & live[:, None, :], C, torch.zeros_like(C))
        C = torch.where(eye.bool() & ~live[:, :, None], eye, C)
        with torch.no_grad():
            _, V = torch.linalg.eigh(C)
        lam = torch.einsum("bik,bij,bjk->bk", V, C, V)  # exact first-order dλ
        null = lam.detach() <= _NULL_RTOL * p
        xi = self._clean_spectrum(lam, null, n)
        log_sigma = torch.log(sigma)
        centred = log_sigma - (log_sigma * live).sum(-1, keepdim=True) / live.sum(
            -1, keepdim=True
        ).clamp_min(1)
        vol_in = torch.stack([centred * live, torch.full_like(centred, p / n)], dim=-1)
        h = self.vol_head(vol_in).squeeze(-1) * live
        h = h - h.sum(-1, keepdim=True) / live.sum(-1, keepdim=True).clamp_min(1)
        vol = sigma * torch.exp(h)
        vol = torch.where(live, vol, torch.zeros_like(vol))
        inv_vol = torch.where(live, 1.0 / torch.where(live, vol, torch.ones_like(vol)), 0.0)
        VD = V * vol[:, :, None]
        cov = (VD * xi[:, None, :]) @ VD.transpose(-1, -2)
        VI = V * inv_vol[:, :, None]
        prec = (VI / xi[:, None, :]) @ VI.transpose(-1, -2)
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        prec = 0.5 * (prec + prec.transpose(-1, -2))
        x = prec.sum(-1)
        w = x / x.sum(-1, keepdim=True)
        return RIEOutput(cov, prec, w, xi, V, vol)

    def estimate(self, X: Any) -> torch.Tensor:
        """Cleaned covariances ``(B, p, p)`` of returns ``X (B, n, p)`` (no gradient):
        a batched estimator for :func:`shrinklab.evaluation.backtest.gmv_backtest` and
        the scenario grid."""
        X, _ = as_returns(X)
        with torch.no_grad():
            return self(X).covariance


class RIENetCovariance:
    """scikit-learn-style covariance estimator around a trained :class:`RIENetwork`
    (Bongiorno, Manolakis & Mantegna 2025, arXiv:2507.01918).

    ``RIENetCovariance(model)`` or ``RIENetCovariance(model_path="models/rie_network.pt")``;
    ``fit(X)`` with ``X (n_samples, n_assets)`` (ndarray, DataFrame or tensor; validated
    by :func:`shrinklab.core.validation.as_returns`: NaN/inf, wrong dimensions, fewer
    than two rows are ``ValueError``) sets ``covariance_`` and ``precision_`` (ndarrays
    ``(p, p)``), ``weights_`` (GMV weights) and ``location_`` (column means). With a
    zero-variance asset ``precision_`` is the pseudo-inverse of ``covariance_``.
    """

    def __init__(self, model: RIENetwork | None = None, model_path: str | Path | None = None):
        self.model = model
        self.model_path = model_path

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"model": self.model, "model_path": self.model_path}

    def _network(self) -> RIENetwork:
        if (self.model is None) == (self.model_path is None):
            raise ValueError("give exactly one of model or model_path")
        net = self.model if self.model is not None else load_model(self.model_path)
        if not isinstance(net, RIENetwork):
            raise ValueError(f"expected a RIENetwork, got {type(net).__name__}")
        return net

    def fit(self, X: Any, y: Any = None) -> RIENetCovariance:
        net = self._network()
        t, batched = as_returns(X)
        if batched:
            raise ValueError(f"X must be 2-D (n_samples, n_assets); got shape {tuple(t.shape)}")
        net.eval()
        with torch.no_grad():
            out = net(t)
        self.covariance_ = out.covariance[0].numpy()
        prec = out.precision[0].numpy()
        if not bool((out.volatility > 0).all()):
            prec = np.linalg.pinv(self.covariance_, hermitian=True)
        self.precision_ = prec
        self.weights_ = out.weights[0].numpy()
        self.location_ = t[0].mean(0).numpy()
        self.n_features_in_ = int(t.shape[-1])
        return self
