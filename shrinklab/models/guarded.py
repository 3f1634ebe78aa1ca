"""Experts that serve only behind a guard in the deployed soft mixture (decision 0058:
docs/decisions/0058-toeplitz-expert-sure-and-in-range.md).

A *guarded expert* is a family expert trained by the ensemble stage's recipe for its
experts but kept out of ``ensemble.pt`` (whose switch, and every choice the compress
stage's rules make with it, stay as they were). The deployed form of ``final.pt``
(:func:`shrinklab.evaluation.compression.deployed_form`) gives it the gate's probability
of its family only where the guard is open: that probability exceeds ``threshold`` and
p/n is at most ``max_p_over_n`` (the training worlds' range; ``None``: no limit).
Elsewhere the probability stays with whichever module served the family before.

The ensemble stage writes them to one folder: ``guards.json`` (``{family: {threshold,
max_p_over_n}}``, always written, ``{}`` for none) and one model file per family
(``<family>.pt``, :func:`shrinklab.models.registry.save_model`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from shrinklab.models.registry import load_model, save_model

__all__ = [
    "GUARD_SPEC_KEYS",
    "INDEX_NAME",
    "checked_guard_spec",
    "guard_of",
    "load_guarded_experts",
    "save_guarded_experts",
]

GUARD_SPEC_KEYS = ("threshold", "max_p_over_n")
"""The keys of a guarded expert's guard as ``params.yaml`` states it
(``ensemble.guarded_experts``)."""

INDEX_NAME = "guards.json"


def checked_guard_spec(family: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` as a plain dict ``{threshold, max_p_over_n}``, with a clear error for
    missing or unknown keys, a threshold outside (0, 1) or a p/n limit that is not
    positive."""
    if not isinstance(spec, Mapping) or set(spec) != set(GUARD_SPEC_KEYS):
        got = sorted(spec) if isinstance(spec, Mapping) else type(spec).__name__
        raise ValueError(
            f"the guard of the {family!r} expert needs exactly the keys {GUARD_SPEC_KEYS}, "
            f"got {got}"
        )
    threshold, limit = float(spec["threshold"]), spec["max_p_over_n"]
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the guard threshold of {family!r} must be in (0, 1), got {threshold}")
    if limit is not None and not (math.isfinite(float(limit)) and float(limit) > 0):
        raise ValueError(f"max_p_over_n of {family!r} must be positive or null, got {limit}")
    return {"threshold": threshold, "max_p_over_n": None if limit is None else float(limit)}


def guard_of(spec: Mapping[str, Any], fallback: str | None) -> dict[str, Any]:
    """The guard of :class:`shrinklab.models.experts.GatedExpertModel` (its
    ``GUARD_KEYS``) for a checked ``spec``: the p/n limit as ``log p/n`` (the feature
    ``log_p_over_n``) and the given ``fallback`` family (``None``: the general model)."""
    limit = spec["max_p_over_n"]
    return {
        "threshold": float(spec["threshold"]),
        "max_log_ratio": None if limit is None else math.log(float(limit)),
        "fallback": fallback,
    }


def save_guarded_experts(
    directory: str | Path,
    experts: Mapping[str, nn.Module],
    specs: Mapping[str, Mapping[str, Any]],
    feature_names: Sequence[str],
    target_names: Sequence[str],
) -> Path:
    """Write ``experts`` (``{family: module}``) and their guards ``specs`` to
    ``directory`` (emptied of earlier model files first); returns it."""
    if set(experts) != set(specs):
        raise ValueError(
            f"experts {sorted(experts)} and guards {sorted(specs)} name different families"
        )
    checked = {str(f): checked_guard_spec(f, specs[f]) for f in sorted(specs)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.pt"):
        old.unlink()
    for family, module in experts.items():
        save_model(directory / f"{family}.pt", module, feature_names, target_names)
    (directory / INDEX_NAME).write_text(json.dumps(checked, indent=2, sort_keys=True) + "\n")
    return directory


def load_guarded_experts(directory: str | Path) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """``{family: (expert, guard spec)}`` from a folder :func:`save_guarded_experts`
    wrote, with a clear error when its index or a model file is missing."""
    directory = Path(directory)
    index = directory / INDEX_NAME
    if not index.is_file():
        raise FileNotFoundError(
            f"{index} not found: the ensemble stage writes the guarded experts there"
        )
    specs = json.loads(index.read_text())
    out = {}
    for family, spec in specs.items():
        path = directory / f"{family}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found ({index} lists {family!r})")
        out[family] = (load_model(path).eval(), checked_guard_spec(family, spec))
    return out
