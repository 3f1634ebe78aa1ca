"""data.subsets."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

__all__ = [
    "take",
]


# --------------------------------------------------------------------- builders
_SUBSET_FIELDS = (
    "features",
    "oracle_w",
    "alpha_star",
    "G",
    "c",
    "d",
    "loss_fsopt",
    "p",
    "n",
    "df",
    "difficulty",
    "sample_seed",
)


def take(data: Any, idx: Any) -> SimpleNamespace:
    """Rows ``idx`` of a training-set-like object, as a namespace with the array fields
    the trainer and the metrics use (``features, oracle_w, G, c, d, loss_fsopt`` and,
    when present, ``alpha_star, p, n, df, difficulty, sample_seed``)."""
    idx = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx, dtype=np.int64)
    out = {}
    for name in _SUBSET_FIELDS:
        v = data.get(name) if isinstance(data, Mapping) else getattr(data, name, None)
        if v is None:
            continue
        if torch.is_tensor(v):
            out[name] = v[torch.as_tensor(idx)]
        elif np.ndim(v) >= 1:
            out[name] = np.asarray(v)[idx]
    return SimpleNamespace(**out)
