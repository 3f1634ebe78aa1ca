"""shrinklab.core.tail_pretest: the kurtosis pre-test of decision 0073.

References: the normal-theory mean and variance of the sample kurtosis against a Monte
Carlo of normal samples (the formulas' own check), and the statistic from the features
against one computed here from the returns with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.core.tail_pretest import (
    gaussian_rows,
    kurtosis_se,
    kurtosis_z,
    kurtosis_z_of_features,
)


def _b2_minus_3(X: np.ndarray) -> np.ndarray:
    """Per column, ``m4 / m2² − 3`` (central moments, divisor n)."""
    Xc = X - X.mean(axis=0)
    return (Xc**4).mean(axis=0) / (Xc**2).mean(axis=0) ** 2 - 3.0


@pytest.mark.parametrize("n", [12, 40, 200])
def test_z_is_standard_under_independent_normal_returns(n):
    """Mean 0 and SD 1 over 20,000 normal samples of one asset (tolerance: 4 Monte Carlo
    SEs of each moment; the SE of the SD from the sample kurtosis of z)."""
    rng = np.random.default_rng(n)
    k = _b2_minus_3(rng.standard_normal((n, 20_000)))
    z = kurtosis_z(k, n, 1)
    m, sd = z.mean(), z.std(ddof=1)
    assert abs(m) < 4 * sd / np.sqrt(z.size)
    se_sd = sd * np.sqrt((np.mean((z - m) ** 4) / sd**4 - 1) / (4 * z.size))
    assert abs(sd - 1.0) < 4 * se_sd


def test_mean_over_assets_scales_by_root_p():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5_000, 60, 25))
    k = np.array([_b2_minus_3(x).mean() for x in X])
    z = kurtosis_z(k, 60, 25)
    assert abs(z.mean()) < 0.06 and abs(z.std() - 1.0) < 0.04  # 5,000 draws: SEs 0.014, 0.02


def test_features_give_the_statistic_of_the_returns_and_heavy_tails_score_high():
    rng = np.random.default_rng(7)
    gauss = rng.standard_normal((60, 20))
    heavy = rng.standard_t(4, size=(60, 20))
    F = torch.cat([extract_features(gauss), extract_features(heavy)]).double()
    z = kurtosis_z_of_features(F)
    ref = kurtosis_z(np.array([_b2_minus_3(gauss).mean(), _b2_minus_3(heavy).mean()]), 60, 20)
    np.testing.assert_allclose(z, ref, rtol=1e-9, atol=1e-9)
    assert z[1] > 3.0 > z[0]
    np.testing.assert_array_equal(gaussian_rows(F, 2.0, 1.0), z <= 2.0)
    np.testing.assert_array_equal(gaussian_rows(F.numpy(), 1e9, 1.0), [True, True])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        kurtosis_z(np.nan, 60, 10)
    with pytest.raises(ValueError, match="n >= 4"):
        kurtosis_z(0.0, 3, 10)
    with pytest.raises(ValueError, match="p >= 1"):
        kurtosis_z(0.0, 60, 0)
    with pytest.raises(ValueError, match="features must be"):
        kurtosis_z_of_features(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="z_max"):
        gaussian_rows(np.zeros((1, len(FEATURE_NAMES))), float("nan"), 1.0)


def test_the_power_condition_leaves_small_windows_alone():
    """A Gaussian window of 20 assets over 60 days passes the z test but not the SE
    bound; the same at 200 assets over 400 days passes both."""
    rng = np.random.default_rng(11)
    small, large = rng.standard_normal((60, 20)), rng.standard_normal((400, 200))
    assert kurtosis_se(60, 20) > 0.1 > 0.02 > kurtosis_se(400, 200)
    F = [extract_features(x).double() for x in (small, large)]
    assert gaussian_rows(F[0], 3.0, 1.0)[0] and not gaussian_rows(F[0], 3.0, 0.05)[0]
    assert gaussian_rows(F[1], 3.0, 0.05)[0]
    with pytest.raises(ValueError, match="se_max"):
        gaussian_rows(F[1], 2.0, 0.0)


def test_windows_too_short_for_a_kurtosis_are_never_gaussian():
    """n = 2 and 3 are valid fits (``as_returns`` asks for n ≥ 2) but have no kurtosis
    test: not picked, and no error."""
    rng = np.random.default_rng(12)
    F = torch.cat([extract_features(rng.standard_normal((n, 400))) for n in (2, 3, 400)])
    got = gaussian_rows(F.double(), 1e9, 1e9)
    np.testing.assert_array_equal(got, [False, False, True])
