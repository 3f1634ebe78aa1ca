"""``MLShrinkageCovariance``: the learned shrinkage estimator for scikit-learn and skfolio users.

A trained model (network, ensemble or compressed model written by
:func:`shrinklab.models.registry.save_model`) maps p-agnostic features of the returns
(:func:`shrinklab.core.features.extract_features`) to an intensity ``α ∈ [0, 1]`` and
target weights ``π`` on the simplex; the estimate is

    Σ̂ = S + Σ_k α π_k (T_k − S)

with ``S`` the sample covariance (divisor ``n``, as scikit-learn's
``EmpiricalCovariance``) and ``T_k`` the shrinkage targets of
:mod:`shrinklab.core.targets` (scaled identity, Ledoit & Wolf 2004 JMVA; diagonal;
constant correlation, Ledoit & Wolf 2004 JPM; single factor, Ledoit & Wolf 2003
JEF; QIS, Ledoit & Wolf 2022 Bernoulli) in the order the model was trained on. A model
file that carries the volatility timing (the bundled ``final.pt`` does: decisions 0047,
0048 and 0049) then keeps ``Σ̂``'s correlations and moves its volatilities towards
exponentially weighted ones (the bundled file: half-life = half the window), by
James–Stein pre-tests that leave
``Σ̂`` unchanged when the volatilities move no more than sampling noise
(:mod:`shrinklab.core.volatility_timing`).

Two estimators share this computation:

* :class:`MLShrinkageCovariance` — a scikit-learn covariance estimator (a
  subclass of ``sklearn.covariance.EmpiricalCovariance``: ``score`` is the
  Gaussian log-likelihood, ``mahalanobis``, ``error_norm``, ``get_precision``
  work; ``get_params``/``set_params``/``clone`` work; it passes
  ``sklearn.utils.estimator_checks``).
* :class:`MLShrinkageCovarianceSkfolio` — a ``skfolio.moments.BaseCovariance``
  (``nearest``/``higham`` projection to the nearest positive-definite matrix), so it
  drops into ``skfolio.prior.EmpiricalPrior(covariance_estimator=...)`` and any
  ``skfolio`` optimisation.

Which model
-----------
``MLShrinkageCovariance()`` uses the trained model bundled with the package
(``shrinklab/weights/final.pt``, the pipeline's deployed model; its model card
``final.md`` lies beside it: training data, feature schema, sha256, headline metrics
with their standard errors, intended use and limits). ``from_pretrained("final")``
names a bundled model; ``from_pretrained("models/final.pt")`` (or
``MLShrinkageCovariance(model_path=...)``) loads a file. A name that is neither an
existing file nor a bundled model is a ``ValueError`` listing the bundled models. A
file written for another feature schema than this version of
:mod:`shrinklab.core.features` is refused with a ``ValueError`` naming both schemas.
Loaded models are cached per (file, modification time, device).

Data
----
``X`` is ``(n_samples, n_assets)`` (ndarray or DataFrame; ``feature_names_in_``
is set for a DataFrame with string column names).  Validation follows
scikit-learn (``validate_data``: NaN/inf, 1-D, empty, sparse, complex input give
clear errors) and needs ``n_samples >= 2``.  ``p > n`` works.  A constant column
(zero variance) keeps zero variance and zero covariance in ``covariance_``
(see :mod:`shrinklab._validation`; its row and column are set to zero after
combining, since the scaled-identity target would give it the average variance);
``precision_`` is then the Moore–Penrose pseudo-inverse (``scipy.linalg.pinvh``, as scikit-learn does), which equals the
inverse whenever ``covariance_`` is invertible.  (The skfolio variant follows
skfolio's rule instead and refuses zero-variance assets.)

``assume_centered=True``: ``S = XᵀX/n`` and ``location_ = 0``; the targets are
built from that ``S`` (QIS with effective sample size ``n``, no degree of freedom
lost to the mean); the features, hence ``α`` and ``π``, are computed from the
demeaned data as always (they describe the shape of the sample, not its mean).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import linalg
from sklearn.covariance import EmpiricalCovariance
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from shrinklab.core.features import FEATURE_SCHEMA
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.core.volatility_timing import EXTRA_KEY, PRETEST_KEY
from shrinklab.models import bundled
from shrinklab.models.bundled import DEFAULT_MODEL, model_source
from shrinklab.models.estimate import (
    MLShrinkageEstimate,
    RollingEstimate,
    ml_shrinkage_estimate,
    numpy_estimate,
    rolling_estimate,
    torch_device,
)
from shrinklab.models.persistence import load_model_payload
from shrinklab.models.registry import load_model

__all__ = [
    "MLShrinkageCovariance",
    "MLShrinkageCovarianceSkfolio",
    "MLShrinkageEstimate",
    "load_pretrained",
    "RollingEstimate",
    "ml_shrinkage_estimate",
    "rolling_estimate",
    "without_volatility_timing",
]

_MODEL_CACHE: dict[tuple[str, int, int, str], nn.Module] = {}
# (model_path, device, bundled folder) -> (resolved file, (mtime, size), model): a fit resolves its model
# source (bundled name or file) once, then only checks that the file is unchanged.
_RESOLVED: dict[tuple[Any, str], tuple[Path, tuple[int, int], nn.Module]] = {}
# id(model) -> (model, the same model without its volatility timing)
_UNTIMED: dict[int, tuple[nn.Module, nn.Module]] = {}


def without_volatility_timing(model: nn.Module) -> nn.Module:
    """``model`` without the volatility timing its file carries: a shallow copy that
    shares the weights, its ``extra`` without the timing keys (cached per model), or
    ``model`` itself when it carries none. The estimate is then the shrinkage of the
    window's sample covariance, not moved towards recent volatilities
    (:mod:`shrinklab.core.volatility_timing`)."""
    extra = getattr(model, "extra", None) or {}
    if EXTRA_KEY not in extra and PRETEST_KEY not in extra:
        return model
    hit = _UNTIMED.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    bare = copy.copy(model)
    bare.extra = {k: v for k, v in extra.items() if k not in (EXTRA_KEY, PRETEST_KEY)}
    _UNTIMED[id(model)] = (model, bare)
    return bare


# --------------------------------------------------------------------------- model files
def load_pretrained(path: str | os.PathLike, device: Any = "cpu") -> nn.Module:
    """Load a model file for the estimator: schema-checked, in eval mode, cached.

    Raises ``ValueError`` if there is no file, if it is not a shrinklab model file,
    if its feature schema differs from :data:`shrinklab.core.features.FEATURE_SCHEMA`
    (the message names both schemas), or if its targets are not among
    :data:`shrinklab.core.targets.TARGET_NAMES`.
    """

    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"no model file at {path}; pass the path of a file written by "
            "shrinklab.models.registry.save_model (the pipeline writes models/final.pt)"
        )
    dev = torch_device(device)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, str(dev))
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    stored = load_model_payload(path).get("feature_schema")
    if stored != FEATURE_SCHEMA:
        raise ValueError(
            f"model file {path} was trained on feature schema {stored!r}, but this "
            f"version of shrinklab.core.features computes schema {FEATURE_SCHEMA!r}; "
            "retrain the model or use the shrinklab version it was trained with"
        )
    model = load_model(path, expected_feature_schema=FEATURE_SCHEMA, map_location=dev)
    names = tuple(getattr(model, "target_names", ()) or TARGET_NAMES)
    unknown = [k for k in names if k not in TARGET_NAMES]
    if unknown:
        raise ValueError(f"model file {path} uses unknown targets {unknown}; known {TARGET_NAMES}")
    model.target_names = list(names)
    _MODEL_CACHE[key] = model
    return model


# --------------------------------------------------------------------------- shared estimator code
def _validate_returns(est: Any, X: Any) -> np.ndarray:
    """``validate_data(est, X, dtype=float64, ensure_min_samples=2)``, with a shortcut for
    what it would accept unchanged: a finite 2-D float64 ndarray with ``n >= 2`` and
    ``p >= 1`` is returned as is (``n_features_in_`` set, ``feature_names_in_`` dropped,
    as scikit-learn does). Anything else (a DataFrame, another dtype, NaN, a bad shape)
    goes through scikit-learn, which raises its usual errors."""
    if (
        type(X) is np.ndarray
        and X.dtype == np.float64
        and X.ndim == 2
        and X.shape[0] >= 2
        and X.shape[1] >= 1
        and np.isfinite(np.add.reduce(X, axis=None))  # NaN or inf in X make the sum non-finite
    ):
        est.n_features_in_ = X.shape[1]
        est.__dict__.pop("feature_names_in_", None)
        return X
    return validate_data(est, X, dtype=np.float64, ensure_min_samples=2)


def _plain_params(est: Any) -> bool:
    """Whether the parameters have the plain types ``_parameter_constraints`` accept
    (``bool`` flags, ``None``/``str`` model path, ``str`` device): then scikit-learn's
    ``_validate_params`` (about 40 us) cannot fail and is skipped."""
    return (
        type(est.store_precision) is bool
        and type(est.assume_centered) is bool
        and type(est.volatility_timing) is bool
        and type(est.devolatilise) is bool
        and (est.model_path is None or type(est.model_path) is str)
        and type(est.device) is str
    )


class _MLShrinkageMixin:
    """Model resolution, ``from_pretrained`` and the fitted attributes shared by both estimators."""

    model_path: str | os.PathLike | None
    device: Any
    volatility_timing: bool
    devolatilise: bool

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike = DEFAULT_MODEL, **params: Any):
        """Estimator using the bundled model named ``path`` (default ``"final"``) or the
        model file ``path`` (other estimator params as keywords).

        The file is loaded and checked now (``ValueError`` for a missing file, an
        unknown bundled name or a foreign feature schema); the model is ``model_``.
        """
        est = cls(model_path=str(path), **params)
        est.model_ = load_pretrained(model_source(str(path)), params.get("device", "cpu"))
        return est

    def _resolve_model(self) -> nn.Module:
        if self.model_path is not None and not isinstance(self.model_path, str | os.PathLike):
            raise ValueError(f"model_path must be a str or path, got {type(self.model_path)!r}")
        key = (self.model_path, str(self.device), bundled.bundled_dir())
        hit = _RESOLVED.get(key)
        if hit is not None:  # same source, file unchanged: skip resolving and loading again
            try:
                st = os.stat(hit[0])
            except OSError:
                st = None
            if st is not None and (st.st_mtime_ns, st.st_size) == hit[1]:
                return hit[2]
        path = model_source(self.model_path)
        model = load_pretrained(path, self.device)
        st = os.stat(path)
        _RESOLVED[key] = (path, (st.st_mtime_ns, st.st_size), model)
        return model

    def _estimation_model(self) -> nn.Module:
        """The resolved model, without its volatility timing when ``volatility_timing``
        is false."""
        if not isinstance(self.volatility_timing, bool | np.bool_):
            raise ValueError(f"volatility_timing must be a bool, got {self.volatility_timing!r}")
        model = self._resolve_model()
        return model if self.volatility_timing else without_volatility_timing(model)

    def _fit_estimate(self, X: np.ndarray) -> MLShrinkageEstimate:
        model = self._estimation_model()
        scale = self._devolatilising_scale(X)
        if scale is not None:
            X = X / scale
        if not self.assume_centered and torch_device(self.device).type == "cpu":
            est = numpy_estimate(model, X)  # X validated by fit (validate_data)
        else:
            est = ml_shrinkage_estimate(
                model, X, assume_centered=bool(self.assume_centered), device=self.device
            )
        if scale is not None:
            est = dataclasses.replace(
                est,
                covariance=scale[:, None] * est.covariance * scale[None, :],
                location=est.location * scale,
            )
        self.model_ = model
        self.location_ = est.location
        self.shrinkage_ = est.alpha
        self.target_weights_ = {k: float(v) for k, v in zip(est.target_names, est.weights)}
        self.intensities_ = est.alpha * est.weights
        self.uncertainty_ = float(np.sqrt(np.exp(est.log_var)))
        self.features_ = est.features
        return est

    def _devolatilise_flag(self) -> bool:
        """``devolatilise`` as a bool (``ValueError`` for anything else)."""
        if not isinstance(self.devolatilise, bool | np.bool_):
            raise ValueError(f"devolatilise must be a bool, got {self.devolatilise!r}")
        return bool(self.devolatilise)

    def _devolatilising_scale(self, X: np.ndarray) -> np.ndarray | None:
        """With ``devolatilise``, each asset's standard deviation with divisor ``n``, as
        ``S`` (its root mean square with ``assume_centered``; 1 for a constant column):
        ``fit`` estimates on ``X / scale``, whose ``S`` has a unit diagonal, and scales the
        covariance back. Otherwise ``None``."""
        if not self._devolatilise_flag():
            return None
        if self.assume_centered:
            sd = np.sqrt(np.mean(X * X, axis=0))
        else:
            sd = X.std(axis=0)
        return np.where(sd > 0, sd, 1.0)

    def fit_rolling(self, returns: Any, window: int, step: int = 1) -> RollingEstimate:
        """The estimate of every rolling window ``returns[t − window : t]``, ``t = window,
        window + step, …``, computed in batched passes: the same covariances as calling
        ``fit`` on each window (to rounding), many times faster for a backtest.

        ``returns`` is ``(n_samples, n_assets)`` (ndarray or DataFrame; a DataFrame's
        index labels the windows by their last row). Returns a :class:`RollingEstimate`
        (``index``, ``covariances (D, p, p)``, ``alpha (D,)``, ``weights (D, K)``).
        The estimator's fitted attributes are not changed (``model_`` is set).
        """
        if self.assume_centered:
            raise ValueError("fit_rolling estimates centred windows; use assume_centered=False")
        model = self._estimation_model()
        devolatilise = self._devolatilise_flag()
        self.model_ = model
        return rolling_estimate(
            model, returns, window, step, device=self.device, devolatilise=devolatilise
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "covariance_")


_ATTRIBUTES_DOC = """
    Attributes
    ----------
    covariance_ : ndarray (n_assets, n_assets)
        ``Σ̂ = S + Σ_k α π_k (T_k − S)``.
    location_ : ndarray (n_assets,)
        Column means (zeros with ``assume_centered=True``).
    shrinkage_ : float
        The predicted intensity ``α ∈ [0, 1]``.
    target_weights_ : dict
        Target name → weight ``π_k`` (on the simplex).
    intensities_ : ndarray (K,)
        ``α π_k`` in the order of ``target_weights_``.
    uncertainty_ : float
        Predicted standard deviation of ``α`` (``exp(log_var / 2)`` of the model's
        uncertainty head; for an ensemble the calibrated mixture variance).
    features_ : ndarray (F,)
        The features the model saw (:data:`shrinklab.core.features.FEATURE_NAMES`).
    model_ : torch.nn.Module
        The loaded model.
    n_features_in_ : int
        Number of assets.
    feature_names_in_ : ndarray of str
        Asset names, when ``X`` was a DataFrame with string column names.
