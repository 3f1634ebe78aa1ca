"""Ensembles: combination rule, mixture variance, temperature, calibration metrics,
persistence, PRIAL, and the four builders (on tiny data)."""

from __future__ import annotations

import copy
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny_sets import FNAMES, TNAMES, F, K, tiny_set
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from shrinklab.core.metrics import normalised_prial_of, prial_of, quadratic_loss
from shrinklab.data.subsets import take
from shrinklab.evaluation.selection import (
    coverage_table,
    prial_table,
    reliability_curves,
    select_ensemble,
)
from shrinklab.models.calibration import (
    conformal_quantile,
    conformal_scores,
    coverage_within_tolerance,
    fit_temperature,
    fit_variance_weights,
    gaussian_nll,
    interval_coverage,
    reliability_curve,
)
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.models.registry import load_model, save_model
from shrinklab.training.ensembles import (
    boosting_probabilities,
    train_architecture_ensemble,
    train_boosted,
    train_checkpoint_average,
    train_multi_seed,
)


def _net(seed: int, **kw) -> MLShrinkageNetwork:
    torch.manual_seed(seed)
    net = MLShrinkageNetwork(F, K, hidden_dims=kw.pop("hidden_dims", (16, 8)), **kw)
    # non-trivial batch-norm statistics and log_var head so members really differ
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
        net.log_var_head.bias.fill_(-3.0 + seed)
    return net.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.as_tensor(tiny_set(64, F, K, seed=1).features)


def test_ensemble_of_identical_members_equals_member(x):
    net = _net(0)
    ens = EnsembleModel([copy.deepcopy(net) for _ in range(4)])
    a, b = ens.predict(x), net.predict(x)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("combine", ["intensities", "mean"])
