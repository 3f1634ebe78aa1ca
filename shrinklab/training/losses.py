"""Training losses and regularisers (the training-process specification's loss-function section).

Every loss is differentiable in its prediction argument, works on batches and takes
``reduction`` = ``"mean"`` (default) | ``"sum"`` | ``"none"`` (per sample, ``(B,)``).
Matrix losses are *normalised by the sample covariance's loss* when the sample
covariance is given (1 = "no better than S", 0 = perfect), which makes them
scale-free and comparable across p.

Primary losses

* :func:`intensity_mse` — ``mean (ŵ − w*)²`` against the oracle intensities.
* :func:`quadratic_frobenius` — the O(K²) path: ``‖Σ̂(w) − Σ‖²_F = wᵀGw − 2cᵀw + d``
  (statistics from :func:`shrinklab.core.targets.quadratic_form`), divided by ``d``
  (the sample covariance's loss); used by the trainer for any p in mixed-p batches.
* :func:`frobenius_matrix` — the same loss from the matrices (tested equal).
* :func:`log_det_loss` — Stein's (log-determinant) loss
  ``[tr(Σ̂Σ⁻¹) − log det(Σ̂Σ⁻¹) − p] / p`` [James & Stein 1961; Dey & Srinivasan,
  Ann. Statist. 13, 1985].
* :func:`spectrum_loss` — squared distance of the sorted eigenvalues
  ``‖λ(Σ̂) − λ(Σ)‖²`` (≤ the Frobenius loss by the Hoffman–Wielandt inequality).
* :func:`portfolio_variance_loss` — out-of-sample variance of the global minimum
  variance (GMV) portfolio built from Σ̂, evaluated on Σ, relative to the true GMV
  variance, minus one [Engle & Colacito, JBES 24, 2006; Ledoit & Wolf, RFS 30,
  2017]; :func:`realised_portfolio_variance` evaluates it on realised returns.
* :func:`composite_loss` — ``α·intensity + β·matrix + γ·spectrum`` with the
  specification's defaults ``α = 0.5, β = 0.3, γ = 0.2``.
* :func:`gaussian_nll` — heteroscedastic Gaussian negative log likelihood for the
  uncertainty head [Nix & Weigend, ICNN 1994; Kendall & Gal, NeurIPS 2017].

Regularisers

* :func:`l2_penalty` — ``λ Σ ‖W‖²`` over weight matrices (biases and normalisation
  parameters excluded; the specification's λ = 0.001).
* :func:`smoothness_penalty` — kernel-weighted squared differences of predictions
  between nearest neighbours in feature space (graph-Laplacian smoothing, Belkin,
  Niyogi & Sindhwani, JMLR 7, 2006); :func:`jacobian_penalty` — ``E‖∂f/∂x‖²_F``
  (random-projection estimate, Hoffman, Roberts & Yaida 2019).
* :func:`consistency_penalty` — hinge penalties for intensities outside
  ``w ≥ 0, Σw ≤ 1`` and for a negative minimum eigenvalue of Σ̂.
* :func:`adversarial_penalty` — ``E‖f(x + δ) − f(x)‖²`` for a small FGSM or random
  perturbation δ [Goodfellow, Shlens & Szegedy, ICLR 2015].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from shrinklab.core.metrics import check_quadratic_form, quadratic_form_loss
from shrinklab.core.targets import combine
from shrinklab.data.real_windows import gmv_weights

__all__ = [
    "adversarial_penalty",
    "composite_loss",
    "consistency_penalty",
    "frobenius_matrix",
    "gaussian_nll",
    "intensity_mse",
    "jacobian_penalty",
    "l2_penalty",
    "log_det_loss",
    "portfolio_variance_loss",
    "quadratic_frobenius",
    "realised_portfolio_variance",
    "smoothness_penalty",
    "spectrum_loss",
]


_REDUCTIONS = ("mean", "sum", "none")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _batched(M: torch.Tensor, name: str) -> torch.Tensor:
    if M.ndim == 2:
        M = M.unsqueeze(0)
    if M.ndim != 3 or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must be (p, p) or (B, p, p) matrices, got {tuple(M.shape)}")
    return M


def _pair(a: torch.Tensor, b: torch.Tensor, names: str) -> tuple[torch.Tensor, torch.Tensor]:
    a = _batched(a, names.split(",")[0])
    b = _batched(b, names.split(",")[1]).to(a.dtype)
    if a.shape[-1] != b.shape[-1] or b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"{names}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not match")
    return a, b


def _sym(M: torch.Tensor) -> torch.Tensor:
    return 0.5 * (M + M.transpose(-1, -2))


# ----------------------------------------------------------------- primary losses
def intensity_mse(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Squared error of predicted vs oracle intensities ``(B, K)`` (or ``(B,)``),
    averaged over targets per sample; reduced over the batch."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    err = (pred - target.to(pred.dtype)).square()
    per_sample = err.reshape(err.shape[0], -1).mean(1) if err.ndim > 1 else err
    return _reduce(per_sample, reduction)


def quadratic_frobenius(
    w: torch.Tensor,
    G: torch.Tensor,
    c: torch.Tensor,
    d: torch.Tensor,
    normalise: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Frobenius loss ``wᵀGw − 2cᵀw + d`` of ``Σ̂(w)`` in O(K²) per sample.

    ``w (B, K)``, ``G (B, K, K)``, ``c (B, K)``, ``d (B,)`` as returned by
    :func:`shrinklab.core.targets.quadratic_form`. With ``normalise`` the loss is divided
    by ``d = ‖S − Σ‖²_F`` (the loss of ``w = 0``).
    """
    check_quadratic_form(w, G, c, d)
    G, c, d = G.to(w.dtype), c.to(w.dtype), d.to(w.dtype)
    loss = quadratic_form_loss(w, G, c, d)
    if normalise:
        loss = loss / d.clamp_min(torch.finfo(w.dtype).tiny)
    return _reduce(loss, reduction)