"""


class MLShrinkageCovariance(_MLShrinkageMixin, EmpiricalCovariance):
    __doc__ = (
        """Learned multi-target shrinkage covariance, a scikit-learn estimator.

    ``Σ̂ = S + Σ_k α π_k (T_k − S)`` with ``(α, π)`` predicted from features of ``X``
    by a trained model (see :mod:`shrinklab.sklearn`).  Use
    ``MLShrinkageCovariance().fit(X)`` (the bundled model) or
    ``MLShrinkageCovariance.from_pretrained("models/final.pt").fit(X)``.

    Parameters
    ----------
    model_path : str or path, default None
        Model file (:func:`shrinklab.models.registry.save_model`) or the name of a
        bundled model; ``None`` uses the bundled default model ``"final"``.
    store_precision : bool, default True
        Provide ``precision_`` (pseudo-inverse of ``covariance_``, ``scipy.linalg.pinvh``
        as scikit-learn). It is computed on first access, not in ``fit``: the
        pseudo-inverse costs an eigendecomposition of ``p × p``, more than the fit.
    assume_centered : bool, default False
        Treat the data as mean zero (``S = XᵀX/n``, ``location_ = 0``).
    device : str, default "cpu"
        Torch device for the computation (e.g. ``"cuda"``).
    volatility_timing : bool, default True
        Apply the volatility timing that the model file carries (the bundled ``final``
        does, decisions 0047–0050): the estimate keeps ``Σ̂``'s correlations and moves its
        volatilities towards recent ones when they moved beyond sampling noise, a
        forecast of the next period's covariance. ``False`` returns the shrinkage
        estimate of the window's own covariance, without that move.
    devolatilise : bool, default False
        Estimate on the returns divided by each asset's sample standard deviation and
        scale the covariance back (Engle, Ledoit & Wolf 2019): the estimate is then
        equivariant to rescaling single assets. For universes whose assets' volatilities
        differ widely (bond-like next to equity funds), where the default estimate trails
        QIS (docs/decisions/0076-devolatilise-wide-volatility-spreads.md); on universes of
        similar volatilities it costs. ``features_`` and the fitted intensities are then
        those of the scaled returns; ``fit_rolling`` scales each window.
