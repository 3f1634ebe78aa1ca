"""Tests of shrinklab.data.synthetic against closed forms, scipy references and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from shrinklab.data import draws, families, sampling
from shrinklab.data import synthetic as syn
from shrinklab.data import worlds_market as wm

SMALL = {"batch_size": 16, "p_max": 40}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- families
@pytest.mark.parametrize("family", syn.FAMILIES)
@pytest.mark.parametrize("p", [5, 20, 45])
def test_every_family_is_symmetric_positive_definite(family, p):
    for seed in range(3):
        s = syn.sample_sigma(family, p, _gen(seed))
        assert s.shape == (p, p) and s.dtype == torch.float64
        assert torch.equal(s, s.T), "exactly symmetric"
        ev = np.linalg.eigvalsh(s.numpy())  # independent (numpy/LAPACK) eigenvalues
        assert ev.min() > 0, f"{family}: smallest eigenvalue {ev.min()}"
        torch.linalg.cholesky(s)  # raises if not PD


@pytest.mark.parametrize("p,counts", [(5, (1, 2, 2)), (10, (2, 4, 4)), (200, (40, 80, 80))])
def test_spectrum_1_3_10_is_exact(p, counts):
    expected = np.repeat([1.0, 3.0, 10.0], counts)
    for seed in range(2):
        s = syn.sample_sigma("spectrum_1_3_10", p, _gen(seed))
        np.testing.assert_allclose(np.linalg.eigvalsh(s.numpy()), expected, rtol=0, atol=1e-11)
    # a random basis: not diagonal, and a different basis for another seed
    s0, s1 = (syn.sample_sigma("spectrum_1_3_10", p, _gen(k)) for k in (0, 1))
    off = s0 - torch.diag(torch.diagonal(s0))
    assert off.abs().max() > 0.1
    assert (s0 - s1).abs().max() > 0.1


def test_toeplitz_matches_scipy_and_its_cholesky_root():
    p, rho = 30, 0.7
    s = syn.sample_sigma("toeplitz", p, _gen(0), rho=rho)
    ref = scipy.linalg.toeplitz(rho ** np.arange(p))
    np.testing.assert_allclose(s.numpy(), ref, rtol=1e-14, atol=1e-15)
    brute = np.array([[rho ** abs(i - j) for j in range(p)] for i in range(p)])
    np.testing.assert_allclose(s.numpy(), brute, rtol=1e-14, atol=1e-15)
    # the closed-form AR(1) root used to draw X is the Cholesky factor
    _, root = families._toeplitz(p, _gen(0), {"rho": rho})
    np.testing.assert_allclose(root.numpy(), np.linalg.cholesky(ref), atol=1e-12)


@pytest.mark.parametrize("family", syn.FAMILIES)
def test_sampling_root_reproduces_sigma(family):
    # X is drawn from a root of Σ: a full L (Σ = LLᵀ) or factors (B, d) (Σ = BBᵀ + diag d²)
    for hetero in (None, 0.5):
        kw = {} if hetero is None else {"hetero": hetero}
        sigma, root = families.sigma_and_root(family, 30, _gen(4), kw, 0.0)
        root = wm.target_root(root)  # a moving world's X is drawn from another Σ
        assert torch.equal(sigma, sigma.T), "exactly symmetric (no symmetrising pass)"
        if isinstance(root, tuple):
            b, d = root
            rebuilt = b @ b.T + torch.diag(d * d)
        else:
            rebuilt = root @ root.T
        torch.testing.assert_close(rebuilt, sigma, rtol=1e-12, atol=1e-12)


def test_factor_model_low_rank_plus_diagonal():
    # Σ = BBᵀ + Ψ with k = n_factors columns: Σ − Ψ has rank k, hence p − k
    # eigenvalues of Σ lie inside [min ψ, max ψ] ⊂ [0.3, 1.0] (Weyl interlacing).
    p, k = 60, 3
    s = syn.sample_sigma("factor", p, _gen(3), n_factors=k)
    ev = np.linalg.eigvalsh(s.numpy())
    assert np.all((ev[: p - k] >= 0.3 - 1e-9) & (ev[: p - k] <= 1.0 + 1e-9))
    assert ev[-1] > 5.0  # the market factor


def test_edge_families():
    s = syn.sample_sigma("near_singular", 50, _gen(0))
    ev = np.linalg.eigvalsh(s.numpy())
    assert ev.max() / ev.min() > 1e3 and ev.min() > 0
    for seed in range(3):
        s = syn.sample_sigma("dominant_factor", 40, _gen(seed))
        ev = np.linalg.eigvalsh(s.numpy())
        assert 0.75 < ev[-1] / ev.sum() < 0.97


def test_block_is_a_block_correlation():
    s = syn.sample_sigma("block", 30, _gen(2), n_blocks=3, rho_within=0.6, rho_between=0.1)
    np.testing.assert_allclose(torch.diagonal(s).numpy(), 1.0)
    off = s.numpy()[~np.eye(30, dtype=bool)]
    assert set(np.round(off, 12)) <= {0.6, 0.1}


def test_sp500_subset_is_a_real_covariance_before_the_test_period():
    from shrinklab.data import returns as data

    cal = syn.sp500_calibration()
    r = data.load_returns()
    r = r[r.index < data.TEST_START].to_numpy()
    window = 504
    assert (cal["start"] + window <= r.shape[0]).all()  # never past 2015-12-31
    w = 3
    ref = np.cov(r[cal["start"][w] : cal["start"][w] + window], rowvar=False)
    s = syn.sample_sigma("sp500", 8, _gen(0), window=w).numpy()
    # Σ is a rescaled principal submatrix of the window covariance: match it by correlations
    corr = s / np.sqrt(np.outer(np.diag(s), np.diag(s)))
    ref_corr = ref / np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
    hits = 0
    for i in range(8):
        for j in range(i + 1, 8):
            hits += np.isclose(ref_corr, corr[i, j], atol=1e-12).any()
    assert hits == 28
    np.testing.assert_allclose(np.trace(s) / 8, 1.0)
    big = syn.sample_sigma("sp500", 120, _gen(0)).numpy()
    evb = np.linalg.eigvalsh(big)
    assert evb.min() > 0 and evb[-1] / evb.sum() > 0.15  # a market spike, as in the data


def test_public_sp500_scenario_draws_sigma_from_2016_2022_only():
    """The public scenario (``period="report"``) takes its Σ from a 2016–2022 window,
    never from a pre-2016 (training) window; the training family is unchanged."""
    from shrinklab.data import returns as data

    train, report = syn.sp500_calibration(), syn.sp500_calibration(period="report")
    r = data.load_returns()
    r = r[(r.index >= data.TEST_START) & (r.index <= data.TEST_END)].to_numpy()
    assert (report["start"] + 504 <= r.shape[0]).all() and len(report["cov"]) >= 8
    np.testing.assert_allclose(
        report["cov"][2], np.cov(r[report["start"][2] :][:504], rowvar=False)
    )

    def eig(c):
        d = np.sqrt(np.diag(c))
        return np.linalg.eigvalsh(c / np.outer(d, d))  # permutation-invariant

    sigma, _ = syn.make_scenario({"family": "sp500", "p": 20, "n": 40, "period": "report"}, 4, 0)
    for s in sigma.numpy():
        e = eig(s)
        assert min(np.abs(e - eig(c)).max() for c in report["cov"]) < 1e-8
        assert min(np.abs(e - eig(c)).max() for c in train["cov"]) > 1e-3
    with pytest.raises(ValueError, match="period"):
        syn.sp500_calibration(period="test")


def _corr_stats(s: np.ndarray) -> tuple[float, float]:
    d = np.sqrt(np.diag(s))
    c = s / np.outer(d, d)
    p = len(d)
    return c[~np.eye(p, dtype=bool)].mean(), np.linalg.eigvalsh(c)[-1] / p


def test_sp500_calibration_carries_over_to_larger_p():
    # A p = 100 world built from window w keeps that window's mean correlation (measured:
    # mean |Δ| 0.011) and, up to the finite-p term (1 − ρ)(1/20 − 1/p) ≈ 0.03, its
    # market share of variance (measured: mean Δ −0.034)
    covs = syn.sp500_calibration()["cov"]
    real = np.array([_corr_stats(c) for c in covs])
    synth = np.array(
        [
            _corr_stats(syn.sample_sigma("sp500", 100, _gen(w), window=w).numpy())
            for w in range(len(covs))
        ]
    )
    assert np.abs(synth[:, 0] - real[:, 0]).mean() < 0.03
    assert abs((synth[:, 0] - real[:, 0]).mean()) < 0.02
    assert np.abs(synth[:, 1] - real[:, 1]).mean() < 0.06


def test_bad_family_parameters_raise():
    with pytest.raises(ValueError, match="unknown family"):
        syn.sample_sigma("wishart", 5)
    with pytest.raises(ValueError, match="unknown parameters"):
        syn.sample_sigma("toeplitz", 5, rho=0.3, n_factors=2)
    with pytest.raises(ValueError, match="rho"):
        syn.sample_sigma("toeplitz", 5, rho=1.0)


# --------------------------------------------------------------------------- returns
def test_chi2_sampler_matches_scipy():
    for df in (3.0, 4.5, 30.0):
        w = sampling._chi2(df, 20000, _gen(int(df * 10))).numpy()
        assert scipy.stats.kstest(w, scipy.stats.chi2(df).cdf).pvalue > 1e-3


@pytest.mark.parametrize(
    "spec,tol",
    [
        ({"family": "toeplitz", "rho": 0.6, "p": 6}, 0.015),
        ({"family": "factor", "p": 6}, 0.015),
        ({"family": "sp500", "p": 6}, 0.015),
        ({"family": "lognormal", "p": 6}, 0.015),
        ({"family": "block", "p": 6}, 0.015),
        ({"family": "dominant_factor", "p": 6, "share": 0.5}, 0.015),
        ({"family": "toeplitz", "rho": 0.6, "p": 6, "df": 8}, 0.02),
        ({"family": "spectrum_1_3_10", "p": 6, "df": 6}, 0.03),
    ],
)
def test_sample_covariance_converges_to_sigma(spec, tol):
    # n = 200 000 draws: the relative Frobenius MC error is ≈ sqrt(κ(p+1)/n) ≈ 0.006·sqrt(κ)
    # (κ = kurtosis factor, 1 Gaussian, 1 + 6/(ν−4) Student-t); observed over 5 seeds:
    # ≤ 0.0054 Gaussian, ≤ 0.006 (ν=8), ≤ 0.011 (ν=6). A wrong t scale (ν/(ν−2) off)
    # gives 0.33 (ν=8) and 0.5 (ν=6).
    sigma, x = syn.make_scenario({**spec, "n": 200_000, "fixed_sigma": True}, n_reps=1, seed=11)
    s = (x[0].T @ x[0] / x.shape[1]).numpy()  # mean is known to be zero
    sig = sigma[0].numpy()
    assert np.linalg.norm(s - sig) / np.linalg.norm(sig) < tol


def test_student_t_marginals_and_gaussian_marginals():
    nu = 5.0
    sigma, x = syn.make_scenario(
        {"family": "toeplitz", "rho": 0.5, "p": 3, "n": 20000, "df": nu}, n_reps=1, seed=2
    )
    z = x[0, :, 1].numpy() / math.sqrt(float(sigma[0, 1, 1]))
    # Cov = Σ means the t scale is sqrt((ν−2)/ν)
    t_scaled = z * math.sqrt(nu / (nu - 2.0))
    assert scipy.stats.kstest(t_scaled, scipy.stats.t(nu).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(z, scipy.stats.norm.cdf).pvalue < 1e-6  # heavier than Gaussian
    sigma, x = syn.make_scenario({"family": "toeplitz", "rho": 0.5, "p": 3, "n": 20000}, 1, 2)
    assert scipy.stats.kstest(x[0, :, 2].numpy(), scipy.stats.norm.cdf).pvalue > 1e-3


def test_default_float32_normals_give_cov_sigma_and_gaussian_marginals():
    # generate_batches draws its normals in float32 (upcast): check Cov = Σ per sample
    # (Gaussian, n = 100 000, p = 5: MC error ≈ 0.008, tolerance 0.025) and N(0,1)
    # marginals of Σ^(-1/2)-whitened draws (KS against scipy)
    cfg = {"p_min": 5, "p_max": 5, "ratio_min": 5e-5, "ratio_max": 5e-5, "batch_size": 8}
    cfg.update(tail_prob=0.0, short_prob=0.0, normal_dtype="float32")
    (b,) = syn.generate_batches(8, 0, cfg)
    assert b.n == 100_000
    for i in range(len(b)):
        sig = b.sigma[i].numpy()
        x = b.X[i].numpy()
        s = x.T @ x / b.n
        assert np.linalg.norm(s - sig) / np.linalg.norm(sig) < 0.025, b.family[i]
    w = np.linalg.solve(np.linalg.cholesky(b.sigma[0].numpy()), b.X[0].numpy().T)
    assert scipy.stats.kstest(w[0], scipy.stats.norm.cdf).pvalue > 1e-3


# --------------------------------------------------------------------------- batches
def _collect(n, seed, cfg):
    return list(syn.generate_batches(n, seed, cfg))


def test_batches_shapes_and_fields():
    batches = _collect(50, 0, SMALL)
    assert sum(len(b) for b in batches) == 50
    for b in batches:
        B = len(b)
        assert b.sigma.shape == (B, b.p, b.p) and b.X.shape == (B, b.n, b.p)
        assert b.sigma.dtype == b.X.dtype == torch.float64
        assert b.df.shape == (B,) and b.sample_seed.dtype == torch.int64
        assert torch.equal(b.seed, b.sample_seed)
        assert torch.isfinite(b.X).all()
        assert ((b.difficulty >= 0) & (b.difficulty <= 1)).all()
        assert set(b.family) <= set(syn.FAMILIES)
        t = torch.isfinite(b.df)
        assert ((b.df[t] >= 3) & (b.df[t] <= 30)).all()


def test_same_seed_same_batches_other_seed_differs():
    a, b, c = _collect(40, 5, SMALL), _collect(40, 5, SMALL), _collect(40, 6, SMALL)
    for x, y in zip(a, b):
        assert torch.equal(x.sigma, y.sigma) and torch.equal(x.X, y.X)
        assert x.family == y.family and torch.equal(x.sample_seed, y.sample_seed)
        assert torch.equal(x.df, y.df) and torch.equal(x.difficulty, y.difficulty)
    assert not torch.equal(a[0].sample_seed, c[0].sample_seed)


def test_regenerate_is_bit_exact_for_every_sample():
    every = dict.fromkeys(syn.REGULAR_FAMILIES, 1.0)
    cfg = {**SMALL, "edge_prob": 0.3, "short_prob": 0.3, "family_weights": every}
    seen = set()
    for b in _collect(128, 3, cfg):
        for i in range(len(b)):
            sigma, x = syn.regenerate(int(b.sample_seed[i]), b.p, b.n, b.family[i], b.df[i], cfg)
            assert torch.equal(sigma, b.sigma[i]) and torch.equal(x, b.X[i])
            seen.add(b.family[i])
    assert seen == set(syn.FAMILIES)


def test_regenerate_with_another_thread_count_agrees_to_rounding():
    cfg = {"batch_size": 4, "p_min": 60, "p_max": 120, "ratio_min": 0.5}
    batch = next(iter(syn.generate_batches(4, 1, cfg)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(len(batch)):
            args = (int(batch.sample_seed[i]), batch.p, batch.n, batch.family[i], batch.df[i], cfg)
            sigma, x = syn.regenerate(*args)
            torch.testing.assert_close(sigma, batch.sigma[i], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(x, batch.X[i], rtol=1e-12, atol=1e-12)
    finally:
        torch.set_num_threads(threads)


def test_default_config_covers_sizes():
    cfg = syn.SyntheticConfig()
    g = _gen(0)
    sizes = np.array([syn.draw_sizes(g, cfg)[:2] for _ in range(3000)])
    p, n = sizes[:, 0], sizes[:, 1]
    ratio = p / n
    assert p.min() == 5 and p.max() >= 195 and p.max() <= 200
    assert ratio.min() < 0.06 and ratio.max() > 1.8 and ratio.max() <= 2.05
    assert (p > n).mean() > 0.05  # p > n included
    assert (n <= 20).mean() > 0.05  # very short samples
    assert n.min() >= 10
    # log(p/n) spread over the whole range, not bunched: every decile bin of [log .05, log 2] hit
    bins = np.histogram(np.log(ratio), bins=10, range=(math.log(0.05), math.log(2.0)))[0]
    assert (bins > 50).all()


def test_config_probabilities_are_honoured():
    gauss = _collect(32, 0, {**SMALL, "tail_prob": 0.0, "edge_prob": 0.0})
    assert all(torch.isinf(b.df).all() for b in gauss)
    assert all(f in syn.REGULAR_FAMILIES for b in gauss for f in b.family)
    edge = _collect(32, 0, {**SMALL, "tail_prob": 1.0, "edge_prob": 1.0})
    assert all(torch.isfinite(b.df).all() for b in edge)
    assert all(f in syn.EDGE_FAMILIES for b in edge for f in b.family)
    only = _collect(32, 0, {**SMALL, "edge_prob": 0.0, "family_weights": {"toeplitz": 1.0}})
    assert {f for b in only for f in b.family} == {"toeplitz"}


def test_config_validation():
    with pytest.raises(ValueError, match="unknown synthetic config"):
        syn.as_config({"p_maxx": 3})
    with pytest.raises(ValueError, match="df_min"):
        syn.SyntheticConfig(df_min=2.0)
    with pytest.raises(ValueError, match="unknown families"):
        syn.SyntheticConfig(family_weights={"gaussian": 1.0})
    with pytest.raises(ValueError, match="tail_prob"):
        syn.SyntheticConfig(tail_prob=1.5)


# --------------------------------------------------------------------------- curriculum
def test_difficulty_ordering_and_curriculum():
    d = syn.difficulty_score
    inf = math.inf
    assert d(10, 200, inf, False) < d(100, 200, inf, False) < d(200, 100, inf, False)
    assert d(50, 100, inf, False) < d(50, 100, 10.0, False) < d(50, 100, 3.0, False)
    assert d(50, 100, inf, False) < d(50, 100, inf, True)
    assert float(d(5, 100, inf, False)) == 0.0 and float(d(200, 100, 3.0, True)) == 1.0
    rng = np.random.default_rng(0)
    diff = rng.random(100)
    order = syn.curriculum_order(diff).numpy()
    assert sorted(order) == list(range(100))
    assert np.all(np.diff(diff[order]) >= 0)
    caps = syn.progressive_sizes(200, 4, 20)
    assert caps[0] == 20 and caps[-1] == 200 and caps == sorted(caps)


# --------------------------------------------------------------------------- scenarios
@pytest.mark.parametrize(
    "spec",
    [
        {"family": "spectrum_1_3_10", "p": 60, "n": 30},
        {"family": "lognormal", "p": 40, "n": 120},
        {"family": "factor", "n_factors": 3, "p": 45, "n": 36},
        {"family": "factor", "p": 20, "n": 40, "df": 6},
        {"family": "toeplitz", "rho": 0.5, "p": 30, "n": 15},
        {"family": "sp500", "p": 20, "n": 40, "df": 5},
        {"family": "block", "p": 25, "n": 50},
        {"family": "near_singular", "p": 25, "n": 50},
        {"family": "dominant_factor", "p": 25, "n": 50},
    ],
)
def test_make_scenario_shapes_and_reproducibility(spec):
    sigma, x = syn.make_scenario(spec, n_reps=3, seed=7)
    p, n = spec["p"], spec["n"]
    assert sigma.shape == (3, p, p) and x.shape == (3, n, p)
    assert torch.isfinite(x).all()
    s2, x2 = syn.make_scenario(spec, n_reps=3, seed=7)
    assert torch.equal(sigma, s2) and torch.equal(x, x2)
    assert not torch.equal(x[0], x[1])


def test_make_scenario_fixed_sigma_and_1_3_10_grid():
    sigma, _ = syn.make_scenario({"family": "spectrum_1_3_10", "p": 50, "n": 25}, 4, 0)
    expected = np.repeat([1.0, 3.0, 10.0], (10, 20, 20))
    for s in sigma:
        np.testing.assert_allclose(np.linalg.eigvalsh(s.numpy()), expected, atol=1e-11)
    assert not torch.equal(sigma[0], sigma[1])  # fresh random basis per replication
    fixed, x = syn.make_scenario(
        {"family": "lognormal", "p": 10, "n": 20, "fixed_sigma": True}, 3, 0
    )
    assert torch.equal(fixed[0], fixed[2]) and not torch.equal(x[0], x[2])


def test_make_scenario_rejects_bad_specs():
    with pytest.raises(ValueError, match="needs"):
        syn.make_scenario({"family": "factor", "p": 5}, 1, 0)
    with pytest.raises(ValueError, match="unknown family"):
        syn.make_scenario({"family": "nope", "p": 5, "n": 5}, 1, 0)
    with pytest.raises(ValueError, match="df"):
        syn.make_scenario({"family": "factor", "p": 5, "n": 5, "df": 2}, 1, 0)
    with pytest.raises(ValueError, match="unknown parameters"):
        syn.make_scenario({"family": "toeplitz", "p": 5, "n": 5, "sigma_log": 1}, 1, 0)


def test_plans_and_chunked_builds_equal_generate_batches():
    """plan_batches + build_batch reproduce generate_batches bit-exactly, also when a plan
    is built in chunks (what shrinklab.data.dataset does to keep memory cache-sized), for
    p up to 200 (float32 products, Student-t rows, every family)."""
    import dataclasses

    cfg = {"batch_size": 12, "p_min": 30, "p_max": 200, "edge_prob": 0.3, "tail_prob": 0.5}
    batches = _collect(60, 9, cfg)
    plans = list(syn.plan_batches(60, 9, cfg))
    assert len(plans) == len(batches)
    for b, plan in zip(batches, plans, strict=True):
        assert (plan.p, plan.n, list(plan.families)) == (b.p, b.n, b.family)
        whole = syn.build_batch(plan, cfg)
        assert torch.equal(whole.X, b.X) and torch.equal(whole.sigma, b.sigma)
        assert torch.equal(whole.difficulty, b.difficulty)
        cut = 5
        parts = [
            syn.build_batch(
                dataclasses.replace(
                    plan,
                    families=plan.families[s : s + cut],
                    df=plan.df[s : s + cut],
                    sample_seed=plan.sample_seed[s : s + cut],
                ),
                cfg,
            )
            for s in range(0, len(plan.families), cut)
        ]
        assert torch.equal(torch.cat([q.X for q in parts]), b.X)
        assert torch.equal(torch.cat([q.sigma for q in parts]), b.sigma)


@pytest.mark.parametrize("family", ["lognormal", "spectrum_1_3_10", "discrete", "near_singular"])
def test_haar_families_from_float32_draws_keep_their_spectrum(family):
    """The Haar basis comes from QR of a float32-drawn Gaussian upcast to float64: Σ is
    still exactly symmetric, positive definite and has the family's eigenvalues (1e-12)."""
    g = _gen(5)
    sigma, root = families.sigma_and_root(family, 80, g, {}, 0.0)
    assert torch.equal(sigma, sigma.T)
    ev = np.linalg.eigvalsh(sigma.numpy())
    assert ev.min() > 0
    lam = np.sort((root * root).sum(0).numpy())  # ‖column i of U√λ‖² = λ_i
    np.testing.assert_allclose(ev, lam, rtol=1e-12, atol=1e-12 * ev.max())
    if family == "spectrum_1_3_10":
        np.testing.assert_allclose(ev, np.sort(syn.spectrum_1_3_10(80).numpy()), rtol=1e-12)


