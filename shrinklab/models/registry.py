"""One registry of model kinds, and the one way to save and load a model file.

Every model class (network, ensemble, gated experts, int8) carries a ``model_kind``
string, a ``config`` dict and ``from_config(config)``. :data:`BUILTIN_KINDS` maps each
kind to the ``module:Class`` that implements it; the class is imported when a file of
that kind is loaded. Nothing registers itself as a side effect of an import, so this
module imports no model module and every model module may import it.
:func:`register_model_kind` adds a kind of your own (e.g. a research variant) at run
time.

File format (:func:`save_model`): ``kind``, ``config``, ``state_dict`` (CPU tensors),
``feature_names``, ``feature_schema``, ``target_names``, ``extra`` — plain values
only, so the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinklab.models.persistence import FORMAT_VERSION, feature_schema_of, load_model_payload

__all__ = [
    "BUILTIN_KINDS",
    "build_model",
    "config_of",
    "load_model",
    "member_kind",
    "model_class",
    "model_spec",
    "register_model_kind",
    "save_model",
]

BUILTIN_KINDS: dict[str, str] = {
    "mlp": "shrinklab.models.network:MLShrinkageNetwork",
    "ensemble": "shrinklab.models.ensemble:EnsembleModel",
    "gated_experts": "shrinklab.models.experts:GatedExpertModel",
    "int8": "shrinklab.models.compressed:QuantizedNetwork",
    "rie_network": "shrinklab.models.rie_network:RIENetwork",
    "domain_switch": "shrinklab.models.switched:SwitchedModel",
}
"""Model kind → ``module:Class``; imported on first use."""

_EXTRA_KINDS: dict[str, type] = {}


def register_model_kind(name: str, cls: type) -> None:
    """Add a model class of your own for :func:`save_model`/:func:`load_model`.

    ``cls`` must provide ``from_config(config)`` and instances must provide
    ``config`` (a plain dict) and ``state_dict()``. A built-in kind cannot be rebound.
    """
    if not hasattr(cls, "from_config"):
        raise ValueError(f"{cls!r} has no from_config(config) classmethod")
    existing = _EXTRA_KINDS.get(name) or (model_class(name) if name in BUILTIN_KINDS else None)
    if existing is not None and existing is not cls:
        raise ValueError(f"model kind {name!r} is already registered to {existing!r}")
    _EXTRA_KINDS[name] = cls


def model_class(kind: str) -> type:
    """The class of model kind ``kind``."""
    if kind in _EXTRA_KINDS:
        return _EXTRA_KINDS[kind]
    if kind not in BUILTIN_KINDS:
        known = sorted({*BUILTIN_KINDS, *_EXTRA_KINDS})
        raise ValueError(f"unknown model kind {kind!r}; known: {known}")
    module, _, name = BUILTIN_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def member_kind(model: nn.Module) -> str:
    """Registered kind name of ``model`` (its ``model_kind``, checked by exact type)."""
    kind = getattr(type(model), "model_kind", None)
    if kind is None:
        kind = next((k for k, c in _EXTRA_KINDS.items() if c is type(model)), None)
    if kind is None or kind not in {*BUILTIN_KINDS, *_EXTRA_KINDS} or model_class(kind) is not type(model):
        raise ValueError(
            f"{type(model).__name__} is not a registered model kind; call register_model_kind"
        )
    return kind


def config_of(model: nn.Module) -> dict[str, Any]:
    """The ``config`` dict of a model (``ValueError`` if it has none)."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, dict):
        raise ValueError(f"{type(model).__name__} has no config dict")
    return cfg


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"kind", "config"}`` of a registered model, from which :func:`build_model`
    rebuilds it untrained (how composite models store their parts)."""
    return {"kind": member_kind(model), "config": copy.deepcopy(config_of(model))}


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """The untrained model of a :func:`model_spec`."""
    return model_class(spec["kind"]).from_config(spec["config"])


def save_model(
    path: str | Path,
    model: nn.Module,
    feature_names: Sequence[str],
    target_names: Sequence[str],
    extra: dict[str, Any] | None = None,
    feature_schema: str | None = None,
) -> Path:
    """Write ``model`` to one file: ``kind``, ``config``, ``state_dict`` (CPU tensors),
    ``feature_names``, ``feature_schema``, ``target_names``, ``extra`` (plain Python
    values / tensors only, so that the file loads with ``weights_only=True``)."""
    kind = member_kind(model)
    feature_names = [str(n) for n in feature_names]
    target_names = [str(n) for n in target_names]
    config = dict(model.config)
    if "input_dim" in config and config["input_dim"] != len(feature_names):
        raise ValueError(
            f"model expects {config['input_dim']} features but {len(feature_names)} names given"
        )
    if "num_targets" in config and config["num_targets"] != len(target_names):
        raise ValueError(
            f"model has {config['num_targets']} targets but {len(target_names)} names given"
        )
    payload = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "feature_names": feature_names,
        "feature_schema": feature_schema or feature_schema_of(feature_names),
        "target_names": target_names,
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model(
    path: str | Path,
    expected_feature_schema: str | Sequence[str] | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a model written by :func:`save_model`, in eval mode.

    ``expected_feature_schema`` (a schema string such as
    ``shrinklab.core.features.FEATURE_SCHEMA``, or a list of feature names) must match
    the stored schema, else ``ValueError``. The returned model carries
    ``feature_names``, ``feature_schema``, ``target_names`` and ``extra`` attributes.
    """
    payload = load_model_payload(path)
    stored = payload.get("feature_schema")
    if expected_feature_schema is not None:
        if isinstance(expected_feature_schema, str):
            expected = expected_feature_schema
        else:
            expected = feature_schema_of(list(expected_feature_schema))
        if expected != stored:
            raise ValueError(
                f"feature schema mismatch: model {path} was trained on {stored!r}, "
                f"expected {expected!r}; re-extract features or retrain"
            )
    try:
        cls = model_class(payload["kind"])
    except ValueError as err:
        raise ValueError(f"{err} (in {path})") from None
    model = cls.from_config(payload["config"])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location)
    model.eval()
    model.feature_names = list(payload.get("feature_names", []))
    model.feature_schema = stored
    model.target_names = list(payload.get("target_names", []))
    model.extra = dict(payload.get("extra", {}))
    return model