"""
        + _ATTRIBUTES_DOC
    )

    _parameter_constraints: dict = {
        **EmpiricalCovariance._parameter_constraints,
        "model_path": [str, os.PathLike, None],
        "device": [str, torch.device],
        "volatility_timing": ["boolean"],
        "devolatilise": ["boolean"],
    }

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        store_precision: bool = True,
        assume_centered: bool = False,
        device: str = "cpu",
        volatility_timing: bool = True,
        devolatilise: bool = False,
    ) -> None:
        self.model_path = model_path
        self.store_precision = store_precision
        self.assume_centered = assume_centered
        self.device = device
        self.volatility_timing = volatility_timing
        self.devolatilise = devolatilise

    def fit(self, X: Any, y: None = None) -> MLShrinkageCovariance:
        """Estimate the covariance of ``X (n_samples, n_assets)``; ``y`` is ignored."""
        if not _plain_params(self):  # the common types pass; others get sklearn's check
            self._validate_params()
        X = _validate_returns(self, X)
        est = self._fit_estimate(X)
        self._set_covariance(est.covariance)
        return self

    def score(self, X_test: Any, y: None = None) -> float:
        """Mean Gaussian log-likelihood of ``X_test`` under ``N(location_, covariance_)``,
        as ``sklearn.covariance.EmpiricalCovariance.score``."""
        check_is_fitted(self)
        return float(super().score(X_test, y))

    def _set_covariance(self, covariance: np.ndarray) -> None:
        """As scikit-learn's, except that ``precision_`` waits until it is read."""
        self.covariance_ = covariance  # built here: finite float64 (p, p), nothing to check
        self.__dict__.pop("_precision", None)

    @property
    def precision_(self) -> np.ndarray | None:
        """``pinvh(covariance_)`` (``None`` with ``store_precision=False``), computed
        on first access and kept until the next ``fit``."""
        if "covariance_" not in self.__dict__:
            raise AttributeError("precision_ (the estimator is not fitted)")
        if not self.store_precision:
            return None
        if self.__dict__.get("_precision") is None:
            self.__dict__["_precision"] = linalg.pinvh(self.covariance_, check_finite=False)
        return self.__dict__["_precision"]


