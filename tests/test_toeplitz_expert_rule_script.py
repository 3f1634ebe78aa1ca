"""scripts/toeplitz_expert_rule.py (decisions 0055–0058): the twins it judges, built from the
bundled model, do what their records say, checked against the unguarded models."""

from __future__ import annotations

import math

import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.data.synthetic import make_scenario
from shrinklab.models.registry import load_model
from shrinklab.models.switched import before_switch
from tests._scripts import ROOT, load_script


def _windows() -> torch.Tensor:
    """Features of windows the gate calls Toeplitz (most of them, half of them) and of a
    1/3/10 world at p/n = 10, which it also calls Toeplitz, outside the training range."""
    specs = [
        {"family": "toeplitz", "p": 60, "n": 60, "rho": 0.3},
        {"family": "toeplitz", "p": 30, "n": 60, "rho": 0.2},
        {"family": "spectrum_1_3_10", "p": 200, "n": 20},
    ]
    return torch.cat([extract_features(make_scenario(s, 16, 3)[1]) for s in specs])


def test_the_twins_of_the_toeplitz_rules():
    m = load_script("scripts/toeplitz_expert_rule.py")
    # A: the bundled model as it was before decision 0058 (without its guarded expert)
    bundled = before_switch(load_model(ROOT / "shrinklab" / "weights" / "final.pt"))
    a = m.as_before_0058(bundled.eval())
    assert not a.guards
    expert = a.expert_map()["factor"]  # any network stands in for the trained expert
    b = m.with_expert(a, expert)
    assert b.expert_map()[m.FAMILY] is expert and b.extra == a.extra
    g = m.guarded(a, expert, 0.5, 4.0)
    fallback = g.guards[m.FAMILY]["fallback"]
    assert a.expert_map()[fallback] is a.expert_map()[m.FAMILY]  # the pooled server's family
    assert g.guards[m.FAMILY]["max_log_ratio"] == pytest.approx(math.log(4.0))
    assert g.extra == a.extra and g.extra is not a.extra
    x = _windows()
    with torch.no_grad():
        p_t = a.gate(x)[:, a.gate.families.index(m.FAMILY)]
    open_ = (p_t > 0.5) & (x[:, FEATURE_NAMES.index("log_p_over_n")] <= math.log(4.0))
    want = torch.where(
        open_[:, None], b.predict(x).intensities.double(), a.predict(x).intensities.double()
    )
    torch.testing.assert_close(g.predict(x).intensities.double(), want, atol=1e-6, rtol=0)
    beyond = x[:, FEATURE_NAMES.index("log_p_over_n")] > math.log(4.0)
    assert 8 <= int(open_.sum()) <= 32  # the Toeplitz windows: both branches are exercised
    assert bool((p_t[beyond] > 0.5).all()) and not bool(open_[beyond].any())  # the range closes
    with pytest.raises(ValueError, match="soft mixture"):
        m.with_expert(bundled.general, expert)