@pytest.mark.parametrize("family", syn.FAMILIES)
def test_training_draws_use_a_lower_triangular_root_of_the_same_sigma(family):
    """With ``lower=True`` (the float32 training draws) Σ and the generator stream are
    unchanged and every full root is lower triangular with ``LLᵀ = Σ`` (1e-12)."""
    for hetero in (None, 0.5):
        kw = {} if hetero is None else {"hetero": hetero}
        g0, g1 = _gen(7), _gen(7)
        s0, _ = families.sigma_and_root(family, 30, g0, kw, 0.0)
        s1, root = families.sigma_and_root(family, 30, g1, kw, 0.0, lower=True)
        assert torch.equal(s0, s1)
        assert torch.equal(torch.randn(3, generator=g0), torch.randn(3, generator=g1))
        if isinstance(root, (tuple, wm.Shifted)):  # factor roots (a moving world's too)
            continue
        assert torch.equal(root, root.tril())
        torch.testing.assert_close(root @ root.T, s1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trmm_draw_equals_the_gemm_product(dtype):
    """``_times_lower_t`` (one BLAS trmm, in place) against ``z @ Lᵀ`` in float64: within
    float32 rounding (2e-6 of max |x|, 270 terms of ~6e-8 each) or float64 rounding (1e-13)."""
    g = _gen(3)
    a = torch.randn(70, 70, generator=g, dtype=torch.float64)
    L = torch.linalg.cholesky(a @ a.T + 70 * torch.eye(70, dtype=torch.float64))
    z = torch.randn(270, 70, generator=g, dtype=dtype)
    ref = z.double() @ L.to(dtype).double().T
    got = sampling._times_lower_t(z.clone(), L)
    assert got.dtype == dtype and got.shape == (270, 70)
    tol = 2e-6 if dtype == torch.float32 else 1e-13
    assert float((got.double() - ref).abs().max()) <= tol * float(ref.abs().max())


@pytest.mark.parametrize("p", [3, 64, 200])
def test_lapack_qr_factor_against_numpy(p):
    """``_qr_q`` (scipy LAPACK geqrf/orgqr on a float32 draw upcast) against numpy's QR
    of the same float64 matrix: Q orthogonal and QR = A to 1e-13, the same Q and diag R
    once both are sign-normalised (1e-10: the Householder QR is unique up to signs)."""
    a32 = torch.randn(p, p, generator=_gen(p), dtype=torch.float32)
    q, r_diag = draws.qr_q(a32)
    a = a32.double().numpy()
    np.testing.assert_allclose(q.T @ q, np.eye(p), rtol=0, atol=1e-13)
    r = q.T @ a  # upper triangular with diagonal r_diag
    np.testing.assert_allclose(np.tril(r, -1), 0.0, rtol=0, atol=1e-12 * np.abs(a).max())
    np.testing.assert_allclose(np.diagonal(r), r_diag, rtol=1e-12, atol=0)
    q_ref, r_ref = np.linalg.qr(a)
    s, s_ref = np.sign(r_diag), np.sign(np.diagonal(r_ref))
    np.testing.assert_allclose(q * s, q_ref * s_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.abs(r_diag), np.abs(np.diagonal(r_ref)), rtol=1e-10)


def test_builder_batches_keep_the_roots_of_their_draws():
    """``build_batch(..., keep_roots=True)`` (the training-set builder's batches) carries
    each sample's root: Σ = LLᵀ with L lower triangular, or Σ = BBᵀ + diag(d²) (1e-12),
    and X unchanged; public batches carry none."""
    cfg = syn.as_config({"batch_size": 24, "p_min": 30, "p_max": 40, "edge_prob": 0.4})
    plan = next(syn.plan_batches(24, 2, cfg))
    b = syn.build_planned_batch(plan, cfg, torch.float32, keep_roots=True)
    ref = syn.build_batch(plan, cfg)
    assert ref.roots is None and len(b.roots) == len(b)
    assert torch.equal(b.X.double(), ref.X) and torch.equal(b.sigma, ref.sigma)
    for sigma, root in zip(b.sigma, b.roots, strict=True):
        if isinstance(root, tuple):
            rebuilt = root[0] @ root[0].T + torch.diag(root[1] ** 2)
        else:
            assert torch.equal(root, root.tril())
            rebuilt = root @ root.T
        torch.testing.assert_close(rebuilt, sigma, rtol=1e-12, atol=1e-12)
