"""The model registry: one table of kinds, no import side effects, every kind loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shrinklab.models import registry


def test_importing_the_registry_imports_no_model_module():
    """Loading a file must not depend on which modules happen to be imported already:
    the registry imports a kind's module itself, on demand."""
    code = (
        "import sys; import shrinklab.models.registry\n"
        "mods = [m for m in ('shrinklab.models.network', 'shrinklab.models.ensemble',"
        " 'shrinklab.models.experts', 'shrinklab.models.compressed') if m in sys.modules]\n"
        "print(mods)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", sorted(registry.BUILTIN_KINDS))
def test_every_builtin_kind_resolves_to_its_class(kind):
    cls = registry.model_class(kind)
    assert cls.model_kind == kind and hasattr(cls, "from_config")


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        registry.model_class("nope")


def test_builtin_kind_cannot_be_rebound():
    class Other:
        @classmethod
        def from_config(cls, config):  # pragma: no cover - never built
            return cls()

    with pytest.raises(ValueError, match="already registered"):
        registry.register_model_kind("mlp", Other)


def test_each_kind_round_trips_in_a_fresh_process(tmp_path):
    """An ensemble file loads in a process that imported nothing but the registry."""
    import torch

    from shrinklab.models.ensemble import EnsembleModel
    from shrinklab.models.network import MLShrinkageNetwork

    torch.manual_seed(0)
    members = [MLShrinkageNetwork(6, num_targets=3, anchors=None) for _ in range(2)]
    ens = EnsembleModel(members)
    path = registry.save_model(tmp_path / "e.pt", ens, [f"f{i}" for i in range(6)], ["a", "b", "c"])
    code = (
        "import sys, torch; from shrinklab.models.registry import load_model\n"
        f"m = load_model({str(path)!r}); x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))\n"
        "print(type(m).__name__, round(float(m.predict(x)[0].sum()), 10))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    assert out.stdout.split() == ["EnsembleModel", str(round(float(ens.predict(x)[0].sum()), 10))]
