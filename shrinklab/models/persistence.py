"""Reading model files: the raw payload, pretrained weights, and the feature schema."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinklab.core.features import FEATURE_NAMES, FEATURE_SCHEMA

__all__ = [
    "feature_schema_of",
    "load_model_payload",
    "load_pretrained_weights",
]


FORMAT_VERSION = 1


def feature_schema_of(feature_names: Sequence[str]) -> str:
    """Schema string of a feature list: ``shrinklab.core.features.FEATURE_SCHEMA`` when the
    names are exactly ``FEATURE_NAMES``, else ``"custom-<sha1 of the names>"``."""
    names = tuple(str(n) for n in feature_names)
    if tuple(FEATURE_NAMES) == names:
        return str(FEATURE_SCHEMA)
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
    return f"custom-{digest}"


# Config keys renamed since files were first written: old name -> current name. Files
# saved before the network's dropout knob was called ``dropout`` (e.g. the bundled
# final.pt) store ``dropout_rate``; they are read with the current name here, the one
# place every model file is read through.
_RENAMED_CONFIG_KEYS = {"dropout_rate": "dropout"}


def _current_config(config: Any) -> Any:
    """``config`` (nested dicts and lists) with the keys of :data:`_RENAMED_CONFIG_KEYS`
    renamed."""
    if isinstance(config, dict):
        return {_RENAMED_CONFIG_KEYS.get(k, k): _current_config(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_current_config(v) for v in config]
    return config


def load_model_payload(path: str | Path) -> dict[str, Any]:
    """The raw dictionary written by :func:`save_model` (tensors on CPU), its ``config``
    with renamed keys in their current name (:data:`_RENAMED_CONFIG_KEYS`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no model file at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "kind" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path} is not a shrinklab model file")
    if "config" in payload:
        payload["config"] = _current_config(payload["config"])
    return payload


def load_pretrained_weights(
    model: nn.Module, source: str | Path | dict[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Copy pretrained weights into ``model`` wherever names and shapes agree
    (the specification's transfer-learning step: "pre-trained values from synthetic data").

    ``source`` is a :func:`save_model` file, a plain ``state_dict`` file, or a
    ``state_dict``. Returns ``{"loaded": [...], "skipped": [...]}`` (skipped: present
    in ``model`` but missing or of another shape in the source). Raises ``ValueError``
    if nothing matches.
    """
    if isinstance(source, dict):
        state = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"no pretrained weights at {path}")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        state = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    own = model.state_dict()
    loaded, skipped = [], []
    new_state = {}
    for name, tensor in own.items():
        src = state.get(name)
        if src is not None and tuple(src.shape) == tuple(tensor.shape):
            new_state[name] = src.to(device=tensor.device, dtype=tensor.dtype)
            loaded.append(name)
        else:
            skipped.append(name)
    if not loaded:
        raise ValueError("no pretrained tensor matches the model (names or shapes differ)")
    model.load_state_dict(new_state, strict=False)
    return {"loaded": loaded, "skipped": skipped}
