"""The market-like world families (shrinklab.data.worlds_market)."""

import hashlib

import numpy as np
import pytest
import torch

from shrinklab.data import dataset
from shrinklab.data import returns as data_returns
from shrinklab.data import synthetic as syn
from shrinklab.data import worlds_market as wm

MARKET_ONLY = {"family_weights": dict.fromkeys(wm.MARKET_FAMILIES, 1.0), "edge_prob": 0.0}
NEW = wm.MARKET_FAMILIES + wm.FUND_FAMILIES + wm.LATER_FAMILIES


@pytest.mark.parametrize("family", NEW)
@pytest.mark.parametrize("p", [2, 5, 20, 45, 500])
def test_sigma_symmetric_pd(family, p):
    s = syn.sample_sigma(family, p, torch.Generator().manual_seed(p))
    assert s.shape == (p, p)
    assert torch.equal(s, s.T)
    assert float(torch.linalg.eigvalsh(s).min()) > 1e-8


@pytest.mark.parametrize("family", NEW)
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


def _find_start(rows: torch.Tensor, r: torch.Tensor) -> int:
    """Where the centred population ``rows`` sits in ``r`` (a numpy search, independent
    of the family's own slicing): differences of rows are invariant to the centring."""
    a, b = r.numpy(), rows.numpy()
    target = b[1] - b[0]
    hits = [i for i in range(len(a) - 1) if np.allclose(a[i + 1] - a[i], target, atol=1e-15)]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize(("p", "seed"), [(8, 3), (20, 4), (35, 6)])
def test_resampled_forward_truth_is_the_following_days(p, seed):
    # X is bootstrapped from the population window; the returned Σ is W C_after Wᵀ + diag(d²)
    # with C_after the covariance (ddof 0, numpy) of the `horizon` real days right after it
    g = torch.Generator().manual_seed(seed)
    sigma, root = wm.resampled_forward(p, g, {"length": 300, "horizon": 60})
    r = wm.resampling_returns()
    boot = root.draw
    start = _find_start(boot.rows, r)
    assert boot.rows.shape == (300, 20)
    after = r.numpy()[start + 300 : start + 360]
    c_after = np.cov(after, rowvar=False, ddof=0)
    w, d = boot.weights.numpy(), boot.noise.numpy()
    expected = w @ c_after @ w.T + np.diag(d**2)
    assert np.allclose(sigma.numpy(), expected, rtol=1e-10, atol=1e-14)
    assert torch.equal(sigma, sigma.T)
    # the draw's own covariance is the population's, on the same scale (not Σ_hold)
    c_pop = np.cov(r.numpy()[start : start + 300], rowvar=False, ddof=0)
    sigma_est = w @ c_pop @ w.T + np.diag(d**2)
    assert abs(np.trace(sigma_est) / p - 1.0) < 1e-10
    assert not np.allclose(sigma_est, expected, rtol=0.05)


def test_resampled_forward_bad_parameters():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="horizon must be at least 22"):
        wm.resampled_forward(5, g, {"horizon": 10})
    with pytest.raises(ValueError, match="need 2 <= length"):
        wm.resampled_forward(5, g, {"length": 10**6})
    with pytest.raises(ValueError, match="unknown parameters"):
        syn.sample_sigma("resampled_forward", 6, n_sectors=2)


def test_resampled_forward_stays_before_the_validation_years():
    # population and holding days both end before RESAMPLE_END: the source is cut there
    r = wm.resampling_returns()
    n_days = int((data_returns.load_returns().index < wm.RESAMPLE_END).sum())
    assert r.shape[0] == n_days


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


# ------------------------------------------------------------------ diversified
def _shares(b, d):
    tot = float((b * b).sum() + (d * d).sum())
    return float((b[:, 0] ** 2).sum()) / tot, float((b[:, 1:] ** 2).sum()) / tot, tot