class MLShrinkageCovarianceSkfolio(_MLShrinkageMixin):
    """Placeholder replaced below when skfolio is importable."""


try:  # skfolio is a dependency, but keep `import shrinklab.sklearn` working without it
    from skfolio.moments import BaseCovariance as _SkfolioBaseCovariance
except ImportError:  # pragma: no cover
    _SkfolioBaseCovariance = None

if _SkfolioBaseCovariance is not None:

    class MLShrinkageCovarianceSkfolio(_MLShrinkageMixin, _SkfolioBaseCovariance):  # noqa: F811
        __doc__ = (
            """Learned multi-target shrinkage covariance as a ``skfolio`` covariance estimator.

    Same estimate as :class:`MLShrinkageCovariance`, stored through skfolio's
    ``BaseCovariance._set_covariance`` (projection to the nearest positive-definite
    matrix when ``nearest=True``; zero-variance assets are refused there with
    skfolio's ``NonPositiveVarianceError``).  Use as
    ``EmpiricalPrior(covariance_estimator=MLShrinkageCovarianceSkfolio.from_pretrained(path))``.

    Parameters
    ----------
    model_path : str or path, default None
        Model file or bundled model name; ``None`` uses the bundled ``"final"``.
    assume_centered, nearest, higham, higham_max_iteration
        As in ``skfolio.moments.BaseCovariance``.
    device : str, default "cpu"
        Torch device for the computation.
    volatility_timing : bool, default True
        As in :class:`MLShrinkageCovariance`: ``False`` returns the shrinkage estimate
        of the window's own covariance, without the model's volatility timing.
    devolatilise : bool, default False
        As in :class:`MLShrinkageCovariance`: estimate on returns scaled to unit
        variance and scale back (for universes of very different volatilities).
"""
            + _ATTRIBUTES_DOC
        )

        def __init__(
            self,
            model_path: str | os.PathLike | None = None,
            assume_centered: bool = False,
            nearest: bool = True,
            higham: bool = False,
            higham_max_iteration: int = 100,
            device: str = "cpu",
            volatility_timing: bool = True,
            devolatilise: bool = False,
        ) -> None:
            super().__init__(
                assume_centered=assume_centered,
                nearest=nearest,
                higham=higham,
                higham_max_iteration=higham_max_iteration,
            )
            self.model_path = model_path
            self.device = device
            self.volatility_timing = volatility_timing
            self.devolatilise = devolatilise

        def fit(self, X: Any, y: Any = None, **fit_params: Any) -> MLShrinkageCovarianceSkfolio:
            """Estimate the covariance of returns ``X (n_observations, n_assets)``."""
            X = _validate_returns(self, X)
            est = self._fit_estimate(X)
            self._set_covariance(est.covariance)
            return self