def frobenius_matrix(
    sigma_hat: torch.Tensor,
    sigma: torch.Tensor,
    sample: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``‖W ⊙ (Σ̂ − Σ)‖²_F`` from the matrices (``W`` an optional elementwise weight
    matrix, the specification's ``weight_matrix``); divided by the same loss of ``sample`` when
    given."""
    sigma_hat, sigma = _pair(sigma_hat, sigma, "sigma_hat,sigma")

    def loss(M: torch.Tensor) -> torch.Tensor:
        D = M - sigma
        if weight is not None:
            D = D * weight.to(D.dtype)
        return D.square().sum((-2, -1))

    out = loss(sigma_hat)
    if sample is not None:
        out = out / loss(_batched(sample, "sample").to(out.dtype)).clamp_min(
            torch.finfo(out.dtype).tiny
        )
    return _reduce(out, reduction)


def _stein(sigma_hat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    p = sigma.shape[-1]
    L = torch.linalg.cholesky(_sym(sigma))
    Y = torch.linalg.solve_triangular(L, _sym(sigma_hat), upper=False)
    M = torch.linalg.solve_triangular(L, Y.transpose(-1, -2), upper=False)  # L⁻¹Σ̂L⁻ᵀ
    M = _sym(M)
    C, info = torch.linalg.cholesky_ex(M)
    pd = info == 0
    C = torch.where(pd[:, None, None], C, torch.eye(p, dtype=M.dtype, device=M.device))
    logdet = 2.0 * torch.log(torch.diagonal(C, dim1=-2, dim2=-1)).sum(-1)
    trace = torch.diagonal(M, dim1=-2, dim2=-1).sum(-1)
    loss = (trace - logdet) / p - 1.0
    return torch.where(pd, loss, torch.full_like(loss, float("inf")))


def log_det_loss(
    sigma_hat: torch.Tensor,
    sigma: torch.Tensor,
    sample: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Stein's (log-determinant) loss ``[tr(Σ̂Σ⁻¹) − log det(Σ̂Σ⁻¹)]/p − 1`` per matrix.

    ``Σ`` must be positive definite; a non-positive-definite ``Σ̂`` gets ``+inf``.
    With ``sample`` the loss is divided by the sample covariance's loss — only
    meaningful when ``S`` is non-singular (``n > p``), otherwise that loss is ``inf``
    and the ratio is 0.
    """
    sigma_hat, sigma = _pair(sigma_hat, sigma, "sigma_hat,sigma")
    sigma = sigma.expand_as(sigma_hat)
    out = _stein(sigma_hat, sigma)
    if sample is not None:
        out = out / _stein(_batched(sample, "sample").to(out.dtype).expand_as(sigma), sigma)
    return _reduce(out, reduction)


def spectrum_loss(
    sigma_hat: torch.Tensor,
    sigma: torch.Tensor,
    sample: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``‖λ↑(Σ̂) − λ↑(Σ)‖²`` between sorted eigenvalues (``eigvalsh``); divided by the
    sample covariance's value when ``sample`` is given. By Hoffman–Wielandt it is at
    most the Frobenius loss, with equality when Σ̂ and Σ share eigenvectors."""
    sigma_hat, sigma = _pair(sigma_hat, sigma, "sigma_hat,sigma")
    lam_true = torch.linalg.eigvalsh(_sym(sigma))

    def loss(M: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.eigvalsh(_sym(M)) - lam_true).square().sum(-1)

    out = loss(sigma_hat)
    if sample is not None:
        out = out / loss(_batched(sample, "sample").to(out.dtype)).clamp_min(
            torch.finfo(out.dtype).tiny
        )
    return _reduce(out, reduction)


def portfolio_variance_loss(
    sigma_hat: torch.Tensor,
    sigma: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Relative excess variance of the GMV portfolio of Σ̂ under the true Σ:
    ``wᵀΣw / (1ᵀΣ⁻¹1)⁻¹ − 1 ≥ 0`` with ``w = gmv_weights(Σ̂)``; 0 iff ``w`` is the
    true GMV portfolio (e.g. ``Σ̂ = cΣ``). Already scale-free."""
    sigma_hat, sigma = _pair(sigma_hat, sigma, "sigma_hat,sigma")
    sigma = sigma.expand_as(sigma_hat)
    w = gmv_weights(sigma_hat)
    var = torch.einsum("bi,bij,bj->b", w, sigma, w)
    ones = torch.ones(*sigma.shape[:-1], 1, dtype=sigma.dtype, device=sigma.device)
    min_var = 1.0 / torch.linalg.solve(_sym(sigma), ones).sum((-2, -1))
    return _reduce(var / min_var - 1.0, reduction)


def realised_portfolio_variance(
    sigma_hat: torch.Tensor,
    future_returns: torch.Tensor,
    sample: torch.Tensor | None = None,
    demean: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Realised variance of the GMV portfolio of Σ̂ over the next period's returns
    ``future_returns (B, h, p)`` (for real data, where Σ is unknown); divided by the
    same quantity for the GMV portfolio of ``sample`` when given (``< 1`` = better
    than the sample covariance)."""
    sigma_hat = _batched(sigma_hat, "sigma_hat")
    R = future_returns if future_returns.ndim == 3 else future_returns.unsqueeze(0)
    if R.shape[-1] != sigma_hat.shape[-1] or R.shape[0] not in (1, sigma_hat.shape[0]):
        raise ValueError(
            f"future_returns {tuple(R.shape)} do not match sigma_hat {tuple(sigma_hat.shape)}"
        )
    if R.shape[-2] < 2:
        raise ValueError("future_returns needs at least 2 periods")
    R = R.to(sigma_hat.dtype)

    def realised(M: torch.Tensor) -> torch.Tensor:
        r = torch.einsum("bhp,bp->bh", R, gmv_weights(M))
        if demean:
            return r.var(dim=-1, correction=1)
        return r.square().mean(-1)

    out = realised(sigma_hat)
    if sample is not None:
        out = out / realised(_batched(sample, "sample").to(out.dtype))
    return _reduce(out, reduction)


def gaussian_nll(
    log_var: torch.Tensor, squared_error: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """``½ (e² e^{−s} + s)`` for predicted log-variance ``s`` and squared error ``e²``
    (pass a detached error so that only the uncertainty head learns from it)."""
    if log_var.shape != squared_error.shape:
        raise ValueError(
            f"log_var {tuple(log_var.shape)} and squared_error {tuple(squared_error.shape)} differ"
        )
    out = 0.5 * (squared_error.to(log_var.dtype) * torch.exp(-log_var) + log_var)
    return _reduce(out, reduction)


def composite_loss(
    pred_intensities: torch.Tensor,
    true_intensities: torch.Tensor | None = None,
    *,
    sample_cov: torch.Tensor | None = None,
    true_cov: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    G: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    d: torch.Tensor | None = None,
    weight_matrix: torch.Tensor | None = None,
    alpha: float = 0.5,
    beta: float = 0.3,
    gamma: float = 0.2,
    return_parts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Composite loss of the specification:
    ``α·intensity_mse + β·matrix_loss + γ·spectrum_loss``.

    * intensity term: :func:`intensity_mse` against ``true_intensities`` (needed iff
      ``alpha > 0``);
    * matrix term: normalised Frobenius loss — from ``(G, c, d)`` when given (O(K²)),
      else from ``sample_cov (B,p,p)``, ``targets (B,K,p,p)``, ``true_cov (B,p,p)``
      with the optional ``weight_matrix``;
    * spectrum term: :func:`spectrum_loss` normalised by the sample covariance's, from
      the matrices (needed iff ``gamma > 0``).

    Returns the scalar loss, or ``(loss, parts)`` with ``return_parts``.
    """
    w = pred_intensities
    if w.ndim != 2:
        raise ValueError(f"pred_intensities must be (B, K), got {tuple(w.shape)}")
    have_matrices = sample_cov is not None and true_cov is not None and targets is not None
    zero = w.new_zeros(())
    parts: dict[str, torch.Tensor] = {}
    if alpha:
        if true_intensities is None:
            raise ValueError("alpha > 0 needs true_intensities")
        parts["intensity"] = intensity_mse(w, true_intensities)
    sigma_hat = None
    if have_matrices:
        sigma_hat = combine(sample_cov.to(w.dtype), targets.to(w.dtype), w)
    if beta:
        if G is not None and c is not None and d is not None and weight_matrix is None:
            parts["matrix"] = quadratic_frobenius(w, G, c, d, normalise=True)
        elif sigma_hat is not None:
            parts["matrix"] = frobenius_matrix(
                sigma_hat, true_cov, sample=sample_cov, weight=weight_matrix
            )
        else:
            raise ValueError("beta > 0 needs (G, c, d) or (sample_cov, targets, true_cov)")
    if gamma:
        if sigma_hat is None:
            raise ValueError("gamma > 0 (spectrum loss) needs sample_cov, targets and true_cov")
        parts["spectrum"] = spectrum_loss(sigma_hat, true_cov, sample=sample_cov)
    total = (
        alpha * parts.get("intensity", zero)
        + beta * parts.get("matrix", zero)
        + gamma * parts.get("spectrum", zero)
    )
    return (total, parts) if return_parts else total


# ------------------------------------------------------------------- regularisers
def l2_penalty(model: nn.Module, lam: float = 1e-3) -> torch.Tensor:
    """``λ Σ ‖W‖²`` over parameters with ≥ 2 dimensions (weight matrices, embeddings);
    biases and batch/layer-norm parameters (1-D) are excluded."""
    terms = [p.square().sum() for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    if not terms:
        return torch.zeros(())
    return lam * torch.stack(terms).sum()


def smoothness_penalty(
    features: torch.Tensor,
    predictions: torch.Tensor,
    k: int = 1,
    bandwidth: float | None = None,
) -> torch.Tensor:
    """Kernel-weighted squared prediction differences between each sample and its
    ``k`` nearest neighbours in (standardised) feature space:
    ``Σ_ij a_ij ‖f_i − f_j‖² / Σ_ij a_ij`` with ``a_ij = exp(−‖x_i − x_j‖² / 2h²)``,
    ``h`` = median neighbour distance by default. Neighbours and weights are treated
    as constants (no gradient through them)."""
    if features.ndim != 2 or predictions.shape[0] != features.shape[0]:
        raise ValueError("features (B, F) and predictions (B, ...) must share the batch size")
    B = features.shape[0]
    if B < 2:
        return predictions.new_zeros(())
    k = min(int(k), B - 1)
    with torch.no_grad():
        x = features.to(predictions.dtype)
        x = (x - x.mean(0)) / x.std(0, correction=0).clamp_min(1e-12)
        dist2 = (x[:, None, :] - x[None, :, :]).square().sum(-1)
        dist2.fill_diagonal_(float("inf"))
        nn_d2, nn_idx = dist2.topk(k, dim=1, largest=False)
        h2 = (nn_d2.median() if bandwidth is None else torch.tensor(bandwidth**2)).clamp_min(1e-12)
        a = torch.exp(-nn_d2 / (2 * h2))
    y = predictions.reshape(B, -1)
    diff2 = (y[:, None, :] - y[nn_idx]).square().sum(-1)  # (B, k)
    return (a * diff2).sum() / a.sum().clamp_min(1e-12)


def jacobian_penalty(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_proj: int = 1
) -> torch.Tensor:
    """Unbiased random-projection estimate of ``E_i ‖∂f(x_i)/∂x_i‖²_F`` (a smoothness
    penalty; ``fn`` maps ``(B, F)`` to ``(B, m)`` row-wise, e.g. in eval mode)."""
    x = x.detach().requires_grad_(True)
    y = fn(x)
    y = y.reshape(y.shape[0], -1)
    total = x.new_zeros(())
    for _ in range(int(n_proj)):
        v = torch.randn_like(y)
        (g,) = torch.autograd.grad((y * v).sum(), x, create_graph=True)
        total = total + g.square().sum(1).mean()
    return total / int(n_proj)


def consistency_penalty(
    intensities: torch.Tensor | None = None,
    sigma_hat: torch.Tensor | None = None,
    min_eig: float = 0.0,
) -> torch.Tensor:
    """Hinge penalties for the family's constraints:
    ``mean[relu(−w)² summed over k + relu(Σ_k w_k − 1)²]`` on intensities, and
    ``mean relu(min_eig − λ_min(Σ̂)/λ̄)²`` on estimates (``λ̄ = tr Σ̂ / p``, so the
    eigenvalue hinge is scale-free)."""
    terms = []
    if intensities is not None:
        w = intensities
        terms.append(
            (torch.relu(-w).square().sum(-1) + torch.relu(w.sum(-1) - 1.0).square()).mean()
        )
    if sigma_hat is not None:
        S = _batched(sigma_hat, "sigma_hat")
        lam = torch.linalg.eigvalsh(_sym(S))
        scale = (torch.diagonal(S, dim1=-2, dim2=-1).mean(-1)).abs().clamp_min(1e-300)
        terms.append(torch.relu(min_eig - lam[:, 0] / scale).square().mean())
    if not terms:
        raise ValueError("consistency_penalty needs intensities and/or sigma_hat")
    return torch.stack(terms).sum()


def adversarial_penalty(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float = 0.01,
    method: str = "fgsm",
    regime: Any = None,
    output: Callable[[Any], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``E‖f(x + δ) − f(x)‖²`` with ``|δ_j| = ε · std_j(x)`` per feature.

    ``method="random"``: random signs; ``"fgsm"``: one signed-gradient step from a
    random start (the gradient of the squared difference vanishes at δ = 0). The
    model is evaluated in eval mode (running BN statistics, no dropout) so that the
    difference measures sensitivity only; gradients flow to the parameters.
    ``output`` maps the model output to a tensor (default: intensities).
    """
    if method not in ("fgsm", "random"):
        raise ValueError(f"method must be 'fgsm' or 'random', got {method!r}")
    out_fn = output or (lambda o: o.intensities)
    scale = float(epsilon) * x.detach().std(0, correction=0).clamp_min(1e-12)
    was_training = model.training
    model.eval()
    try:
        f0 = out_fn(model(x, regime))
        sign = torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(x) * 2 - 1
        delta = sign * scale
        if method == "fgsm":
            probe = delta.clone().requires_grad_(True)
            diff = (out_fn(model(x.detach() + probe, regime)) - f0.detach()).square().sum()
            (g,) = torch.autograd.grad(diff, probe)
            delta = torch.sign(g) * scale
        f1 = out_fn(model(x + delta.detach(), regime))
    finally:
        model.train(was_training)
    return (f1 - f0).square().reshape(x.shape[0], -1).sum(1).mean()
