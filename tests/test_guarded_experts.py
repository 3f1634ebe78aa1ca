"""Guarded experts (decision 0058): the folder the ensemble stage writes
(``shrinklab.models.guarded``) and how the compress stage attaches them to the deployed
soft mixture (``evaluation.compression.with_guarded_experts`` / ``deployed_form``), checked
against models built by hand with ``GatedExpertModel(guards=...)``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from shrinklab.core.features import FEATURE_NAMES
from shrinklab.core.params.ensemble import Ensemble
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.evaluation import compression
from shrinklab.models.experts import FamilyGate, GatedExpertModel
from shrinklab.models.guarded import (
    INDEX_NAME,
    checked_guard_spec,
    load_guarded_experts,
    save_guarded_experts,
)
from shrinklab.models.network import MLShrinkageNetwork

F, K = len(FEATURE_NAMES), len(TARGET_NAMES)
SPEC = {"threshold": 0.5, "max_p_over_n": 4.0}


def _net(seed: int) -> MLShrinkageNetwork:
    torch.manual_seed(seed)
    return MLShrinkageNetwork(input_dim=F, num_targets=K, hidden_dims=(8,), gate="sparsemax").eval()


def _gate() -> FamilyGate:
    gate = FamilyGate(F, ["a", "b", "c", "d"], hidden_dims=(16,))
    torch.manual_seed(3)
    for p in gate.parameters():  # probabilities that vary over the inputs
        torch.nn.init.normal_(p, std=2.0)
    return gate.eval()


def _x(n: int = 500) -> torch.Tensor:
    torch.manual_seed(21)
    x = torch.randn(n, F) * 2
    x[:, FEATURE_NAMES.index("log_p_over_n")] = torch.linspace(-2.0, 3.0, n)
    return x


def _served(server_for_c: bool) -> GatedExpertModel:
    """A soft mixture with experts for a and b; with ``server_for_c``, one more module
    (a pooled server) for c and d."""
    gate, server = _gate(), _net(5)
    experts = {"a": _net(2), "b": _net(3)}
    if server_for_c:
        experts |= {"c": server, "d": server}
    return GatedExpertModel(_net(1), experts, gate, 0.7, mixing="soft")


@pytest.mark.parametrize("server_for_c", [True, False])
def test_with_guarded_experts_equals_the_guarded_model_built_by_hand(server_for_c):
    """With a server for c, the fallback is the server's other family (d); without, the
    general model (None). Either way the result equals GatedExpertModel(guards=...) built
    by hand, and without_guarded_experts gives the model back."""
    model, expert = _served(server_for_c), _net(6)
    got = compression.with_guarded_experts(model, {"c": (expert, SPEC)})
    fallback = "d" if server_for_c else None
    guard = {"threshold": 0.5, "max_log_ratio": math.log(4.0), "fallback": fallback}
    want = GatedExpertModel(
        model.general,
        model.expert_map() | {"c": expert},
        model.gate,
        0.7,
        mixing="soft",
        guards={"c": guard},
    )
    assert got.guards == want.guards and got.expert_map()["c"] is expert
    x = _x()
    torch.testing.assert_close(
        got.predict(x).intensities, want.predict(x).intensities, atol=0, rtol=0
    )
    back = compression.without_guarded_experts(got)
    assert not back.guards and list(back.expert_map()) == list(model.expert_map())
    torch.testing.assert_close(
        back.predict(x).intensities, model.predict(x).intensities, atol=0, rtol=0
    )
    # the expert changes the answer somewhere (the guard opens for some rows), not everywhere
    diff = (got.predict(x).intensities - model.predict(x).intensities).abs().amax(1)
    assert 0 < int((diff > 1e-6).sum()) < len(x)


def test_deployed_form_attaches_the_guarded_experts_last():
    model, expert = _served(True), _net(6)
    hard = GatedExpertModel(model.general, model.expert_map(), model.gate, 0.7)
    form = compression.deployed_form(hard, "soft", guarded_experts={"c": (expert, SPEC)})
    assert form.mixing == "soft" and form.guards["c"]["fallback"] == "d"
    assert compression.deployed_form(hard, "soft").guards == {}


def test_the_compression_helpers_keep_a_guarded_experts_guard():
    """A guarded model passed through the other assembly helpers keeps its guard: dropping
    it would silently give the expert its family's whole probability."""
    model, expert = _served(True), _net(6)
    guarded = compression.with_guarded_experts(model, {"c": (expert, SPEC)})
    x = _x()
    replaced = compression.with_experts_replaced(guarded, {"a": _net(9)})
    assert replaced.guards == guarded.guards
    gated = GatedExpertModel(_net(1), {"b": _net(3)}, model.gate, 0.7, mixing="soft")
    with_c = compression.with_guarded_experts(gated, {"c": (expert, SPEC)})
    assert with_c.guards["c"]["fallback"] is None
    served = compression.with_server_for(with_c, _net(7), ["a", "d"])
    assert served.guards == with_c.guards
    assert compression.with_mixing(guarded, "soft").guards == guarded.guards
    torch.testing.assert_close(
        compression.with_mixing(guarded, "soft").predict(x).intensities,
        guarded.predict(x).intensities,
        atol=0,
        rtol=0,
    )
    with pytest.raises(ValueError, match="soft mixture"):
        compression.with_mixing(guarded, "hard")
    general = _net(11)
    assert compression.with_experts_of(general, guarded).guards == guarded.guards


