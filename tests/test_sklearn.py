"""MLShrinkageCovariance (scikit-learn) and MLShrinkageCovarianceSkfolio.

References are independent of the code under test: scikit-learn's
``EmpiricalCovariance`` (α = 0), closed forms written here in numpy for the
targets (scaled identity, diagonal, Ledoit–Wolf's covCor and covMarket targets),
skfolio's own estimators inside ``MeanRisk``, and the model's own ``predict``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _forced_model import forced_network, random_network, save
from scipy import linalg
from sklearn.base import clone
from sklearn.covariance import EmpiricalCovariance
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from shrinklab.core import estimators
from shrinklab.core.features import FEATURE_NAMES, FEATURE_SCHEMA, extract_features
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.models import bundled
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.models.registry import save_model
from shrinklab.sklearn import MLShrinkageCovariance, MLShrinkageCovarianceSkfolio

RTOL = 1e-10  # float64 end to end; the references differ only by summation order
LOG_VAR = math.log(0.01)  # predicted variance 0.01 of the forced models

# --------------------------------------------------------------------- the check-suite model
# parametrize_with_checks needs the estimator at collection time, the model file only
# when the checks run: the path is fixed here, the file is written by a module fixture.
# The path is the same in every process (pytest-xdist workers must collect the same test
# ids, and the id holds the path); each worker writes the same bytes (a seeded network)
# through an atomic rename, and the file is left in place for a worker still using it.
_CHECK_MODEL = str(Path(tempfile.gettempdir()) / "shrinklab-sklearn-checks" / "tiny.pt")


@pytest.fixture(scope="module", autouse=True)
def _check_model_file():
    target = Path(_CHECK_MODEL)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".pt")
    os.close(fd)
    save(random_network(seed=3), tmp)
    os.replace(tmp, target)


# Every check passes (for both variants); check_array_api_input skips itself (SkipTest) unless the
# environment sets SCIPY_ARRAY_API (the estimator computes in torch from numpy input,
# array-API input is not a goal).  No check is expected to fail.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [MLShrinkageCovariance(model_path=_CHECK_MODEL), MLShrinkageCovarianceSkfolio(_CHECK_MODEL)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------- helpers
def _returns(n: int = 60, p: int = 8, seed: int = 0, df: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(p, p)) / math.sqrt(p) + np.eye(p)
    z = rng.standard_t(df, size=(n, p)) if df else rng.normal(size=(n, p))
    return 0.01 * z @ L.T + 0.001


def _np_targets(X: np.ndarray) -> dict[str, np.ndarray]:
    """Targets written out in numpy (Ledoit & Wolf's covCor / covMarket definitions)."""
    n, p = X.shape
    Xc = X - X.mean(0)
    S = Xc.T @ Xc / n
    var = np.diag(S)
    sd = np.sqrt(var)
    R = S / np.outer(sd, sd)
    rbar = (R.sum() - p) / (p * (p - 1))
    cc = rbar * np.outer(sd, sd)
    np.fill_diagonal(cc, var)
    m = Xc.mean(1)
    covm = Xc.T @ m / n
    sf = np.outer(covm, covm) / (m @ m / n)
    np.fill_diagonal(sf, var)
    return {
        "sample": S,
        "identity": np.trace(S) / p * np.eye(p),
        "diagonal": np.diag(var),
        "constant_correlation": cc,
        "single_factor": sf,
        "qis": estimators.qis(X).numpy(),  # tested against the authors' code in test_estimators
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _model(model_dir: Path, name: str, alpha: float, weights=None, log_var=LOG_VAR) -> str:
    return save(forced_network(alpha, weights, log_var), model_dir / f"{name}.pt")


def _onehot(target: str) -> list[float]:
    return [1.0 if k == target else 0.0 for k in TARGET_NAMES]


# --------------------------------------------------------------------- the estimate
def test_alpha_zero_is_the_empirical_covariance(model_dir):
    X = _returns()
    est = MLShrinkageCovariance.from_pretrained(_model(model_dir, "a0", 0.0)).fit(X)
    ref = EmpiricalCovariance().fit(X)
    np.testing.assert_allclose(est.covariance_, ref.covariance_, rtol=RTOL, atol=0)
    np.testing.assert_allclose(est.location_, ref.location_, rtol=RTOL)
    np.testing.assert_allclose(est.precision_, ref.precision_, rtol=1e-8)
    X_test = _returns(seed=1)
    # the score (about -1.5e5 here) amplifies the round-off of pinvh: 1e-9
    assert est.score(X_test) == pytest.approx(ref.score(X_test), rel=1e-9)
    np.testing.assert_allclose(est.mahalanobis(X_test), ref.mahalanobis(X_test), rtol=1e-8)
    assert est.shrinkage_ == 0.0
    assert est.n_features_in_ == X.shape[1]


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_alpha_one_on_one_target_is_that_target(model_dir, target):
    X = _returns(n=40, p=12, seed=2, df=5)
    est = MLShrinkageCovariance(_model(model_dir, f"one_{target}", 1.0, _onehot(target))).fit(X)
    ref = _np_targets(X)[target]
    np.testing.assert_allclose(est.covariance_, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    assert est.shrinkage_ == 1.0
    assert est.target_weights_ == {k: (1.0 if k == target else 0.0) for k in TARGET_NAMES}


def test_general_mix_matches_numpy_formula(model_dir):
    alpha, pi = 0.37, np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    X = _returns(n=50, p=10, seed=4)
    path = _model(model_dir, "mix", alpha, pi, log_var=math.log(0.0025))
    est = MLShrinkageCovariance.from_pretrained(path).fit(X)
    # the forced heads output their float32 biases; the estimator's forward is float64
    a32 = float(
        torch.sigmoid(torch.tensor(math.log(alpha / (1 - alpha)), dtype=torch.float32).double())
    )
    pi32 = torch.softmax(torch.tensor(np.log(pi), dtype=torch.float32).double(), 0).numpy()
    T = _np_targets(X)
    S = T["sample"]
    ref = S + sum(a32 * w * (T[k] - S) for k, w in zip(TARGET_NAMES, pi32))
    np.testing.assert_allclose(est.covariance_, ref, rtol=1e-9)
    assert est.shrinkage_ == pytest.approx(alpha, abs=1e-6)
    assert list(est.target_weights_) == list(TARGET_NAMES)
    np.testing.assert_allclose(list(est.target_weights_.values()), pi, atol=1e-6)
    np.testing.assert_allclose(est.intensities_, alpha * pi, atol=1e-6)
    assert est.uncertainty_ == pytest.approx(0.05, rel=1e-6)  # sqrt(exp(log 0.0025))
    np.testing.assert_allclose(est.features_, extract_features(X)[0].numpy(), rtol=1e-12)


def test_responsive_model_uses_its_own_prediction(model_dir):
    net = random_network(seed=7)
    path = save(net, model_dir / "random.pt")
    X = _returns(n=80, p=15, seed=5)
    est = MLShrinkageCovariance.from_pretrained(path).fit(X)
    out = net.predict(extract_features(X))
    # the estimator's forward is float64 NumPy, the torch network float32 (a few float32
    # roundings per layer: 1e-6)
    assert est.shrinkage_ == pytest.approx(float(out.alpha[0]), abs=1e-6)
    np.testing.assert_allclose(
        list(est.target_weights_.values()), out.weights[0].numpy(), atol=1e-6
    )
    assert est.uncertainty_ == pytest.approx(math.exp(0.5 * float(out.log_var[0])), rel=1e-6)
    T = _np_targets(X)
    S = T["sample"]
    w = (out.alpha[:, None] * out.weights)[0].double().numpy()
    ref = S + sum(wk * (T[k] - S) for k, wk in zip(TARGET_NAMES, w))
    np.testing.assert_allclose(est.covariance_, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_dataframe_input_sets_feature_names(model_dir):
    X = _returns(p=5)
    df = pd.DataFrame(X, columns=[f"asset{i}" for i in range(5)])
    path = _model(model_dir, "mix_df", 0.5)
    a = MLShrinkageCovariance(path).fit(df)
    b = MLShrinkageCovariance(path).fit(X)
    np.testing.assert_array_equal(a.feature_names_in_, df.columns.to_numpy())
    assert not hasattr(b, "feature_names_in_")
    np.testing.assert_allclose(a.covariance_, b.covariance_, rtol=1e-12)  # memory layout only


def test_assume_centered(model_dir):
    X = _returns(seed=6) + 0.05
    a0 = MLShrinkageCovariance(_model(model_dir, "a0c", 0.0), assume_centered=True).fit(X)
    ref = EmpiricalCovariance(assume_centered=True).fit(X)
    np.testing.assert_allclose(a0.covariance_, ref.covariance_, rtol=RTOL)
    np.testing.assert_array_equal(a0.location_, np.zeros(X.shape[1]))
    assert a0.score(X) == pytest.approx(ref.score(X), rel=1e-10)
    ident = _model(model_dir, "id_c", 1.0, _onehot("identity"))
    a1 = MLShrinkageCovariance(ident, assume_centered=True).fit(X)
    S0 = X.T @ X / X.shape[0]
    np.testing.assert_allclose(
        a1.covariance_, np.trace(S0) / X.shape[1] * np.eye(X.shape[1]), rtol=RTOL
    )


def test_devolatilise_estimates_on_unit_variances_and_scales_back(model_dir):
    """``devolatilise=True``: with the identity target alone (α = 1) the scaled returns'
    estimate is the identity (unit variances, divisor n as ``S``), so the covariance is
    the diagonal of the sample variances (of the mean squares with ``assume_centered``),
    where the plain estimate is the mean variance times the identity. A responsive model's estimate is
    equivariant to rescaling single assets; constant columns keep zero variance; the
    default is unchanged; ``fit_rolling`` gives ``fit``'s estimate of each window."""
    X = _returns(seed=9) * np.linspace(0.2, 3.0, 8)
    ident = _model(model_dir, "id_dv", 1.0, _onehot("identity"))
    est = MLShrinkageCovariance(ident, devolatilise=True).fit(X)
    np.testing.assert_allclose(est.covariance_, np.diag(X.var(axis=0)), rtol=RTOL)
    np.testing.assert_allclose(est.location_, X.mean(axis=0), rtol=RTOL)
    plain = MLShrinkageCovariance(ident).fit(X).covariance_
    np.testing.assert_allclose(plain, X.var(axis=0).mean() * np.eye(8), rtol=RTOL)
    centred = MLShrinkageCovariance(ident, assume_centered=True, devolatilise=True).fit(X)
    np.testing.assert_allclose(centred.covariance_, np.diag((X * X).mean(axis=0)), rtol=RTOL)
    responsive = save(random_network(seed=7), model_dir / "random_dv.pt")
    c = np.linspace(0.1, 5.0, 8)
    a = MLShrinkageCovariance(responsive, devolatilise=True).fit(X).covariance_
    b = MLShrinkageCovariance(responsive, devolatilise=True).fit(X * c).covariance_
    np.testing.assert_allclose(b, c[:, None] * a * c[None, :], rtol=1e-8)
    Xc = X.copy()
    Xc[:, 2] = 0.01
    C = MLShrinkageCovariance(responsive, devolatilise=True).fit(Xc).covariance_
    assert np.all(C[2] == 0) and np.all(np.isfinite(C))
    rolled = MLShrinkageCovariance(responsive, devolatilise=True).fit_rolling(X, 40, step=7)
    for k, t in enumerate(range(40, len(X) + 1, 7)):
        one = MLShrinkageCovariance(responsive, devolatilise=True).fit(X[t - 40 : t])
        np.testing.assert_allclose(rolled.covariances[k], one.covariance_, rtol=1e-8, atol=0)
    with pytest.raises(ValueError, match="must be a bool"):
        MLShrinkageCovariance(ident, devolatilise="yes").fit_rolling(X, window=40)
    skf = MLShrinkageCovarianceSkfolio(ident, devolatilise=True, nearest=False).fit(X)
    np.testing.assert_allclose(skf.covariance_, est.covariance_, rtol=RTOL)


def test_constant_column_and_p_greater_than_n(model_dir):
    X = _returns(n=12, p=30, seed=8)
    X[:, 4] = 0.02  # a stale price: zero returns variance
    path = _model(model_dir, "mix_const", 0.6)
    est = MLShrinkageCovariance(path).fit(X)
    C = est.covariance_
    assert np.all(np.isfinite(C))
    assert np.all(C[4] == 0) and np.all(C[:, 4] == 0)
    np.testing.assert_allclose(C, C.T, rtol=0, atol=0)
    keep = np.delete(np.arange(30), 4)
    assert np.linalg.eigvalsh(C[np.ix_(keep, keep)]).min() > 0  # shrinkage cures p > n
    np.testing.assert_allclose(est.precision_, linalg.pinvh(C), rtol=1e-8, atol=1e-8)
    assert est.location_[4] == pytest.approx(0.02)


# --------------------------------------------------------------------- errors, params
def test_bad_input_gives_clear_errors(model_dir, monkeypatch):
    est = MLShrinkageCovariance(_model(model_dir, "a0e", 0.0))
    X = _returns()
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(X_nan)
    with pytest.raises(ValueError, match="2D array"):
        est.fit(X[:, 0])
    with pytest.raises(ValueError, match="minimum of 2"):
        est.fit(X[:1])
    monkeypatch.setattr(bundled, "bundled_dir", lambda: model_dir / "no-weights")
    with pytest.raises(ValueError, match="no bundled model 'final'"):
        MLShrinkageCovariance().fit(X)
    with pytest.raises(ValueError, match="no model file"):
        MLShrinkageCovariance(str(model_dir / "missing.pt")).fit(X)
    with pytest.raises(ValueError, match="no model file"):
        MLShrinkageCovariance.from_pretrained(model_dir / "missing.pt")
    with pytest.raises(ValueError, match="CUDA is not available|not a valid torch device"):
        if torch.cuda.is_available():
            MLShrinkageCovariance(est.model_path, device="nodevice").fit(X)
        else:
            MLShrinkageCovariance(est.model_path, device="cuda").fit(X)
    est.fit(X)
    with pytest.raises(ValueError, match="features"):
        est.score(X[:, :3])


def test_foreign_feature_schema_is_refused(model_dir):
    names = [f"other_{i}" for i in range(len(FEATURE_NAMES))]
    path = model_dir / "foreign.pt"
    save_model(path, random_network(), names, TARGET_NAMES)
    with pytest.raises(ValueError) as err:
        MLShrinkageCovariance.from_pretrained(path)
    msg = str(err.value)
    assert FEATURE_SCHEMA in msg and "custom-" in msg
    with pytest.raises(ValueError, match=FEATURE_SCHEMA):
        MLShrinkageCovariance(str(path)).fit(_returns())


def test_params_clone_and_fitted_state(model_dir):
    path = _model(model_dir, "a0p", 0.0)
    est = MLShrinkageCovariance.from_pretrained(path, store_precision=False)
    assert est.get_params() == {
        "model_path": path,
        "store_precision": False,
        "assume_centered": False,
        "device": "cpu",
        "volatility_timing": True,
        "devolatilise": False,
    }
    assert hasattr(est, "model_")  # loaded (and checked) by from_pretrained
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    with pytest.raises(NotFittedError):
        est.score(_returns())
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "model_")
    twin.set_params(assume_centered=True)
    assert twin.assume_centered and not est.assume_centered
    twin.fit(_returns())
    assert twin.precision_ is None
    check_is_fitted(twin)


def test_ensemble_model_file(model_dir):
    pi = [0.2, 0.2, 0.2, 0.2, 0.2]
    members = [forced_network(0.2, pi, math.log(0.01)), forced_network(0.6, pi, math.log(0.04))]
    ens = EnsembleModel(members, temperature=2.0)
    path = model_dir / "ensemble.pt"
    save_model(path, ens, FEATURE_NAMES, TARGET_NAMES)
    est = MLShrinkageCovariance.from_pretrained(path).fit(_returns())
    assert est.shrinkage_ == pytest.approx(0.4, abs=1e-6)
    # mixture variance: between (0.2² each side) + mean within, times the temperature
    var = 2.0 * (0.04 + 0.5 * (0.01 + 0.04))
    assert est.uncertainty_ == pytest.approx(math.sqrt(var), rel=1e-5)
    np.testing.assert_allclose(list(est.target_weights_.values()), pi, atol=1e-6)


# --------------------------------------------------------------------- skfolio
@pytest.fixture(scope="module")
def sp500_returns():
    from skfolio.datasets import load_sp500_dataset
    from skfolio.preprocessing import prices_to_returns

    return prices_to_returns(load_sp500_dataset()).iloc[-250:]


def _min_variance(cov_estimator, X):
    from skfolio.optimization import MeanRisk, ObjectiveFunction
    from skfolio.prior import EmpiricalPrior

    model = MeanRisk(
        objective_function=ObjectiveFunction.MINIMIZE_RISK,
        prior_estimator=EmpiricalPrior(covariance_estimator=cov_estimator),
    )
    return model.fit(X)


def test_skfolio_min_variance_alpha_zero_equals_empirical(model_dir, sp500_returns):
    from skfolio.moments import EmpiricalCovariance as SkEmpirical

    est = MLShrinkageCovarianceSkfolio.from_pretrained(_model(model_dir, "a0s", 0.0))
    ours = _min_variance(est, sp500_returns)
    ref = _min_variance(SkEmpirical(ddof=0), sp500_returns)
    fitted = ours.prior_estimator_.covariance_estimator_
    np.testing.assert_allclose(
        fitted.covariance_, ref.prior_estimator_.covariance_estimator_.covariance_, rtol=1e-10
    )
    np.testing.assert_allclose(ours.weights_, ref.weights_, atol=1e-6)
    np.testing.assert_array_equal(fitted.feature_names_in_, sp500_returns.columns.to_numpy())
    assert ours.weights_.sum() == pytest.approx(1.0, abs=1e-8)


def test_skfolio_min_variance_identity_target_is_equal_weight(model_dir, sp500_returns):
    path = _model(model_dir, "id_s", 1.0, _onehot("identity"))
    ours = _min_variance(MLShrinkageCovarianceSkfolio(model_path=path), sp500_returns)
    p = sp500_returns.shape[1]
    np.testing.assert_allclose(ours.weights_, np.full(p, 1.0 / p), atol=1e-6)


def test_skfolio_variant_matches_sklearn_variant(model_dir, sp500_returns):
    path = save(random_network(seed=11), model_dir / "random_s.pt")
    a = MLShrinkageCovarianceSkfolio(path).fit(sp500_returns)
    b = MLShrinkageCovariance(path).fit(sp500_returns)
    np.testing.assert_allclose(a.covariance_, b.covariance_, rtol=1e-12)
    assert a.shrinkage_ == b.shrinkage_ and a.target_weights_ == b.target_weights_
    assert a.get_params()["nearest"] is True and clone(a).model_path == path
    w = _min_variance(MLShrinkageCovarianceSkfolio(path), sp500_returns).weights_
    assert w.min() >= -1e-8 and w.sum() == pytest.approx(1.0, abs=1e-8)


_FINAL = Path(__file__).resolve().parents[1] / "models" / "final.pt"


@pytest.mark.parametrize("source", ["bundled", "pipeline"])
def test_deployed_model_loads_and_fits(source):
    """The bundled model (always in the repository) and, after `dvc repro`, the
    pipeline's models/final.pt give a valid estimate on S&P-like data."""
    if source == "pipeline" and not _FINAL.is_file():
        pytest.skip("models/final.pt is written by `dvc repro`")
    est = (
        MLShrinkageCovariance() if source == "bundled" else MLShrinkageCovariance(str(_FINAL))
    ).fit(_returns(n=120, p=20, seed=9))
    assert 0.0 <= est.shrinkage_ <= 1.0
    assert sum(est.target_weights_.values()) == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.eigvalsh(est.covariance_).min() > 0
    assert est.model_.feature_schema == FEATURE_SCHEMA


def test_agrees_with_the_batched_backtest_estimator(model_dir, sp500_returns):
    from shrinklab.evaluation.backtest import learned_estimator

    net = random_network(seed=13)
    path = save(net, model_dir / "random_bt.pt")
    X = sp500_returns.to_numpy()
    windows = np.stack([X[i : i + 60] for i in (0, 70, 140)])
    batched = learned_estimator(net)(torch.as_tensor(windows)).numpy()
    # float32 network: batch-size dependent GEMM rounding moves α, π by ~1e-7
    for b, W in zip(batched, windows):
        C = MLShrinkageCovariance(path).fit(W).covariance_
        assert np.linalg.norm(C - b) <= 1e-6 * np.linalg.norm(b)


def test_a_rewritten_model_file_is_loaded_again(model_dir):
    """The estimator resolves its model once, then only checks the file: a file written
    anew (new modification time) is loaded again on the next fit."""
    import os

    path = Path(_model(model_dir, "swap", 0.0))
    est = MLShrinkageCovariance(str(path))
    assert est.fit(_returns()).shrinkage_ == 0.0
    assert est.fit(_returns()).shrinkage_ == 0.0  # from the cache
    _model(model_dir, "swap", 1.0)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert est.fit(_returns()).shrinkage_ == pytest.approx(1.0)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_bundled_model_fits_the_shortest_samples(n):
    """n = 2 is the least ``as_returns`` accepts: every step of the bundled model (the
    fund switch, decision 0073's kurtosis pre-test, the volatility timing) takes it."""
    est = MLShrinkageCovariance().fit(_returns(n=n, p=6, seed=n))
    assert est.covariance_.shape == (6, 6) and np.all(np.isfinite(est.covariance_))
    assert np.allclose(est.covariance_, est.covariance_.T)


@pytest.mark.parametrize("n", [60, 250])
@pytest.mark.parametrize("kind", ["duplicate", "index"])
def test_bundled_model_on_collinear_assets(sp500_returns, kind, n):
    """An asset that is a copy of another, or the equal-weight index of the others, makes
    the sample covariance exactly singular (p < n). The bundled model's estimate stays
    well conditioned (its linear targets lift the null direction), and a duplicate gets
    the original's covariances with every other asset and its variance, so the GMV weight
    splits evenly between the two
    (research log, "Exploration: collinear and nearly collinear universes")."""
    X = sp500_returns.to_numpy()[-n:]
    extra = X[:, 3] if kind == "duplicate" else X.mean(1)
    Z = np.column_stack([X, extra])
    assert np.linalg.matrix_rank(np.cov(Z.T)) == X.shape[1]  # exactly singular
    C = MLShrinkageCovariance().fit(Z).covariance_
    ev = np.linalg.eigvalsh(C)
    assert ev[0] > 0 and ev[-1] / ev[0] < 1e3
    if kind == "duplicate":
        others = [i for i in range(X.shape[1]) if i != 3]
        np.testing.assert_allclose(C[-1, others], C[3, others], rtol=1e-10, atol=0)
        assert C[-1, -1] == pytest.approx(C[3, 3], rel=1e-10)
        w = np.linalg.solve(C, np.ones(len(C)))
        assert w[-1] == pytest.approx(w[3], rel=1e-8)
