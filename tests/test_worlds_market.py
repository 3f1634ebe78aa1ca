"""The market-like world families (shrinklab.data.worlds_market)."""

import pytest
import torch

from shrinklab.data import dataset
from shrinklab.data import synthetic as syn
from shrinklab.data import worlds_market as wm

MARKET_ONLY = {"family_weights": dict.fromkeys(wm.MARKET_FAMILIES, 1.0), "edge_prob": 0.0}


@pytest.mark.parametrize("family", wm.MARKET_FAMILIES)
@pytest.mark.parametrize("p", [2, 5, 20, 45, 500])
def test_sigma_symmetric_pd(family, p):
    s = syn.sample_sigma(family, p, torch.Generator().manual_seed(p))
    assert s.shape == (p, p)
    assert torch.equal(s, s.T)
    assert float(torch.linalg.eigvalsh(s).min()) > 1e-8


@pytest.mark.parametrize("family", wm.MARKET_FAMILIES)
def test_reproducible_and_seed_dependent(family):
    a = syn.regenerate(123, 30, 50, family, 5.0)
    b = syn.regenerate(123, 30, 50, family, 5.0)
    c = syn.regenerate(124, 30, 50, family, 5.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[1].shape == (50, 30)


def test_default_mix_excludes_market_families():
    assert set(syn.SyntheticConfig().family_weights) == set(syn.BASE_FAMILIES)


def test_market_share_of_variance():
    # the market factor's share of tr Σ is U(0.2, 0.5): mean 0.35, SD 0.087 per draw;
    # 400 draws: SE 0.0043, tolerance 4 SE
    g = torch.Generator().manual_seed(0)
    shares, sectors = [], []
    for _ in range(400):
        b, d = wm.market_sectors_factors(int(torch.randint(5, 200, (), generator=g)), g, {})
        tot = float((b * b).sum() + (d * d).sum())
        shares.append(float((b[:, 0] ** 2).sum()) / tot)
        sectors.append(float((b[:, 1:] ** 2).sum()) / tot)
    assert min(shares) >= 0.2 - 1e-12 and max(shares) <= 0.5 + 1e-12
    assert abs(sum(shares) / 400 - 0.35) < 4 * 0.0043
    assert abs(sum(sectors) / 400 - 0.125) < 4 * 0.0022


def test_market_eigenvalue_dominates():
    # the top eigenvalue carries about the market share (a spike of order p)
    s = syn.sample_sigma("market_sectors", 300, market_share=0.4, sector_share=0.1)
    top = float(torch.linalg.eigvalsh(s)[-1]) / float(torch.trace(s))
    assert 0.38 < top < 0.5


def test_regime_shift_draws_from_estimation_sigma():
    # X comes from Σ_est, not from the returned Σ_hold: a large sample's covariance
    # matches the draw root, not the target (the generator builds the family first,
    # so the builder on the sample's seed reproduces its roots)
    sigma, x = syn.regenerate(11, 20, 100_000, "regime_shift")
    sigma2, root = wm.regime_shift(20, torch.Generator().manual_seed(11), {})
    assert torch.equal(sigma, sigma2)
    b, d = root.draw
    est = b @ b.T + torch.diag(d * d)
    s = x.T @ x / x.shape[0]
    gap = float((est - sigma).norm() / sigma.norm())
    assert gap > 0.1
    assert float((s - est).norm() / est.norm()) < 0.03
    b2, d2 = root.target
    assert torch.allclose(sigma, b2 @ b2.T + torch.diag(d2 * d2), atol=1e-12)


def test_resampled_bootstrap_covariance_is_population():
    # every circular-bootstrap row is uniform over the population: E[xxᵀ] = Σ exactly;
    # a long draw matches at 5 % (relative Frobenius)
    g = torch.Generator().manual_seed(5)
    sigma, root = wm.resampled(8, g, {})
    x = wm.bootstrap_returns(root.draw, 100_000, g, torch.float64)
    s = x.T @ x / x.shape[0]
    assert float((s - sigma).norm() / sigma.norm()) < 0.05
    assert wm.resampling_returns().shape[1] == 20


def test_training_rows_use_the_target_sigma():
    # the builder's uᵀΣu from the generator's roots equals the explicit one on Σ_hold
    cfg = syn.as_config({**MARKET_ONLY, "p_min": 80, "p_max": 80, "batch_size": 6})
    plan = next(syn.plan_batches(6, 0, cfg))
    batch = syn.build_planned_batch(plan, cfg, torch.float64, keep_roots=True)
    evals, U = torch.linalg.eigh(batch.X.transpose(1, 2) @ batch.X / batch.n)
    fast = dataset.fsopt_loss_from_eigh(U, batch.sigma, batch.roots)
    slow = dataset.fsopt_loss_from_eigh(U, batch.sigma)
    assert torch.allclose(fast, slow, rtol=1e-9)


def test_bad_parameters_refused():
    with pytest.raises(ValueError):
        syn.sample_sigma("market_sectors", 10, market_share=0.9, sector_share=0.2)
    with pytest.raises(ValueError):
        syn.sample_sigma("market_sectors", 10, n_sectors=11)