def test_combination_and_variance_match_closed_form(x, combine):
    members = [_net(s) for s in range(3)]
    rho = np.array([0.5, 0.3, 0.2])
    ens = EnsembleModel(members, temperature=1.7, combine=combine, member_weights=rho * 10)
    ens.set_temperature(1.7, within_weight=0.4)
    out = ens.predict(x)
    outs = [m.predict(x) for m in members]
    A = np.stack([o.alpha.double().numpy() for o in outs])  # (M, B)
    P = np.stack([o.weights.double().numpy() for o in outs])  # (M, B, K)
    V = np.exp(np.stack([o.log_var.double().numpy() for o in outs]))
    alpha = (rho[:, None] * A).sum(0)
    if combine == "intensities":
        w = (rho[:, None, None] * A[..., None] * P).sum(0)
    else:
        w = alpha[:, None] * (rho[:, None, None] * P).sum(0)
    # law of total variance of the mixture Σ ρ_m N(α_m, v_m), times the temperature
    var = 1.7 * ((rho[:, None] * (A - alpha) ** 2).sum(0) + 0.4 * (rho[:, None] * V).sum(0))
    np.testing.assert_allclose(out.alpha.numpy(), alpha, atol=1e-6)
    np.testing.assert_allclose(out.intensities.numpy(), w, atol=1e-6)
    np.testing.assert_allclose(out.weights.sum(1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.exp(out.log_var.double().numpy()), var, rtol=1e-5)


def test_mixture_variance_matches_monte_carlo():
    """Sampling the mixture Σ ρ_m N(α_m, v_m) gives the variance the ensemble reports."""
    members = [_net(s) for s in range(3)]
    ens = EnsembleModel(members)
    x1 = torch.as_tensor(tiny_set(1, F, K, seed=5).features)
    outs = ens.predict_members(x1)
    rng = np.random.default_rng(0)
    n = 400_000
    comp = rng.integers(0, 3, size=n)
    mu = np.array([float(o.alpha[0]) for o in outs])
    sd = np.sqrt(np.exp([float(o.log_var[0]) for o in outs]))
    draws = mu[comp] + sd[comp] * rng.normal(size=n)
    var = float(torch.exp(ens.predict(x1).log_var[0]))
    assert draws.var() == pytest.approx(var, rel=0.02)  # MC relative error ~ 0.3 %


def test_intensity_averaging_never_worse_than_mean_member_loss(x):
    """Jensen: the Frobenius loss is convex in w, so L(mean w) ≤ mean L(w_m) per sample."""
    data = tiny_set(64, F, K, seed=1)
    members = [_net(s) for s in range(4)]
    ens = EnsembleModel(members)
    losses = torch.stack(
        [quadratic_loss(m.predict(x).intensities, data.G, data.c, data.d) for m in members]
    )
    l_ens = quadratic_loss(ens.predict(x).intensities, data.G, data.c, data.d)
    assert bool((l_ens <= losses.mean(0) + 1e-9).all())
    assert bool((l_ens < losses.mean(0) - 1e-6).any())


def test_save_load_round_trip_is_exact(tmp_path, x):
    members = [_net(0), _net(1, use_attention=True, attention_dim=8), _net(2, hidden_dims=(24,))]
    ens = EnsembleModel(members, temperature=2.5, member_weights=[1, 2, 3], label="arch")
    ens.set_temperature(2.5, within_weight=0.3)
    path = save_model(tmp_path / "ens.pt", ens, FNAMES, TNAMES, extra={"note": "t"})
    loaded = load_model(path)
    assert isinstance(loaded, EnsembleModel)
    assert loaded.label == "arch" and len(loaded.members) == 3
    assert float(loaded.temperature) == pytest.approx(2.5)
    assert float(loaded.within_weight) == pytest.approx(0.3)
    for u, v in zip(loaded.predict(x), ens.predict(x)):
        assert torch.equal(u, v)
    # one file only
    assert [p.name for p in tmp_path.iterdir()] == ["ens.pt"]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleModel([])
    with pytest.raises(ValueError, match="disagree"):
        EnsembleModel([_net(0), MLShrinkageNetwork(F + 1, K)])
    with pytest.raises(ValueError, match="temperature"):
        EnsembleModel([_net(0)], temperature=0.0)
    with pytest.raises(ValueError, match="combine"):
        EnsembleModel([_net(0)], combine="median")
    with pytest.raises(ValueError, match="shape"):
        EnsembleModel([_net(0)]).predict(np.zeros((3, F + 2)))
    with pytest.raises(ValueError, match="NaN"):
        EnsembleModel([_net(0)]).predict(np.full((3, F), np.nan))
    with pytest.raises(ValueError, match="same length"):
        interval_coverage([0.1, 0.2], [1.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="> 0"):
        fit_temperature([0.1], [0.0], [0.3])
    with pytest.raises(ValueError, match="levels"):
        interval_coverage([0.1], [1.0], [0.3], levels=(1.0,))


# ------------------------------------------------------------------ calibration
def _gaussian_sample(n: int, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0, 1, n)
    v = rng.uniform(0.01, 0.1, n)  # heteroscedastic predicted variances
    y = mu + np.sqrt(scale * v) * rng.normal(size=n)
    return mu, v, y


def test_temperature_recovers_known_scale_and_minimises_nll():
    mu, v, y = _gaussian_sample(20_000, 2.5, seed=0)
    t = fit_temperature(mu, v, y)
    # the estimate is 2.5 · mean(χ²₁): relative sd sqrt(2/n) = 1 %, tolerance 5 %
    assert t == pytest.approx(2.5, rel=0.05)
    res = minimize_scalar(
        lambda s: gaussian_nll(mu, np.exp(s) * v, y), bounds=(-5, 5), method="bounded"
    )
    assert t == pytest.approx(np.exp(res.x), rel=1e-4)


def test_exact_gaussian_intervals_cover_at_nominal_rates():
    mu, v, y = _gaussian_sample(20_000, 1.0, seed=1)
    cov = interval_coverage(mu, v, y, levels=(0.5, 0.9))
    # binomial sd ≤ sqrt(0.25 / 20000) = 0.0035; tolerance 0.015 (> 4 sd)
    assert cov[0.5] == pytest.approx(0.5, abs=0.015)
    assert cov[0.9] == pytest.approx(0.9, abs=0.015)
    # an over-confident model (variance 4x too small) under-covers, and a temperature
    # fitted on separate validation data restores nominal coverage on the test data
    mu_v, v_v, y_v = _gaussian_sample(20_000, 4.0, seed=2)
    mu_t, v_t, y_t = _gaussian_sample(20_000, 4.0, seed=3)
    raw = interval_coverage(mu_t, v_t, y_t)
    assert raw[0.9] < 0.75  # exact value 2Φ(1.645/2) − 1 = 0.59
    assert raw[0.9] == pytest.approx(2 * norm.cdf(norm.ppf(0.95) / 2) - 1, abs=0.015)
    t = fit_temperature(mu_v, v_v, y_v)
    fixed = interval_coverage(mu_t, t * v_t, y_t)
    assert fixed[0.5] == pytest.approx(0.5, abs=0.02)
    assert fixed[0.9] == pytest.approx(0.9, abs=0.02)


def test_reliability_curve_is_diagonal_when_calibrated():
    mu, v, y = _gaussian_sample(20_000, 1.0, seed=4)
    curve = reliability_curve(mu, v, y)
    assert list(curve.columns) == ["nominal", "observed", "mean_width", "n"]
    np.testing.assert_allclose(curve["nominal"], np.arange(1, 20) / 20)
    np.testing.assert_allclose(curve["observed"], curve["nominal"], atol=0.02)
    assert np.all(np.diff(curve["observed"]) >= 0) and np.all(np.diff(curve["mean_width"]) > 0)


def test_variance_weights_recover_known_mixture():
    """Residuals ~ N(0, 2·b + 0.1·w): the fit gives τ ≈ 2 and τλ ≈ 0.1 (5 % tolerance
    at n = 40,000), and its likelihood beats λ = 1 (plain temperature)."""
    rng = np.random.default_rng(7)
    n = 40_000
    b, w = rng.uniform(0.001, 0.02, n), rng.uniform(0.001, 0.2, n)
    mu = rng.uniform(0, 1, n)
    y = mu + np.sqrt(2.0 * b + 0.1 * w) * rng.normal(size=n)
    t, lam = fit_variance_weights(mu, b, w, y)
    assert t == pytest.approx(2.0, rel=0.05)
    assert t * lam == pytest.approx(0.1, rel=0.05)
    t1 = fit_temperature(mu, b + w, y)
    assert gaussian_nll(mu, t * (b + lam * w), y) < gaussian_nll(mu, t1 * (b + w), y)
    # the members agree everywhere: only τλ is identified, λ = 1
    t0, lam0 = fit_variance_weights(mu, np.zeros(n), w, y)
    assert lam0 == 1.0 and t0 == pytest.approx(fit_temperature(mu, w, y))
    with pytest.raises(ValueError, match="non-negative"):
        fit_variance_weights(mu, -b, w, y)


def test_calibrate_fits_on_validation_data():
    data = tiny_set(256, F, K, seed=3)
    ens = EnsembleModel([_net(s) for s in range(3)], temperature=5.0)
    t = ens.calibrate(data.features, data.alpha_star)
    alpha, _, b, w = ens.variance_components(ens.predict_members(data.features))
    t_ref, lam_ref = fit_variance_weights(alpha, b, w, data.alpha_star)
    assert t == pytest.approx(t_ref, rel=1e-6)
    assert float(ens.temperature) == pytest.approx(t_ref, rel=1e-6)
    assert float(ens.within_weight) == pytest.approx(lam_ref, rel=1e-6)
    out = ens.predict(data.features)
    np.testing.assert_allclose(
        torch.exp(out.log_var.double()).numpy(),
        (t_ref * (b + lam_ref * w)).double().numpy(),
        rtol=1e-5,
    )
    # plain temperature (λ = 1) on request
    t1 = ens.calibrate(data.features, data.alpha_star, fit_within_weight=False)
    assert float(ens.within_weight) == 1.0
    assert t1 == pytest.approx(fit_temperature(alpha, b + w, data.alpha_star), rel=1e-6)


# ---------------------------------------------------------- conformal intervals
def _brute_force_conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Smallest calibration score s with #{s_i ≤ s} ≥ (m+1)ℓ, by exact rational
    arithmetic and a scan (inf if none): the split-conformal quantile by definition."""
    m = len(scores)
    need = (m + 1) * Fraction(str(level))
    for s in sorted(scores):
        if sum(1 for v in scores if v <= s) >= need:
            return float(s)
    return math.inf


@pytest.mark.parametrize("m", [1, 9, 19, 20, 101])
def test_conformal_quantile_matches_brute_force(m):
    rng = np.random.default_rng(m)
    scores = np.abs(rng.standard_t(3, size=m))
    for level in (0.05, 0.1, 0.5, 0.8, 0.9, 0.95):
        expected = _brute_force_conformal_quantile(list(scores), level)
        assert conformal_quantile(scores, level) == expected
    # with ties the definition still holds (counts include ties)
    tied = np.repeat(scores[: max(1, m // 3)], 3)[:m]
    assert conformal_quantile(tied, 0.5) == _brute_force_conformal_quantile(list(tied), 0.5)


@pytest.mark.parametrize("m", [19, 20])
def test_conformal_coverage_is_exact_in_expectation(m):
    """Exchangeable continuous scores: P(new ≤ s_(k)) = k/(m+1), k = ⌈(m+1)ℓ⌉ — exactly
    ℓ for m = 19 at ℓ = 0.5, 0.9 and 11/21, 19/21 for m = 20. Checked over R = 20,000
    independent calibration sets (one fresh point each): tolerance 3 binomial SE
    (≤ 0.011)."""
    R = 20_000
    rng = np.random.default_rng(100 + m)
    cal = np.abs(rng.standard_t(3, size=(R, m)))
    new = np.abs(rng.standard_t(3, size=R))
    for level in (0.5, 0.9):
        k = math.ceil((m + 1) * Fraction(str(level)))
        p = k / (m + 1)
        q = np.array([conformal_quantile(c, level) for c in cal])
        cover = float(np.mean(new <= q))
        assert cover == pytest.approx(p, abs=3 * math.sqrt(p * (1 - p) / R))
        assert p >= level and p <= level + 1 / (m + 1)


def _heavy_tailed_truth(ens, n: int, seed: int, df: float = 3.0):
    """Features and a truth α* = α + 0.3 σ t_df around the ensemble's own prediction:
    exchangeable samples whose standardised residuals are Student-t (heavier-tailed
    than Gaussian, so no single temperature gives 50 % and 90 % at once)."""
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.normal(size=(n, F)).astype(np.float32))
    out = ens.predict(x)
    sd = np.exp(0.5 * out.log_var.double().numpy())
    return x, out.alpha.double().numpy() + 0.3 * sd * rng.standard_t(df, size=n)


def _alpha_sd(ens, x) -> tuple[np.ndarray, np.ndarray]:
    out = ens.predict(x)
    return out.alpha.double().numpy(), np.exp(0.5 * out.log_var.double().numpy())


def _covered(ens, x, y, level, method):
    lo, hi = ens.interval(x, level, method=method)
    return float(np.mean((y >= lo.numpy()) & (y <= hi.numpy())))


def test_conformal_intervals_cover_heavy_tailed_truth_where_gaussian_fails():
    """Calibrated on one split (m = 20,000), tested on a fresh one (n = 20,000): the
    conformal intervals cover within 3 SE of 50 % and 90 % (SE² = ℓ(1−ℓ)(1/n + 1/m):
    tolerances 0.015 and 0.009), the temperature-only Gaussian ones miss by more
    (t₃: about 0.67 and 0.93 in theory)."""
    ens = EnsembleModel([_net(s) for s in range(3)])
    n = m = 20_000
    x_cal, y_cal = _heavy_tailed_truth(ens, m, seed=20)
    x_test, y_test = _heavy_tailed_truth(ens, n, seed=21)
    ens.calibrate(x_cal, y_cal)
    assert ens.has_conformal and ens.conformal_scores.numel() == m
    for level in (0.5, 0.9):
        tol = 3 * math.sqrt(level * (1 - level) * (1 / n + 1 / m))
        conformal = _covered(ens, x_test, y_test, level, "conformal")
        gaussian = _covered(ens, x_test, y_test, level, "gaussian")
        assert conformal == pytest.approx(level, abs=tol)
        assert abs(gaussian - level) > tol
        assert _covered(ens, x_test, y_test, level, "auto") == conformal
    # the same numbers through the array-level functions
    out = ens.predict(x_test)
    scores = ens.conformal_scores.numpy()
    cov = interval_coverage(out.alpha, out.log_var.exp(), y_test, (0.5, 0.9), scores=scores)
    assert cov[0.9] == pytest.approx(_covered(ens, x_test, y_test, 0.9, "conformal"), abs=1e-4)
    curve = reliability_curve(out.alpha, out.log_var.exp(), y_test, scores=scores)
    tol = 3 * np.sqrt(curve["nominal"] * (1 - curve["nominal"]) * (1 / n + 1 / m))
    assert np.all(np.abs(curve["observed"] - curve["nominal"]) <= tol)
    gauss_curve = reliability_curve(out.alpha, out.log_var.exp(), y_test)
    assert np.any(np.abs(gauss_curve["observed"] - gauss_curve["nominal"]) > tol)


def test_interval_is_alpha_plus_minus_sigma_times_score_and_round_trips(tmp_path):
    ens = EnsembleModel([_net(s) for s in range(2)], label="conf")
    x_cal, y_cal = _heavy_tailed_truth(ens, 199, seed=30)
    ens.calibrate(x_cal, y_cal)
    x = torch.as_tensor(tiny_set(50, F, K, seed=31).features)
    out = ens.predict(x)
    alpha, sd = out.alpha.double(), torch.exp(0.5 * out.log_var.double())
    a_cal, sd_cal = _alpha_sd(ens, x_cal)
    ref_scores = np.sort(np.abs(y_cal - a_cal) / sd_cal)
    np.testing.assert_allclose(ens.conformal_scores.numpy(), ref_scores, rtol=1e-12)
    for level in (0.5, 0.9):
        k = math.ceil(200 * Fraction(str(level)))  # m + 1 = 200
        lo, hi = ens.interval(x, level)
        torch.testing.assert_close(lo, alpha - sd * ref_scores[k - 1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hi, alpha + sd * ref_scores[k - 1], rtol=1e-12, atol=1e-12)
    # ⌈200 · 0.999⌉ = 200 > m: the whole line
    lo, hi = ens.interval(x, 0.999)
    assert bool(torch.isinf(lo).all() and torch.isinf(hi).all() and (lo < 0).all())
    # one file keeps the scores bit for bit, hence the intervals
    path = save_model(tmp_path / "conf.pt", ens, FNAMES, TNAMES)
    loaded = load_model(path)
    assert torch.equal(loaded.conformal_scores, ens.conformal_scores)
    assert loaded.conformal_scores.dtype == torch.float64
    for level in (0.5, 0.9):
        for u, v in zip(loaded.interval(x, level), ens.interval(x, level)):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    # a file written before conformal scores existed loads, with Gaussian intervals
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["conformal_scores"]
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert not old.has_conformal
    lo, hi = old.interval(x, 0.9)
    torch.testing.assert_close(hi, alpha + sd * norm.ppf(0.95), rtol=1e-12, atol=1e-12)
    for u, v in zip(old.predict(x), ens.predict(x)):
        assert torch.equal(u, v)


def test_conformal_scores_follow_the_variance_they_were_fitted_with():
    ens = EnsembleModel([_net(s) for s in range(2)])
    x_cal, y_cal = _heavy_tailed_truth(ens, 100, seed=40)
    t = ens.calibrate(x_cal, y_cal)
    assert ens.has_conformal
    ens.set_temperature(t)  # unchanged τ, λ: kept
    assert ens.has_conformal
    ens.set_temperature(2 * t)  # changed: the scores no longer apply
    assert not ens.has_conformal
    with pytest.raises(ValueError, match="calibrate"):
        ens.interval(x_cal, 0.9, method="conformal")
    ens.calibrate(x_cal, y_cal, conformal=False)
    assert not ens.has_conformal
    assert ens.interval_multiplier(0.9) == pytest.approx(norm.ppf(0.95))


def test_conformal_bad_inputs_raise():
    ens = EnsembleModel([_net(0)])
    with pytest.raises(ValueError, match="levels"):
        ens.interval(np.zeros((2, F)), 1.0)
    with pytest.raises(ValueError, match="method"):
        ens.interval(np.zeros((2, F)), 0.9, method="bootstrap")
    with pytest.raises(ValueError, match="non-negative"):
        ens.set_conformal_scores([0.1, -0.2])
    with pytest.raises(ValueError, match="non-negative"):
        conformal_quantile([0.1, -0.2], 0.5)
    with pytest.raises(ValueError, match="empty"):
        conformal_quantile([], 0.5)
    with pytest.raises(ValueError, match="entries"):
        ens.calibrate(np.zeros((3, F)), [0.1, 0.2])
    with pytest.raises(ValueError, match="same length"):
        conformal_scores([0.1, 0.2], [1.0, 1.0], [0.3])


def test_coverage_gate():
    # n = 400: SE at 0.5 is 0.025, at 0.9 0.015; 3 SE = 0.075 and 0.045
    assert coverage_within_tolerance({0.5: 0.57, 0.9: 0.86}, 400)
    assert not coverage_within_tolerance({0.5: 0.58, 0.9: 0.9}, 400)
    assert not coverage_within_tolerance({0.5: 0.5, 0.9: 0.85}, 400)
    # the calibration draw widens the tolerance: √(1/400 + 1/400) · 0.5 · 3 = 0.106
    assert coverage_within_tolerance({0.5: 0.6, 0.9: 0.9}, 400, n_calibration=400)
    # one-sided: over-coverage passes, under-coverage still fails
    assert coverage_within_tolerance({0.5: 0.7, 0.9: 0.99}, 400, one_sided=True)
    assert not coverage_within_tolerance({0.5: 0.42, 0.9: 0.9}, 400, one_sided=True)
    with pytest.raises(ValueError, match="n_se"):
        coverage_within_tolerance({0.5: 0.5}, 400, n_se=0.0)
    with pytest.raises(ValueError, match=">= 1"):
        coverage_within_tolerance({0.5: 0.5}, 0)


def _mean_conformal_width(ens, data, level):
    alpha, sd = _alpha_sd(ens, data.features)
    return float(np.mean(2 * conformal_quantile(ens.conformal_scores.numpy(), level) * sd))


def test_select_ensemble_gates_on_calibration_then_prial_then_sharpness():
    """Independent references: PRIAL by prial_of, widths by hand. "same_mean" has the
    intensities of "a" (exactly tied PRIAL) but another variance shape (λ); "broken"
    also has a's intensities, with scores shrunk 3-fold (under-covers)."""
    cal, data = tiny_set(400, F, K, seed=60), tiny_set(400, F, K, seed=61)
    models = {
        "a": EnsembleModel([_net(0), _net(1)]),
        "b": EnsembleModel([_net(2), _net(3)]),
        "same_mean": EnsembleModel([_net(0), _net(1)]),
        "broken": EnsembleModel([_net(0), _net(1)]),
    }
    for name, m in models.items():
        m.calibrate(cal.features, cal.alpha_star, fit_within_weight=name != "same_mean")
    models["broken"].set_conformal_scores(models["broken"].conformal_scores / 3)
    prial = {k: prial_of(m.predict(data.features).intensities, data) for k, m in models.items()}
    assert prial["a"] == prial["same_mean"] == prial["broken"] != prial["b"]
    width = {k: _mean_conformal_width(m, data, 0.9) for k, m in models.items()}
    assert width["a"] != width["same_mean"]

    # tie_se = 0: only exact ties to the best calibrated PRIAL, the narrowest of them
    chosen, table = select_ensemble(models, data, tie_se=0.0)
    assert not table.loc["broken", "calibrated"]
    assert table.loc[["a", "b", "same_mean"], "calibrated"].all()
    assert prial["a"] > prial["b"]  # so a and same_mean are tied, b is not
    assert chosen == min(["a", "same_mean"], key=width.get)
    # float32 network intensities, formed in float32 here and in float64 by the table
    np.testing.assert_allclose(table["prial"], [prial[k] for k in table.index], rtol=1e-6)
    assert table.loc[chosen, "chosen"] and table["chosen"].sum() == 1
    # the tied set is an upper set of PRIAL among the calibrated models
    ok = table[table["calibrated"]]
    assert ok["tied"].any()
    untied = ok.loc[~ok["tied"], "prial"]
    assert list(untied.index) == ["b"] and ok.loc[ok["tied"], "prial"].min() > untied.max()
    # every calibrated model tied: the narrowest calibrated interval wins
    chosen, table = select_ensemble(models, data, tie_se=1e9)
    assert chosen == min(["a", "b", "same_mean"], key=width.get)
    assert not table.loc["broken", "tied"]
    # over-covering (scores 3x too large) passes the default one-sided gate only
    wide = copy.deepcopy(models["a"])
    wide.set_conformal_scores(wide.conformal_scores * 3)
    assert select_ensemble({"wide": wide}, data)[1].loc["wide", "calibrated"]
    assert not select_ensemble({"wide": wide}, data, one_sided=False)[1].loc["wide", "calibrated"]
    # nothing calibrated: fall back to all models
    chosen, table = select_ensemble({"broken": models["broken"]}, data)
    assert chosen == "broken" and not table.loc["broken", "calibrated"]
    with pytest.raises(ValueError, match="empty"):
        select_ensemble({}, data)
    with pytest.raises(ValueError, match="tie_se"):
        select_ensemble(models, data, tie_se=-1.0)


def test_coverage_table_and_curves_agree_with_the_array_functions():
    data = tiny_set(300, F, K, seed=50)
    cal = tiny_set(200, F, K, seed=51)
    calibrated = EnsembleModel([_net(s) for s in range(2)])
    calibrated.calibrate(cal.features, cal.alpha_star)
    plain = EnsembleModel([_net(3)], temperature=2.0)
    models = {"cal": calibrated, "plain": plain}
    table = coverage_table(models, data, levels=(0.5, 0.9))
    assert list(table.index) == ["cal", "plain"]
    out = calibrated.predict(data.features)
    mu, var = out.alpha.double(), out.log_var.double().exp()
    scores = calibrated.conformal_scores.numpy()
    gauss = interval_coverage(mu, var, data.alpha_star)
    conf = interval_coverage(mu, var, data.alpha_star, scores=scores)
    row = table.loc["cal"]
    assert row["gaussian_50"] == gauss[0.5] and row["gaussian_90"] == gauss[0.9]
    assert row["conformal_50"] == conf[0.5] and row["conformal_90"] == conf[0.9]
    sd = np.sqrt(var.numpy())
    q90 = conformal_quantile(scores, 0.9)
    assert row["width_90_conformal"] == pytest.approx(np.mean(2 * q90 * sd), rel=1e-12)
    assert row["width_90_gaussian"] == pytest.approx(np.mean(2 * norm.ppf(0.95) * sd), rel=1e-12)
    assert row["nll"] == pytest.approx(gaussian_nll(mu, var, data.alpha_star), rel=1e-12)
    assert row["n_calibration"] == 200 and row["n"] == 300
    # no scores: the conformal columns are NaN, the Gaussian ones are filled
    assert np.isnan(table.loc["plain", "conformal_90"]) and table.loc["plain", "n_calibration"] == 0
    assert table.loc["plain", "temperature"] == 2.0 and 0 <= table.loc["plain", "gaussian_90"] <= 1
    curves = reliability_curves(models, data)
    assert list(curves) == ["cal (conformal)", "cal (gaussian)", "plain (gaussian)"]
    ref = reliability_curve(mu, var, data.alpha_star, scores=scores)
    pd.testing.assert_frame_equal(curves["cal (conformal)"], ref)
    with pytest.raises(ValueError, match="methods"):
        reliability_curves(models, data, methods=("bootstrap",))


# ----------------------------------------------------------------------- PRIAL
def test_prial_from_quadratic_form_matches_matrices():
    """PRIAL via wᵀGw − 2cᵀw + d equals PRIAL from the shrunk matrices themselves."""
    from shrinklab.core.estimators import fsopt
    from shrinklab.core.metrics import frobenius_loss, prial
    from shrinklab.core.targets import combine, quadratic_form, shrinkage_targets

    g = torch.Generator().manual_seed(0)
    B, n, p = 6, 30, 6
    L = torch.randn(B, p, p, generator=g, dtype=torch.float64)
    sigma = L @ L.transpose(1, 2) / p + torch.eye(p, dtype=torch.float64)
    X = torch.randn(B, n, p, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(
        sigma
    ).transpose(1, 2)
    T = shrinkage_targets(X)
    Xc = X - X.mean(1, keepdim=True)
    S = Xc.transpose(1, 2) @ Xc / (n - 1)
    G, c, d = quadratic_form(S, T, sigma)
    w = torch.rand(B, K, generator=g, dtype=torch.float64) / K
    loss_fs = frobenius_loss(fsopt(X, sigma), sigma)
    data = {"G": G, "c": c, "d": d, "loss_fsopt": loss_fs}
    direct = prial(frobenius_loss(combine(S, T, w), sigma), frobenius_loss(S, sigma), loss_fs)
    assert prial_of(w, data) == pytest.approx(direct, rel=1e-8, abs=1e-8)


def test_normalised_prial_is_a_per_world_mean_and_scale_invariant():
    """normalised_prial_of against a numpy brute force of 100·mean(1 − L/d)/mean(1 − L_fs/d),
    unchanged when one world's losses are rescaled (prial_of is not), and equal to
    prial_of when every world has the same d."""
    rng = np.random.default_rng(3)
    N = 40
    A = rng.normal(size=(N, K, K))
    G = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(K)
    c = rng.normal(size=(N, K))
    w = rng.uniform(0, 1 / K, size=(N, K))
    # d large enough that every loss is positive, FSOPT below the sample's
    d = np.einsum("nk,nkl,nl->n", c, np.linalg.inv(G), c) + rng.uniform(0.5, 2.0, N)
    fs = d * rng.uniform(0.2, 0.8, N)
    loss = np.einsum("nk,nkl,nl->n", w, G, w) - 2 * (c * w).sum(1) + d
    brute = 100 * (1 - loss / d).mean() / (1 - fs / d).mean()
    data = {"G": G, "c": c, "d": d, "loss_fsopt": fs}
    assert normalised_prial_of(w, data) == pytest.approx(brute, rel=1e-10)
    scale = np.ones(N)
    scale[0] = 1e3  # one world on a 30x larger scale of Σ (losses scale by 1000)
    big = {"G": G * scale[:, None, None], "c": c * scale[:, None], "d": d * scale,
           "loss_fsopt": fs * scale}  # fmt: skip
    assert normalised_prial_of(w, big) == pytest.approx(brute, rel=1e-10)
    assert abs(prial_of(w, big) - prial_of(w, data)) > 1.0
    same_d = {**data, "G": G / d[:, None, None], "c": c / d[:, None], "d": np.ones(N),
              "loss_fsopt": fs / d}  # fmt: skip
    assert normalised_prial_of(w, same_d) == pytest.approx(prial_of(w, same_d), rel=1e-10)
    with pytest.raises(ValueError, match="positive sample loss"):
        normalised_prial_of(w, {**data, "d": np.zeros(N)})


def test_prial_table_lists_members_ensemble_and_oracle():
    data = tiny_set(128, F, K, seed=4)
    ens = EnsembleModel([_net(s) for s in range(2)])
    table = prial_table({"ens": ens}, data, extra_intensities={"zero": np.zeros((128, K))})
    assert list(table["model"]) == ["ens[0]", "ens[1]", "ens", "zero", "oracle"]
    row = table.set_index("model")
    assert row.loc["zero", "prial"] == pytest.approx(0.0, abs=1e-9)  # w = 0 is S
    assert row.loc["zero", "mean_norm_loss"] == pytest.approx(1.0)
    assert row.loc["oracle", "prial"] == pytest.approx(prial_of(data.oracle_w, data))
    # the oracle minimises the loss of every sample: no model beats it
    assert row.loc["oracle", "prial"] >= row["prial"].max() - 1e-9


# -------------------------------------------------------------------- builders
def _cfg(**kw):
    from shrinklab.training.config import TrainConfig

    base = dict(epochs=3, batch_size=64, lr=3e-3, device="cpu", amp=None, patience=100)
    base.update(kw)
    return TrainConfig(**base)


MC = {"hidden_dims": (16, 8)}


@pytest.fixture(scope="module")
def sets():
    return tiny_set(192, F, K, seed=10), tiny_set(128, F, K, seed=11)


def test_multi_seed_members_are_seeded_runs_of_the_trainer(tmp_path, sets):
    from shrinklab.training.loop import train

    tr, va = sets
    ens = train_multi_seed(tr, va, tmp_path / "ms", seeds=[3, 4], model_config=MC, config=_cfg())
    assert len(ens.members) == 2 and ens.label == "multi_seed"
    # member 0 is exactly what the trainer gives for seed 3 (deterministic on CPU)
    torch.manual_seed(3)
    ref = MLShrinkageNetwork(F, K, **MC)
    train(ref, tr, va, _cfg(seed=3), tmp_path / "ref", resume=False)
    for u, v in zip(ens.members[0].predict(va.features), ref.predict(va.features)):
        assert torch.equal(u, v)
    # different seeds give different members, and averaging beats the mean member (Jensen)
    a0, a1 = (m.predict(va.features).alpha for m in ens.members)
    assert not torch.allclose(a0, a1)
    table = prial_table({"ens": ens}, va).set_index("model")
    assert table.loc["ens", "prial"] >= table.loc[["ens[0]", "ens[1]"], "prial"].mean() - 1e-9


@pytest.mark.parametrize("method", ["swa", "ema"])
def test_checkpoint_average_matches_epoch_snapshots(tmp_path, sets, method):
    """SWA = mean of the per-epoch weights, EMA = its recursion; BN stats recomputed."""
    from shrinklab.training.loop import train

    tr, va = sets
    cfg = _cfg(epochs=4)
    ens = train_checkpoint_average(
        tr,
        va,
        tmp_path / "avg",
        model_config=MC,
        config=cfg,
        seed=1,
        start_epoch=1,
        method=method,
        ema_decay=0.6,
        bn_batch_size=64,
        calibration_set=va if method == "ema" else None,
    )
    assert ens.label == "checkpoint_average" and len(ens.members) == 1
    assert (float(ens.temperature) != 1.0) == (method == "ema")
    net = ens.members[0]
    assert ens.history["averaged_epochs"] == [1, 2, 3]
    # independent replay of the same (deterministic) run, snapshotting every epoch
    torch.manual_seed(1)
    ref = MLShrinkageNetwork(F, K, **MC)
    snaps = []
    train(
        ref,
        tr,
        va,
        _cfg(epochs=4, seed=1, patience=5),
        tmp_path / "replay",
        resume=False,
        on_epoch_end=lambda e, r: snaps.append(copy.deepcopy(dict(ref.named_parameters()))),
    )
    for name, p in net.named_parameters():
        seq = [s[name].detach() for s in snaps[1:]]
        if method == "swa":
            expected = torch.stack(seq).mean(0)
        else:
            expected = seq[0]
            for q in seq[1:]:
                expected = 0.6 * expected + 0.4 * q
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=1e-5)
    # update_bn with equal batches: the input BN mean is the feature mean
    torch.testing.assert_close(
        net.input_norm.running_mean, torch.as_tensor(tr.features).mean(0), atol=1e-5, rtol=1e-5
    )


def test_architecture_ensemble_has_distinct_architectures_and_round_trips(tmp_path, sets):
    tr, va = sets
    archs = [{"hidden_dims": (16, 8)}, {"hidden_dims": (24,), "residual": False}]
    ens = train_architecture_ensemble(
        tr, va, tmp_path / "arch", architectures=archs, config=_cfg(epochs=2), calibration_set=va
    )
    assert [m.config["hidden_dims"] for m in ens.members] == [[16, 8], [24]]
    assert float(ens.temperature) != 1.0
    loaded = load_model(save_model(tmp_path / "a.pt", ens, FNAMES, TNAMES))
    for u, v in zip(loaded.predict(va.features), ens.predict(va.features)):
        assert torch.equal(u, v)
    assert ens.has_conformal and torch.equal(loaded.conformal_scores, ens.conformal_scores)
    with pytest.raises(ValueError, match="at least two"):
        train_architecture_ensemble(tr, va, tmp_path / "x", architectures=archs[:1])


def test_boosting_probabilities_follow_the_regret(sets):
    tr, _ = sets
    net = _net(0)
    p = boosting_probabilities(net, tr, emphasis="regret", uniform_mix=0.2)
    w = net.predict(tr.features).intensities
    regret = (
        quadratic_loss(w, tr.G, tr.c, tr.d) - quadratic_loss(tr.oracle_w, tr.G, tr.c, tr.d)
    ).numpy() / tr.d
    expected = 0.8 * regret / regret.sum() + 0.2 / len(regret)
    np.testing.assert_allclose(p, expected, rtol=1e-6)  # float32 network outputs
    assert p.sum() == pytest.approx(1.0)
    p_loss = boosting_probabilities(net, tr, emphasis="loss", uniform_mix=0.0)
    loss = quadratic_loss(w, tr.G, tr.c, tr.d).numpy() / tr.d
    np.testing.assert_allclose(p_loss, loss / loss.sum(), rtol=1e-6)


def test_boosted_ensemble_trains_later_members_on_hard_cases(tmp_path, sets):
    tr, va = sets
    ens = train_boosted(tr, va, tmp_path / "b", n_members=2, model_config=MC, config=_cfg())
    assert len(ens.members) == 2 and ens.label == "boosted"
    sub = take(tr, [0, 5, 5])
    assert sub.features.shape == (3, F) and np.array_equal(sub.features[2], tr.features[5])
    assert sub.G.shape == (3, K, K)
