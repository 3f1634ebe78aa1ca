"""scripts/server_rule_folds.py rebuilds 0036's pair from today's final.pt: removing the
non-market server and attaching it again gives the same model back."""

from __future__ import annotations

import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.evaluation.compression import NON_MARKET_FAMILIES, with_server_for
from shrinklab.models.experts import FamilyGate, GatedExpertModel
from shrinklab.models.network import MLShrinkageNetwork
from tests._scripts import load_script

F, K = len(FEATURE_NAMES), len(TARGET_NAMES)


def _net(seed: int) -> MLShrinkageNetwork:
    torch.manual_seed(seed)
    return MLShrinkageNetwork(input_dim=F, num_targets=K, hidden_dims=(8,), gate="sparsemax").eval()


def test_without_non_market_server_undoes_with_server_for():
    families = ["factor", *NON_MARKET_FAMILIES]
    gate = FamilyGate(F, families, hidden_dims=(16,))
    torch.manual_seed(0)
    for p in gate.parameters():  # a gate whose choice varies over the inputs
        torch.nn.init.normal_(p, std=2.0)
    base = GatedExpertModel(_net(1), {"factor": _net(2)}, gate.eval(), 0.55)
    final = with_server_for(base, _net(9), NON_MARKET_FAMILIES)
    stripped = load_script("scripts/server_rule_folds.py").without_non_market_server(final)
    assert stripped.expert_families == ["factor"]
    x = torch.randn(400, F) * 2
    served = final.expert_choice(x) >= 2  # rows a non-market server takes
    assert served.any() and (~served).any()
    out, ref = stripped.predict(x), base.predict(x)
    torch.testing.assert_close(out.alpha, ref.alpha, atol=0, rtol=0)
    assert not torch.equal(final.predict(x).alpha[served], out.alpha[served])


def test_pooled_twin_keeps_the_modules_and_pools_the_server():
    families = ["factor", *NON_MARKET_FAMILIES]
    gate = FamilyGate(F, families, hidden_dims=(16,))
    base = GatedExpertModel(_net(1), {"factor": _net(2)}, gate.eval(), 0.55)
    twin_of = load_script("scripts/pooled_server_rule.py").pooled_twin
    with pytest.raises(ValueError, match="no server"):
        twin_of(base)
    final = with_server_for(base, _net(9), NON_MARKET_FAMILIES)
    twin = twin_of(final)
    assert twin.pool_shared and not final.pool_shared and twin.threshold == final.threshold
    assert twin.general is final.general and twin.gate is final.gate
    assert list(twin.experts) == list(final.experts)
    with pytest.raises(ValueError, match="non-pooled"):
        twin_of(twin)


def test_soft_twin_mixes_the_same_modules_and_refuses_a_soft_model():
    families = ["factor", *NON_MARKET_FAMILIES]
    gate = FamilyGate(F, families, hidden_dims=(16,))
    final = with_server_for(
        GatedExpertModel(_net(1), {"factor": _net(2)}, gate.eval(), 0.7), _net(9),
        NON_MARKET_FAMILIES, pooled=True,
    )  # fmt: skip
    twin_of = load_script("scripts/soft_mixture_rule.py").soft_twin
    twin = twin_of(final)
    assert twin.mixing == "soft" and final.mixing == "hard" and twin.pool_shared
    assert twin.general is final.general and twin.gate is final.gate
    assert list(twin.experts) == list(final.experts)
    with pytest.raises(ValueError, match="hard switch"):
        twin_of(twin)