def test_bad_guarded_experts_are_refused_clearly():
    model, expert = _served(True), _net(6)
    hard = GatedExpertModel(model.general, model.expert_map(), model.gate, 0.7)
    cases = [
        (hard, {"c": (expert, SPEC)}, "soft mixture"),
        (model, {"zzz": (expert, SPEC)}, "not among the gate's families"),
        (model, {"a": (expert, SPEC)}, "has an expert of its own"),
        (model, {"c": (expert, {"threshold": 0.5})}, "exactly the keys"),
        (model, {"c": (expert, SPEC | {"threshold": 1.5})}, r"in \(0, 1\)"),
        (model, {"c": (expert, SPEC | {"max_p_over_n": 0})}, "positive or null"),
    ]
    for m, guarded, match in cases:
        with pytest.raises(ValueError, match=match):
            compression.with_guarded_experts(m, guarded)
    once = compression.with_guarded_experts(model, {"c": (expert, SPEC)})
    with pytest.raises(ValueError, match="already has a guarded expert"):
        compression.with_guarded_experts(once, {"c": (expert, SPEC)})
    assert compression.with_guarded_experts(model, {}) is model
    assert compression.without_guarded_experts(model) is model


def test_saved_guarded_experts_load_with_their_guards(tmp_path):
    expert = _net(6)
    folder = tmp_path / "guarded"
    folder.mkdir()
    (folder / "stale.pt").write_bytes(b"old")  # an earlier run's file is removed
    save_guarded_experts(folder, {"c": expert}, {"c": SPEC}, FEATURE_NAMES, TARGET_NAMES)
    assert sorted(p.name for p in folder.iterdir()) == ["c.pt", INDEX_NAME]
    loaded = load_guarded_experts(folder)
    module, spec = loaded["c"]
    assert spec == SPEC
    x = _x(50)
    torch.testing.assert_close(
        module.predict(x).intensities, expert.predict(x).intensities, atol=0, rtol=0
    )
    # none: the index is still written, and loads as {}
    save_guarded_experts(tmp_path / "none", {}, {}, FEATURE_NAMES, TARGET_NAMES)
    assert json.loads((tmp_path / "none" / INDEX_NAME).read_text()) == {}
    assert load_guarded_experts(tmp_path / "none") == {}
    # clear errors
    with pytest.raises(FileNotFoundError, match="ensemble stage"):
        load_guarded_experts(tmp_path / "missing")
    (folder / "c.pt").unlink()
    with pytest.raises(FileNotFoundError, match="lists 'c'"):
        load_guarded_experts(folder)
    with pytest.raises(ValueError, match="different families"):
        save_guarded_experts(folder, {"c": expert}, {}, FEATURE_NAMES, TARGET_NAMES)
    with pytest.raises(ValueError, match="exactly the keys"):
        checked_guard_spec("c", {"threshold": 0.5, "max_p_over_n": 4, "x": 1})
    assert checked_guard_spec("c", {"threshold": 0.5, "max_p_over_n": None})["max_p_over_n"] is None


def test_a_family_is_not_both_a_family_expert_and_a_guarded_one():
    with pytest.raises(ValueError, match="both family_experts and guarded_experts"):
        Ensemble(family_experts=["factor"], guarded_experts={"factor": SPEC})
    section = Ensemble(family_experts=["factor"], guarded_experts={"toeplitz": SPEC})
    assert section.guarded_experts == {"toeplitz": SPEC}
    with pytest.raises(ValueError, match="guarded_experts"):  # typed: a dict of dicts
        Ensemble(guarded_experts=["toeplitz"])


def test_with_sole_servers_builds_the_rule_and_the_helpers_keep_it():
    """Decision 0075's compress helper: the params' ``max_p_over_n`` becomes the log-ratio
    limit, the other parts are shared, and the compression helpers and the switch's far
    model keep the sole server."""
    from shrinklab.evaluation.compression import with_mixing, with_sole_servers
    from shrinklab.models.switched import with_general

    soft = _served(True)
    family = "a"
    s = with_sole_servers(soft, {family: {"threshold": 0.6, "max_p_over_n": 4.0}})
    assert s.sole == {family: {"threshold": 0.6, "max_log_ratio": math.log(4.0)}}
    assert s.gate is soft.gate and s.general is soft.general
    assert with_sole_servers(soft, {}) is soft
    assert with_mixing(s, "soft").sole == s.sole
    assert with_general(s, soft.general).sole == s.sole
    hard = with_mixing(soft, "hard")
    with pytest.raises(ValueError, match="soft mixture"):
        with_sole_servers(hard, {family: {"threshold": 0.6, "max_p_over_n": None}})
    with pytest.raises(ValueError, match=r"\[0.5, 1\)"):
        with_sole_servers(soft, {family: {"threshold": 0.3, "max_p_over_n": None}})