@pytest.mark.parametrize("p", [2, 6, 10, 80])
def test_diversified_shares_exact_and_trace_scaled(p):
    g = torch.Generator().manual_seed(p)
    for _ in range(50):
        sigma, (b, d) = wm.diversified(p, g, {})
        h, s, tot = _shares(b, d)
        assert 0.5 <= h <= 0.9 and 0.0 < s <= 0.3 + 1e-12
        assert 1 - h - s >= 0.01 - 1e-12  # the style share is capped
        assert abs(tot - p) < 1e-10 * p and abs(float(torch.trace(sigma)) - p) < 1e-10 * p
        assert torch.allclose(sigma, b @ b.T + torch.diag(d * d), rtol=0, atol=1e-12)
        assert 2 <= b.shape[1] <= 4  # market + 1..3 dense styles
    sigma, (b, d) = wm.diversified(p, g, {"market_share": 0.7, "style_share": 0.2, "n_styles": 2})
    h, s, _ = _shares(b, d)
    assert abs(h - 0.7) < 1e-12 and abs(s - 0.2) < 1e-12 and b.shape[1] == 3
    assert bool((b[:, 1:] != 0).all())  # dense style loadings


def test_diversified_style_cap_binds():
    # market share 0.85 and a style draw above 0.14: the style share is 0.99 - 0.85
    g = torch.Generator().manual_seed(0)
    capped = 0
    for _ in range(200):
        _, (b, d) = wm.diversified(12, g, {"market_share": 0.85})
        h, s, _ = _shares(b, d)
        assert s <= 0.14 + 1e-12
        capped += abs(s - 0.14) < 1e-12
    assert capped > 100  # P(U(0.05, 0.3) > 0.14) = 0.64


def test_diversified_is_highly_correlated():
    # market 0.8, styles 0.1, idiosyncratic 0.1: average pairwise correlation about 0.8
    # (betas near 1), far above market_sectors' (market share at most 0.5)
    s = syn.sample_sigma("diversified", 50, market_share=0.8, style_share=0.1)
    sd = torch.diagonal(s).sqrt()
    c = s / torch.outer(sd, sd)
    off = float((c.sum() - 50) / (50 * 49))
    assert 0.65 < off < 0.9
    assert float(torch.linalg.eigvalsh(s).min()) > 0


def test_diversified_bad_parameters_refused():
    with pytest.raises(ValueError, match="market_share"):
        syn.sample_sigma("diversified", 6, market_share=0.9, style_share=0.2)
    with pytest.raises(ValueError, match="market_share"):
        syn.sample_sigma("diversified", 6, market_share=0.0)
    with pytest.raises(ValueError, match="n_styles"):
        syn.sample_sigma("diversified", 6, n_styles=0)
    with pytest.raises(ValueError, match="unknown parameters"):
        syn.sample_sigma("diversified", 6, n_sectors=2)


# Values from main's code before the diversified family was added (same seed): the
# other families' draws, and the pipeline mix's batch plans, must not move.
MAIN_SIGMA = {
    "factor": (31.5799323978867, 0.1092028096697508),
    "lognormal": (5.8873541726398075, -0.057580702358226085),
    "spectrum_1_3_10": (60.72336553352688, 0.11209396173622914),
    "discrete": (644.3953281016143, -1.9887212292295235),
    "toeplitz": (31.71836011479784, 0.64571275563388),
    "block": (24.36995815655286, 0.5356498356015647),
    "sp500": (20.021749333034364, 0.4018592268220892),
    "near_singular": (5.902392957505751, 0.06334129730577132),
    "dominant_factor": (629.8375939544193, 9.943883401712855),
    "market_sectors": (38.95106272883662, 0.3226845621946948),
    "regime_shift": (51.95342619615159, 0.4652655021584296),
    "resampled": (27.963524571952444, 0.23721286110168271),
}
MAIN_PLAN_SHA = "1bc123418f2dc8040e485f49490934c498da3466f47f6deb365773b0e25c49bf"
PIPELINE_MIX = dict.fromkeys(syn.BASE_FAMILIES + wm.MARKET_FAMILIES, 1)


