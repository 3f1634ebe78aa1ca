"""Tests for shrinklab.training.losses against closed forms, numpy/scipy references and gradcheck."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from shrinklab.core.metrics import stein_loss as reference_stein_loss
from shrinklab.core.targets import combine
from shrinklab.data import real_windows
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training import losses

B, K, P = 4, 5, 6


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: intra-op threads only add overhead (measured 0.25 ms vs 19 ms per
    Stein loss on the 2-core CI box when another process holds a core)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _spd(rng: np.random.Generator, b: int, p: int, n: int | None = None) -> torch.Tensor:
    A = rng.normal(size=(b, n or 2 * p, p))
    return torch.as_tensor(A.transpose(0, 2, 1) @ A / (n or 2 * p))


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    S = _spd(rng, B, P, n=P + 2)
    sigma = _spd(rng, B, P)
    T = torch.stack([_spd(rng, B, P) for _ in range(K)], dim=1)  # (B, K, p, p)
    w = torch.as_tensor(rng.dirichlet(np.ones(K), size=B) * 0.7)
    return S, T, sigma, w


def _brute_quadratic(S, T, sigma):
    """G, c, d from explicit loops over k, l (independent of targets.quadratic_form)."""
    G = torch.zeros(B, K, K, dtype=S.dtype)
    c = torch.zeros(B, K, dtype=S.dtype)
    for k in range(K):
        c[:, k] = ((T[:, k] - S) * (sigma - S)).sum((-2, -1))
        for m in range(K):
            G[:, k, m] = ((T[:, k] - S) * (T[:, m] - S)).sum((-2, -1))
    d = ((sigma - S) ** 2).sum((-2, -1))
    return G, c, d


def test_quadratic_path_equals_matrix_path(problem):
    S, T, sigma, w = problem
    G, c, d = _brute_quadratic(S, T, sigma)
    sigma_hat = combine(S, T, w)
    fast = losses.quadratic_frobenius(w, G, c, d, reduction="none")
    direct = losses.frobenius_matrix(sigma_hat, sigma, sample=S, reduction="none")
    torch.testing.assert_close(fast, direct, rtol=1e-10, atol=1e-12)
    raw = losses.quadratic_frobenius(w, G, c, d, normalise=False, reduction="none")
    np.testing.assert_allclose(
        raw.numpy(),
        [np.linalg.norm(sigma_hat[i].numpy() - sigma[i].numpy(), "fro") ** 2 for i in range(B)],
        rtol=1e-10,
    )
    # w = 0 is the sample covariance: normalised loss exactly 1
    torch.testing.assert_close(
        losses.quadratic_frobenius(torch.zeros_like(w), G, c, d, reduction="none"),
        torch.ones(B, dtype=torch.float64),
    )
    assert losses.quadratic_frobenius(w, G, c, d, reduction="sum") == pytest.approx(
        fast.sum().item(), rel=1e-12
    )


def test_frobenius_weight_matrix(problem):
    S, T, sigma, w = problem
    W = torch.rand(P, P, dtype=torch.float64)
    got = losses.frobenius_matrix(S, sigma, weight=W, reduction="none")
    ref = [((W.numpy() * (S[i] - sigma[i]).numpy()) ** 2).sum() for i in range(B)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_log_det_loss_matches_reference_and_closed_form(problem):
    S, T, sigma, w = problem
    est = combine(S, T, w)
    got = losses.log_det_loss(est, sigma, reduction="none")
    torch.testing.assert_close(got, reference_stein_loss(est, sigma), rtol=1e-9, atol=1e-12)
    for i in range(B):
        M = np.linalg.solve(sigma[i].numpy(), est[i].numpy())
        ref = (np.trace(M) - np.linalg.slogdet(M)[1]) / P - 1.0
        assert got[i].item() == pytest.approx(ref, rel=1e-9)
    # Σ̂ = cΣ: loss = c − log c − 1
    cst = 1.7
    torch.testing.assert_close(
        losses.log_det_loss(cst * sigma, sigma, reduction="none"),
        torch.full((B,), cst - np.log(cst) - 1.0, dtype=torch.float64),
    )
    assert losses.log_det_loss(sigma, sigma).item() == pytest.approx(0.0, abs=1e-12)
    bad = sigma.clone()
    bad[0] = -bad[0]
    assert torch.isinf(losses.log_det_loss(bad, sigma, reduction="none")[0])
    # normalised by the sample's loss (n > p here, S non-singular)
    ratio = losses.log_det_loss(est, sigma, sample=S, reduction="none")
    torch.testing.assert_close(ratio, got / losses.log_det_loss(S, sigma, reduction="none"))


def test_spectrum_loss(problem):
    S, T, sigma, w = problem
    est = combine(S, T, w)
    got = losses.spectrum_loss(est, sigma, reduction="none")
    ref = [
        ((np.linalg.eigvalsh(est[i].numpy()) - np.linalg.eigvalsh(sigma[i].numpy())) ** 2).sum()
        for i in range(B)
    ]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    # Hoffman–Wielandt: spectrum loss <= Frobenius loss
    frob = losses.frobenius_matrix(est, sigma, reduction="none")
    assert bool((got <= frob * (1 + 1e-12)).all())
    # equality for matrices sharing eigenvectors (same eigenvalue order)
    lam, U = torch.linalg.eigh(sigma)
    est2 = U @ torch.diag_embed(lam * 1.3 + 0.1) @ U.transpose(-1, -2)
    torch.testing.assert_close(
        losses.spectrum_loss(est2, sigma, reduction="none"),
        losses.frobenius_matrix(est2, sigma, reduction="none"),
        rtol=1e-9,
        atol=1e-12,
    )
    torch.testing.assert_close(
        losses.spectrum_loss(est, sigma, sample=S, reduction="none"),
        got / losses.spectrum_loss(S, sigma, reduction="none"),
    )


def test_portfolio_variance_loss(problem):
    S, T, sigma, w = problem
    est = combine(S, T, w)
    got = losses.portfolio_variance_loss(est, sigma, reduction="none")
    for i in range(B):
        E, Sig, one = est[i].numpy(), sigma[i].numpy(), np.ones(P)
        x = np.linalg.inv(E) @ one
        x /= x.sum()
        ref = (x @ Sig @ x) * (one @ np.linalg.inv(Sig) @ one) - 1.0
        assert got[i].item() == pytest.approx(ref, rel=1e-8, abs=1e-12)
    assert bool((got >= 0).all())
    torch.testing.assert_close(
        losses.portfolio_variance_loss(3.0 * sigma, sigma, reduction="none"),
        torch.zeros(B, dtype=torch.float64),
        atol=1e-12,
        rtol=0,
    )
    torch.testing.assert_close(real_windows.gmv_weights(est).sum(-1), torch.ones(B, dtype=torch.float64))


def test_realised_portfolio_variance(problem):
    S, T, sigma, w = problem
    est = combine(S, T, w)
    R = torch.as_tensor(np.random.default_rng(5).normal(size=(B, 30, P)))
    got = losses.realised_portfolio_variance(est, R, reduction="none")
    rel = losses.realised_portfolio_variance(est, R, sample=S, reduction="none")
    for i in range(B):
        x = np.linalg.solve(est[i].numpy(), np.ones(P))
        x /= x.sum()
        xs = np.linalg.solve(S[i].numpy(), np.ones(P))
        xs /= xs.sum()
        r, rs = R[i].numpy() @ x, R[i].numpy() @ xs
        assert got[i].item() == pytest.approx(np.var(r, ddof=1), rel=1e-9)
        assert rel[i].item() == pytest.approx(np.var(r, ddof=1) / np.var(rs, ddof=1), rel=1e-9)
    raw = losses.realised_portfolio_variance(est, R, demean=False, reduction="none")
    x0 = np.linalg.solve(est[0].numpy(), np.ones(P))
    x0 /= x0.sum()
    assert raw[0].item() == pytest.approx(np.mean((R[0].numpy() @ x0) ** 2), rel=1e-9)


def test_composite_loss_fast_and_matrix_paths(problem):
    S, T, sigma, w = problem
    G, c, d = _brute_quadratic(S, T, sigma)
    w_true = w.flip(1)
    total, parts = losses.composite_loss(
        w, w_true, sample_cov=S, true_cov=sigma, targets=T, return_parts=True
    )
    est = combine(S, T, w)
    ref = (
        0.5 * ((w - w_true) ** 2).mean()
        + 0.3
        * (losses.frobenius_matrix(est, sigma, reduction="none") / ((S - sigma) ** 2).sum((1, 2))).mean()
        + 0.2 * losses.spectrum_loss(est, sigma, sample=S)
    )
    torch.testing.assert_close(total, ref, rtol=1e-10, atol=1e-12)
    fast = losses.composite_loss(w, w_true, G=G, c=c, d=d, gamma=0.0)
    slow = losses.composite_loss(w, w_true, sample_cov=S, true_cov=sigma, targets=T, gamma=0.0)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    assert set(parts) == {"intensity", "matrix", "spectrum"}
    with pytest.raises(ValueError, match="spectrum"):
        losses.composite_loss(w, w_true, G=G, c=c, d=d)
    with pytest.raises(ValueError, match="true_intensities"):
        losses.composite_loss(w, None, G=G, c=c, d=d, gamma=0.0)


def test_gradcheck_all_losses(problem):
    S, T, sigma, w = problem
    G, c, d = _brute_quadratic(S, T, sigma)
    est = combine(S, T, w).detach()
    R = torch.as_tensor(np.random.default_rng(2).normal(size=(B, 10, P)))
    wr = w.clone().requires_grad_(True)
    sq_err = torch.rand(B, dtype=torch.float64) + 0.1
    er = est.clone().requires_grad_(True)
    checks = {
        "intensity_mse": (lambda x: losses.intensity_mse(x, w.flip(1)), wr),
        "quadratic_frobenius": (lambda x: losses.quadratic_frobenius(x, G, c, d), wr),
        "frobenius_matrix": (lambda e: losses.frobenius_matrix(e, sigma, sample=S), er),
        "log_det": (lambda e: losses.log_det_loss(e, sigma), er),
        "spectrum": (lambda e: losses.spectrum_loss(e, sigma, sample=S), er),
        "portfolio": (lambda e: losses.portfolio_variance_loss(e, sigma), er),
        "realised": (lambda e: losses.realised_portfolio_variance(e, R, sample=S), er),
        "composite": (
            lambda x: losses.composite_loss(x, w.flip(1), sample_cov=S, true_cov=sigma, targets=T),
            wr,
        ),
        "gaussian_nll": (
            lambda s: losses.gaussian_nll(s, sq_err),
            torch.randn(B, dtype=torch.float64, requires_grad=True),
        ),
        "smoothness": (
            lambda y: losses.smoothness_penalty(
                torch.randn(B, 3, generator=torch.Generator().manual_seed(0)), y, k=2
            ),
            wr,
        ),
        "consistency": (
            lambda e: losses.consistency_penalty(e.sum((1, 2)).reshape(2, 2) - 0.5, e - 2 * sigma),
            er,
        ),
    }
    for name, (fn, x) in checks.items():
        assert gradcheck(fn, (x,), eps=1e-6, atol=1e-6, rtol=1e-4), name


def test_l2_penalty_excludes_bias_and_norm_parameters():
    torch.manual_seed(0)
    model = MLShrinkageNetwork(7, hidden_dims=(8, 4), n_regimes=2)
    expected = sum(
        (p**2).sum().item()
        for name, p in model.named_parameters()
        if name.endswith("weight") and "norm" not in name
    )
    assert losses.l2_penalty(model, lam=0.01).item() == pytest.approx(0.01 * expected, rel=1e-6)
    losses.l2_penalty(model).backward()
    assert model.blocks[0].linear.bias.grad is None and model.input_norm.weight.grad is None
    torch.testing.assert_close(
        model.blocks[0].linear.weight.grad, 2e-3 * model.blocks[0].linear.weight.detach()
    )


def test_smoothness_penalty_brute_force():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 2, generator=g, dtype=torch.float64)
    got = losses.smoothness_penalty(x, y, k=1)
    z = (x - x.mean(0)) / x.std(0, correction=0)
    num = den = 0.0
    dists = []
    pairs = []
    for i in range(7):
        dd = [((z[i] - z[j]) ** 2).sum().item() if j != i else np.inf for j in range(7)]
        j = int(np.argmin(dd))
        dists.append(dd[j])
        pairs.append((i, j))
    h2 = float(np.median(dists))  # 7 values: the middle one, as torch.median
    for (i, j), d2 in zip(pairs, dists):
        a = np.exp(-d2 / (2 * h2))
        num += a * ((y[i] - y[j]) ** 2).sum().item()
        den += a
    assert got.item() == pytest.approx(num / den, rel=1e-10)
    assert losses.smoothness_penalty(x, torch.ones(7, 2)).item() == 0.0


def test_jacobian_penalty_linear_model():
    torch.manual_seed(0)
    A = torch.randn(4, 3, dtype=torch.float64)
    x = torch.randn(10, 4, dtype=torch.float64)
    est = losses.jacobian_penalty(lambda z: z @ A, x, n_proj=4000)
    # E_v ‖Aᵀ... v‖² = ‖A‖²_F; Monte Carlo with 4000 projections: ~3 % sd
    assert est.item() == pytest.approx((A**2).sum().item(), rel=0.1)


def test_consistency_penalty_closed_form():
    w = torch.tensor([[-0.1, 0.6, 0.7], [0.2, 0.3, 0.1]], dtype=torch.float64)
    assert losses.consistency_penalty(w).item() == pytest.approx((0.01 + 0.04) / 2, rel=1e-12)
    est = torch.diag(torch.tensor([-1.0, 1.0, 3.0], dtype=torch.float64))[None]
    assert losses.consistency_penalty(sigma_hat=est).item() == pytest.approx(1.0, rel=1e-12)
    assert losses.consistency_penalty(w[1:], torch.eye(3)[None]).item() == 0.0
    with pytest.raises(ValueError):
        losses.consistency_penalty()


_Out = namedtuple("_Out", "intensities")


class _Linear(nn.Module):
    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, x, regime=None):
        return _Out((x @ self.a)[:, None])


def test_adversarial_penalty_fgsm_is_worst_case_for_linear_model():
    torch.manual_seed(0)
    a = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = torch.randn(50, 3, dtype=torch.float64)
    model = _Linear(a)
    eps = 0.05
    scale = eps * x.std(0, correction=0)
    worst = ((a.abs() * scale).sum() ** 2).item()
    fgsm = losses.adversarial_penalty(model, x, epsilon=eps, method="fgsm")
    rnd = losses.adversarial_penalty(model, x, epsilon=eps, method="random")
    assert fgsm.item() == pytest.approx(worst, rel=1e-10)
    assert rnd.item() <= worst + 1e-12
    fgsm.backward()
    assert model.a.grad is not None and model.a.grad.abs().sum() > 0
    # a model that ignores its input is perfectly robust
    net = MLShrinkageNetwork(3, hidden_dims=(4,))
    with torch.no_grad():
        for head in (net.alpha_head, net.weights_head):
            head.weight.zero_()
    assert losses.adversarial_penalty(net, x.float()).item() == 0.0


def test_bad_inputs(problem):
    S, T, sigma, w = problem
    G, c, d = _brute_quadratic(S, T, sigma)
    with pytest.raises(ValueError):
        losses.quadratic_frobenius(w[:, :3], G, c, d)
    with pytest.raises(ValueError):
        losses.intensity_mse(w, w[:, :2])
    with pytest.raises(ValueError, match="reduction"):
        losses.frobenius_matrix(S, sigma, reduction="avg")
    with pytest.raises(ValueError):
        losses.spectrum_loss(S, sigma[:, :3, :3])
