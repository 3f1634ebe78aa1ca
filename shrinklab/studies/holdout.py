"""studies.holdout: the independent synthetic holdouts behind the training choices.

The choices of the loss normaliser λ (docs/decisions/0009-loss-l-over-d.md), the edge
weight (0010), the training p/n range (0011) and the family experts' gate (0014) were
scored on worlds that neither the pipeline's test set nor the public scenario grid
provide: a holdout drawn with :data:`HOLDOUT_SEED` (6,000 worlds, the pipeline's
generator settings) and, for the p/n range, a wide holdout with ``p/n`` up to
:data:`WIDE_RATIO_MAX` (:data:`WIDE_SEED`). Sets are drawn once and cached
(:func:`cached_worlds`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from shrinklab.data import dataset

__all__ = [
    "HOLDOUT_SEED",
    "HOLDOUT_SIZE",
    "WIDE_RATIO_MAX",
    "WIDE_SEED",
    "WIDE_SIZE",
    "cached_worlds",
    "holdout_set",
    "mean_norm_loss",
    "wide_holdout_set",
    "wide_scores",
]

HOLDOUT_SEED, HOLDOUT_SIZE = 777, 6000
WIDE_SEED, WIDE_SIZE, WIDE_RATIO_MAX = 779, 6000, 5.0


def cached_worlds(
    path: str | Path, n: int, seed: int, config: dict[str, Any], workers: int = 1
) -> dataset.TrainingSet:
    """``n`` synthetic worlds drawn with ``seed`` and generator ``config``
    (:func:`shrinklab.data.dataset.build_training_set`), cached at ``path`` (redrawn
    when the cached file was written by an older shrinklab)."""
    path = Path(path)
    if path.exists():
        try:
            return dataset.TrainingSet.load(path)
        except ValueError:  # written by an older shrinklab (other features): redraw
            pass
    ts = dataset.build_training_set(
        int(n), seed=int(seed), config=config, progress=False, threads=1, workers=workers
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ts.save(path)
    return ts


def holdout_set(
    cache_dir: str | Path,
    p_max: int,
    batch_size: int,
    n: int = HOLDOUT_SIZE,
    seed: int = HOLDOUT_SEED,
) -> dataset.TrainingSet:
    """The independent holdout (``p/n`` in the generator's default range)."""
    cfg = {"p_max": int(p_max), "batch_size": int(batch_size)}
    return cached_worlds(
        Path(cache_dir) / f"holdout_{n}_{seed}_{p_max}_{batch_size}.pt", n, seed, cfg
    )


def wide_holdout_set(
    cache_dir: str | Path,
    p_max: int,
    batch_size: int,
    n: int = WIDE_SIZE,
    seed: int = WIDE_SEED,
    ratio_max: float = WIDE_RATIO_MAX,
) -> dataset.TrainingSet:
    """The wide holdout: worlds with ``p/n`` up to ``ratio_max``."""
    cfg = {"p_max": int(p_max), "batch_size": int(batch_size), "ratio_max": float(ratio_max)}
    name = f"wide_{n}_{seed}_{ratio_max:g}_{p_max}_{batch_size}.pt"
    return cached_worlds(Path(cache_dir) / name, n, seed, cfg)


def mean_norm_loss(w: torch.Tensor, ts: Any, keep: torch.Tensor | None = None) -> float:
    """Mean ``L(w)/d`` (the Frobenius loss relative to the sample covariance's) over the
    worlds of ``ts`` (those where ``keep`` is true)."""
    loss = ts.quadratic_loss(w) / torch.as_tensor(ts.d).double()
    if keep is not None:
        loss = loss[keep]
    if loss.numel() == 0:
        raise ValueError("no world to average over")
    return float(loss.mean())


def wide_scores(model: Any, wide: dataset.TrainingSet, ratio: float = 2.0) -> dict[str, float]:
    """Mean ``L/d`` of ``model`` and of the best classical estimator (the lowest mean)
    on the worlds of ``wide`` with ``p/n > ratio`` (NaN when there is none)."""
    keep = (wide.p.double() / wide.n.double()) > float(ratio)
    if not keep.any():  # small p_max: n_min caps p/n
        return {"wide_n": 0, "wide_norm_loss": float("nan"), "wide_best_classical": float("nan")}
    with torch.no_grad():
        w = model.predict(wide.features).intensities.double()
    classical = [
        mean_norm_loss(cw.double(), wide, keep)
        for cw in dataset.classical_intensities(wide).values()
    ]
    return {
        "wide_n": int(keep.sum()),
        "wide_norm_loss": mean_norm_loss(w, wide, keep),
        "wide_best_classical": float(np.min(classical)),
    }
