"""Shared by the fast-path tests: the bundled model and one-factor return samples."""

from __future__ import annotations

import numpy as np

from shrinklab.models.bundled import model_source
from shrinklab.sklearn import load_pretrained


def load_bundled():
    """The bundled ``final`` model (wrap it as a module fixture:
    ``bundled = pytest.fixture(scope="module")(load_bundled)``)."""
    return load_pretrained(model_source("final"))


def one_factor_returns(n: int, p: int, seed: int) -> np.ndarray:
    """``(n, p)`` daily-scale returns with one common factor plus noise."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, 1))
    return (f * rng.uniform(0.5, 1.5, p) + rng.standard_normal((n, p))) * 0.01
