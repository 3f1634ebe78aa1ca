"""data.subsets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

__all__ = [
    "ARRAY_FIELDS",
    "array_fields",
    "take",
]


# --------------------------------------------------------------------- builders
#: The per-world array fields of a training-set-like object (one row per world) that
#: subsets and the ablation studies' variants carry over.
ARRAY_FIELDS: tuple[str, ...] = (
    "features",
    "oracle_w",
    "alpha_star",
    "G",
    "c",
    "d",
    "loss_fsopt",
    "intensities",
    "p",
    "n",
    "df",
    "difficulty",
    "family",
    "sample_seed",
)


# :func:`take` carries every array field but the family codes.
_SUBSET_FIELDS = tuple(name for name in ARRAY_FIELDS if name != "family")


def array_fields(data: Any, names: Sequence[str] = ARRAY_FIELDS) -> dict[str, Any]:
    """The fields ``names`` (default :data:`ARRAY_FIELDS`) that ``data`` (a mapping or an
    object with attributes) has and that are not ``None``, by name, in that order."""
    out = {}
    for name in names:
        v = data.get(name) if isinstance(data, Mapping) else getattr(data, name, None)
        if v is not None:
            out[name] = v
    return out


def take(data: Any, idx: Any) -> SimpleNamespace:
    """Rows ``idx`` of a training-set-like object, as a namespace with the array fields
    the trainer and the metrics use (``features, oracle_w, G, c, d, loss_fsopt`` and,
    when present, ``alpha_star, p, n, df, difficulty, sample_seed``)."""
    idx = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx, dtype=np.int64)
    out = {}
    for name, v in array_fields(data, _SUBSET_FIELDS).items():
        if torch.is_tensor(v):
            out[name] = v[torch.as_tensor(idx)]
        elif np.ndim(v) >= 1:
            out[name] = np.asarray(v)[idx]
    return SimpleNamespace(**out)
