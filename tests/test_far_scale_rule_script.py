"""scripts/far_scale_rule.py (decision 0069): its candidate is the bundled switched model
with the far intensity scaled, everything else shared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _one_factor import load_bundled, one_factor_returns

from shrinklab.core.features import extract_features
from shrinklab.studies.worlds import diversified_returns_frame
from tests._scripts import load_script

bundled = pytest.fixture(scope="module")(load_bundled)


def test_scaled_candidate_scales_only_the_switched_windows(bundled):
    m = load_script("scripts/far_scale_rule.py")
    stocks = pd.DataFrame(one_factor_returns(400, 20, 3))
    funds = diversified_returns_frame(stocks, 10, 5)  # long-only portfolios: fund-like
    X = [stocks.to_numpy()[i : i + 120] for i in (0, 140, 280)]
    X += [funds.to_numpy()[i : i + 120] for i in (0, 140, 280)]
    x = torch.cat([extract_features(w) for w in X])
    far = bundled.is_far(x).numpy()
    assert far.any() and not far.all()  # both kinds in the batch
    cand = m.scaled(bundled, 0.5)
    assert cand.far_scale == 0.5 and bundled.far_scale == 0.75
    assert cand.extra == bundled.extra and cand.near is bundled.near
    a = m.scaled(bundled, 1.0).predict(x).alpha.numpy()
    b = cand.predict(x).alpha.numpy()
    np.testing.assert_allclose(b[far], 0.5 * a[far], rtol=1e-6)
    np.testing.assert_array_equal(b[~far], a[~far])