@pytest.mark.parametrize("family", sorted(MAIN_SIGMA))
def test_existing_family_draws_unchanged(family):
    s = syn.sample_sigma(family, 9, torch.Generator().manual_seed(5))
    # to 1e-12: a changed draw moves these by far more; CPUs with other SIMD kernels
    # (numpy's AVX-512 paths, which the resampled family's draws go through) move the
    # last bits (27.963524571952433 instead of ...444 on an AVX-512 VM)
    assert (float(s.sum()), float(s[0, 1])) == pytest.approx(MAIN_SIGMA[family], rel=1e-12)


def test_pipeline_mix_plans_unchanged():
    cfg = {"family_weights": PIPELINE_MIX, "batch_size": 8, "p_max": 40}
    h = hashlib.sha256()
    for plan in syn.plan_batches(64, 3, cfg):
        key = (plan.p, plan.n, plan.families, plan.sample_seed.tolist(), plan.df.tolist())
        h.update(repr(key).encode())
    assert h.hexdigest() == MAIN_PLAN_SHA


def test_stored_family_names():
    # sets without a diversified world keep main's 12 names (their files keep their bytes)
    legacy = syn.FAMILIES[:12]
    assert legacy[-1] == "resampled" and syn.FAMILIES[12] == "diversified"
    assert syn.stored_family_names(torch.tensor([0, 11])) == legacy
    assert syn.stored_family_names(torch.tensor([], dtype=torch.int64)) == legacy
    # sets with a diversified world but no resampled_forward one keep 13 (the pipeline's)
    assert syn.stored_family_names(torch.tensor([3, 12])) == syn.FAMILIES[:13]
    assert syn.FAMILIES[13:] == ("resampled_forward", "fund_portfolios")
    assert syn.stored_family_names(torch.tensor([3, 13])) == syn.FAMILIES[:14]
    assert syn.stored_family_names(torch.tensor([14])) == syn.FAMILIES
    cfg = {"family_weights": {"diversified": 1, "factor": 1}, "batch_size": 8, "p_max": 12,
           "edge_prob": 0.0}  # fmt: skip
    ts = dataset.build_training_set(16, 0, cfg, False, 1)
    assert ts.family_names == syn.FAMILIES[:13] and "diversified" in ts.families
    plain = dataset.build_training_set(8, 0, {**cfg, "family_weights": {"factor": 1}}, False, 1)
    assert plain.family_names == legacy and set(plain.families) == {"factor"}


@pytest.mark.parametrize(("p", "seed"), [(6, 0), (20, 1), (60, 2)])
def test_fund_portfolios_structure(p, seed):
    # tr Σ = p; each fund's tracking variance is exactly the drawn share of its variance;
    # Σ − diag(d²) = (W B_s)(W B_s)ᵀ + (W D_s)(W D_s)ᵀ has rank at most min(p, q + 1 + k):
    # with n_stocks = p // 2 the funds span fewer directions than there are funds
    g = torch.Generator().manual_seed(seed)
    q = max(2, p // 2)
    sigma, (b, d) = wm.fund_portfolios(p, g, {"n_stocks": q, "tracking_share": 0.01})
    assert abs(float(torch.trace(sigma)) / p - 1.0) < 1e-12
    np.testing.assert_allclose((d**2 / torch.diagonal(sigma)).numpy(), 0.01, rtol=1e-10)
    core = (sigma - torch.diag(d**2)).numpy()
    ev = np.linalg.eigvalsh(core)
    assert b.shape[1] >= q + 2  # market + sectors + one column per stock
    rank = int((ev > 1e-10 * ev.max()).sum())
    k = b.shape[1] - 1 - q
    assert rank <= min(p, q + 1 + k)
    if p > q + 1 + k:
        assert rank < p
    # long-only holdings of a market with positive betas: every pair positively correlated
    sd = torch.diagonal(sigma).sqrt()
    assert float((sigma / torch.outer(sd, sd)).min()) > 0


def test_fund_portfolios_bad_parameters():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="tracking_share"):
        wm.fund_portfolios(5, g, {"tracking_share": 1.0})
    with pytest.raises(ValueError, match="n_stocks"):
        wm.fund_portfolios(5, g, {"n_stocks": 1})
