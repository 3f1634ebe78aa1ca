"""The stored training set: :class:`TrainingSet` (its fields, schema, files, subsets and
the matrices rebuilt from the seeds) and the classical estimators as points of the family.

The fields and the file format are documented in :mod:`shrinklab.data.dataset`, whose
:func:`~shrinklab.data.dataset.build_training_set` writes these sets (and from which
these names stay importable).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shrinklab.core.features import (
    CLASSICAL_POINTS,
    FEATURE_NAMES,
    FEATURE_SCHEMA,
    INTENSITY_NAMES,
    schema_for,
)
from shrinklab.core.sample_stats import sample_stats
from shrinklab.core.targets import (
    TARGET_NAMES,
)
from shrinklab.data import synthetic

__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "MatrixBucket",
    "TrainingSet",
    "classical_intensities",
    "normalised_frobenius",
    "plain_config",
]

if TYPE_CHECKING:
    import pandas as pd


# 3: same fields as 2, but the synthetic generator changed (float32 Haar draws and
# Z Lᵀ product, numpy χ²), and rebuild_matrices regenerates Σ and X from the seeds
# with the current generator: files of version 2 must be rebuilt, not reused.
# 4: same fields as 3; the training draws use a lower-triangular root of Σ (trmm), so
# X of a seed changed (same distribution), and S comes from one syrk per sample.
SCHEMA_VERSION: int = 4


# Tensor fields of a TrainingSet, with their stored dtype.
FIELDS: dict[str, torch.dtype] = {
    "features": torch.float32,
    "oracle_w": torch.float64,
    "alpha_star": torch.float64,
    "G": torch.float64,
    "c": torch.float64,
    "d": torch.float64,
    "loss_fsopt": torch.float64,
    "loss_lw": torch.float64,
    "p": torch.int64,
    "n": torch.int64,
    "family": torch.int64,
    "df": torch.float64,
    "sample_seed": torch.int64,
    "difficulty": torch.float64,
    "intensities": torch.float64,
}


@dataclass
class MatrixBucket:
    """Rebuilt matrices of the samples ``indices`` that share ``p``.

    ``S (b, p, p)`` sample covariance, ``sigma (b, p, p)`` true covariance,
    ``T (b, K, p, p)`` targets in :data:`shrinklab.core.targets.TARGET_NAMES` order;
    row ``i`` belongs to training sample ``indices[i]``.
    """

    indices: torch.Tensor
    p: int
    S: torch.Tensor
    sigma: torch.Tensor
    T: torch.Tensor


@dataclass
class TrainingSet:
    """Training samples (one row per synthetic world); see the module docstring.

    Tensor fields (N rows): ``features (N, F)`` float32; ``oracle_w (N, K)``,
    ``alpha_star``, ``G (N, K, K)``, ``c (N, K)``, ``d``, ``loss_fsopt``,
    ``loss_lw``, ``df`` (``inf`` = Gaussian), ``difficulty`` float64; ``p``,
    ``n``, ``family`` (index into ``family_names``), ``sample_seed`` int64;
    ``intensities (N, 4)`` float64, the classical intensities of
    :data:`shrinklab.core.features.INTENSITY_NAMES` (LW, OAS, CC, SF) at full precision.
    """

    features: torch.Tensor
    oracle_w: torch.Tensor
    alpha_star: torch.Tensor
    G: torch.Tensor
    c: torch.Tensor
    d: torch.Tensor
    loss_fsopt: torch.Tensor
    loss_lw: torch.Tensor
    p: torch.Tensor
    n: torch.Tensor
    family: torch.Tensor
    df: torch.Tensor
    sample_seed: torch.Tensor
    difficulty: torch.Tensor
    intensities: torch.Tensor
    config: dict[str, Any] = field(default_factory=dict)
    feature_names: tuple[str, ...] = FEATURE_NAMES
    target_names: tuple[str, ...] = TARGET_NAMES
    family_names: tuple[str, ...] = synthetic.FAMILIES

    def __post_init__(self) -> None:
        N = self.features.shape[0]
        F, K = len(self.feature_names), len(self.target_names)
        shapes = {
            "features": (N, F),
            "oracle_w": (N, K),
            "G": (N, K, K),
            "c": (N, K),
            "intensities": (N, len(INTENSITY_NAMES)),
        }
        for name, dtype in FIELDS.items():
            t = torch.as_tensor(getattr(self, name)).to(dtype)
            want = shapes.get(name, (N,))
            if tuple(t.shape) != want:
                raise ValueError(f"TrainingSet.{name} has shape {tuple(t.shape)}, expected {want}")
            setattr(self, name, t)
        self.feature_names = tuple(self.feature_names)
        self.target_names = tuple(self.target_names)
        self.family_names = tuple(self.family_names)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    # ----------------------------------------------------------------- views
    @property
    def families(self) -> list[str]:
        """Family name of each sample."""
        return [self.family_names[i] for i in self.family.tolist()]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields as a dict (e.g. for :mod:`shrinklab.models.compressed` / ensembles)."""
        return {k: getattr(self, k) for k in FIELDS}

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: sizes, family, tails, difficulty, labels and losses."""
        import pandas as pd

        cols: dict[str, Any] = {
            "p": self.p.numpy(),
            "n": self.n.numpy(),
            "family": self.families,
            "df": self.df.numpy(),
            "difficulty": self.difficulty.numpy(),
            "sample_seed": self.sample_seed.numpy(),
            "alpha_star": self.alpha_star.numpy(),
            **{f"w_{k}": self.oracle_w[:, i].numpy() for i, k in enumerate(self.target_names)},
            "loss_sample": self.d.numpy(),
            "loss_fsopt": self.loss_fsopt.numpy(),
            "loss_lw": self.loss_lw.numpy(),
            "loss_oracle": self.quadratic_loss(self.oracle_w).numpy(),
        }
        return pd.DataFrame(cols)

    def subset(self, indices: Any) -> TrainingSet:
        """The samples ``indices`` (integer index or boolean mask), as a new TrainingSet."""
        idx = torch.as_tensor(np.asarray(indices) if not torch.is_tensor(indices) else indices)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask must have shape ({len(self)},)")
            idx = idx.nonzero().flatten()
        idx = idx.to(torch.int64).reshape(-1)
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise ValueError(f"indices out of range for {len(self)} samples")
        return dataclasses.replace(self, **{k: v[idx] for k, v in self.tensors().items()})

    def split(self, fraction: float, seed: int = 0) -> tuple[TrainingSet, TrainingSet]:
        """Random split ``(rest, held_out)`` with ``round(fraction · N)`` samples held out."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed)))
        k = round(fraction * len(self))
        held = perm[:k].sort().values
        rest = perm[k:].sort().values
        return self.subset(rest), self.subset(held)

    # ----------------------------------------------------------------- losses
    def quadratic_loss(self, w: Any) -> torch.Tensor:
        """``‖Σ̂(w) − Σ‖²_F = wᵀGw − 2cᵀw + d`` per sample for intensities ``w (N, K)``."""
        wt = torch.as_tensor(w, dtype=torch.float64)
        if wt.shape != self.c.shape:
            raise ValueError(f"w must have shape {tuple(self.c.shape)}, got {tuple(wt.shape)}")
        return torch.einsum("bk,bkl,bl->b", wt, self.G, wt) - 2 * (self.c * wt).sum(-1) + self.d

    def normalised_loss(self, w: Any) -> torch.Tensor:
        """Frobenius loss normalised by the sample covariance's: ``(wᵀGw − 2cᵀw + d) / d``."""
        return self.quadratic_loss(w) / self.d

    # ----------------------------------------------------------------- matrices
    def rebuild_matrices(self, indices: Any = None) -> list[MatrixBucket]:
        """Regenerate ``S``, ``Σ`` and the targets of samples ``indices`` (default: all).

        Each sample is rebuilt bit-exactly from its seed with
        :func:`shrinklab.data.synthetic.regenerate` and the stored synthetic config;
        samples are returned in buckets of equal ``p`` (ascending), each with
        matrices stacked in the order of its ``indices``.
        """
        idx = torch.arange(len(self)) if indices is None else torch.as_tensor(indices)
        idx = idx.to(torch.int64).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"indices out of range for {len(self)} samples")
        cfg = synthetic.as_config(self.config or None)
        buckets = []
        for p in sorted(set(self.p[idx].tolist())):
            sel = idx[self.p[idx] == p]
            S_parts, sig_parts, T_parts, order = [], [], [], []
            for n in sorted(set(self.n[sel].tolist())):
                sub = sel[self.n[sel] == n]
                sig, xs = [], []
                for i in sub.tolist():
                    s, x = synthetic.regenerate(
                        int(self.sample_seed[i]),
                        p,
                        n,
                        self.family_names[int(self.family[i])],
                        float(self.df[i]),
                        cfg,
                    )
                    sig.append(s)
                    xs.append(x)
                stats = sample_stats(torch.stack(xs))  # one centring and eigh for S and T
                S_parts.append(stats.unscale(stats.S))
                T_parts.append(stats.unscale(stats.T))
                sig_parts.append(torch.stack(sig))
                order.append(sub)
            buckets.append(
                MatrixBucket(
                    indices=torch.cat(order),
                    p=int(p),
                    S=torch.cat(S_parts),
                    sigma=torch.cat(sig_parts),
                    T=torch.cat(T_parts),
                )
            )
        return buckets

    # ----------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``torch.save`` file (tensors + schema metadata); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "schema_version": SCHEMA_VERSION,
            "feature_schema": schema_for(self.feature_names),
            "feature_names": list(self.feature_names),
            "target_names": list(self.target_names),
            "family_names": list(self.family_names),
            "config": plain_config(self.config),
            "tensors": self.tensors(),
        }
        torch.save(payload, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainingSet:
        """Read a file written by :meth:`save`, checking the schema version, the feature
        schema (:data:`shrinklab.core.features.FEATURE_SCHEMA`) and the target names."""
        try:
            payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ValueError(f"{path} is not a shrinklab training-set file: {exc}") from exc
        if not isinstance(payload, dict) or "schema_version" not in payload:
            raise ValueError(f"{path} is not a shrinklab training-set file (no schema_version)")
        if payload["schema_version"] != SCHEMA_VERSION:
            raise ValueError(
                f"{path} has training-set schema version {payload['schema_version']}, this "
                f"code reads version {SCHEMA_VERSION}; rebuild it with build_training_set"
            )
        if payload.get("feature_schema") != FEATURE_SCHEMA:
            raise ValueError(
                f"{path} was built with feature schema {payload.get('feature_schema')!r} but "
                f"shrinklab.core.features has {FEATURE_SCHEMA!r} (features changed); rebuild it"
            )
        if tuple(payload["target_names"]) != TARGET_NAMES:
            raise ValueError(
                f"{path} has targets {payload['target_names']}, expected {TARGET_NAMES}"
            )
        return cls(
            **payload["tensors"],
            config=dict(payload["config"]),
            feature_names=tuple(payload["feature_names"]),
            target_names=tuple(payload["target_names"]),
            family_names=tuple(payload["family_names"]),
        )


def classical_intensities(ts: Any) -> dict[str, torch.Tensor]:
    """The classical estimators as intensities ``w (N, K)`` of the family, by estimator name,
    for a :class:`TrainingSet` or any set with its ``c`` and ``intensities`` rows (then
    ``target_names`` defaults to :data:`~shrinklab.core.targets.TARGET_NAMES`).

    Ledoit–Wolf and OAS put their intensity on the identity target, the
    constant-correlation / single-factor shrinkers theirs on their target, and
    QIS is ``w = e_qis`` (Σ̂ = the QIS estimate); so
    ``ts.quadratic_loss(w)`` is each estimator's own Frobenius loss (tested).
    """
    out = {}
    N, K = ts.c.shape
    names = tuple(getattr(ts, "target_names", TARGET_NAMES))
    for name, (col, target) in CLASSICAL_POINTS.items():
        w = torch.zeros(N, K, dtype=torch.float64)
        k = names.index(target)
        w[:, k] = 1.0 if col is None else ts.intensities[:, INTENSITY_NAMES.index(col)]
        out[name] = w
    return out


def normalised_frobenius(w: Any, ts: TrainingSet) -> torch.Tensor:
    """``(wᵀGw − 2cᵀw + d) / d`` per sample (same as ``ts.normalised_loss(w)``)."""
    return ts.normalised_loss(w)


def plain_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config as plain python (dicts, floats, ints, str) for ``weights_only`` loading."""
    out: dict[str, Any] = {}
    for k, v in dict(cfg or {}).items():
        out[k] = {str(a): float(b) for a, b in v.items()} if isinstance(v, Mapping) else v
    return out
