"""Stored training samples: features, oracle labels and the O(K²) Frobenius statistics.

For each synthetic world ``(Σ, X)`` of :func:`shrinklab.data.synthetic.generate_batches`
:func:`build_training_set` stores

* ``features (N, F)`` float32 — :mod:`shrinklab.core.features` (schema
  :data:`shrinklab.core.features.FEATURE_SCHEMA`);
* the labels: multi-target oracle weights ``oracle_w (N, K)`` (exact simplex QP,
  :func:`shrinklab.core.estimators.solve_simplex_qp`) and ``alpha_star = Σ_k w*_k``;
* ``G (N, K, K)``, ``c (N, K)``, ``d (N,)`` of :func:`shrinklab.core.targets.quadratic_form`,
  so that ``‖Σ̂(w) − Σ‖²_F = wᵀGw − 2cᵀw + d`` costs O(K²) for any ``p``
  (``d`` is the sample covariance's loss);
* ``loss_fsopt`` — ``‖FSOPT − Σ‖²_F`` of the finite-sample optimal
  rotation-equivariant oracle ``U diag(uᵢᵀΣuᵢ) Uᵀ`` (Ledoit & Wolf 2012, Ann.
  Statist. 40(2)), and ``loss_lw`` — that of Ledoit & Wolf (2004, JMVA) linear
  shrinkage; both unnormalised (same units as ``d``), so
  ``PRIAL = 100 (E d − E L) / (E d − E loss_fsopt)``;
* ``intensities (N, 4)`` — the LW, OAS, constant-correlation and single-factor
  intensities at full precision (:func:`classical_intensities` writes these
  estimators, and QIS, as points ``w`` of the family);
* ``p, n, family, df, sample_seed, difficulty`` — enough to rebuild ``Σ``, ``X``,
  ``S`` and the targets bit-exactly (:meth:`TrainingSet.rebuild_matrices`,
  bucketed by ``p``, for losses that need the matrices).

The normalised Frobenius loss of intensities ``w`` is ``(wᵀGw − 2cᵀw + d) / d``
(:meth:`TrainingSet.normalised_loss`; 1 = no better than ``S``).

Per batch (shared ``(p, n)``; each chunk of a few to 128 samples is generated
and processed at once, so no batch-sized ``X`` is ever held) one sample
covariance, one ``eigh`` of ``S`` shared by the features (eigenvalues), the QIS
target and FSOPT (eigenvectors), the classical intensities in O(np + p²)
(:func:`shrinklab.core.estimators.shrinkage_intensities`), the K − 1 other targets, one
quadratic form and one batched QP are computed.  The QIS target is never formed:
it is ``U diag(δ) Uᵀ`` in the eigenbasis of ``S``, so its row of ``G`` and its
entry of ``c`` cost O(p²) (:func:`_quadratic_form_spectral`); FSOPT's ``uᵢᵀΣuᵢ``
come from the root of ``Σ`` the generator drew ``X`` with (one ``trmm``, or
O(p²k) for factor models; :func:`fsopt_loss_from_eigh`).  Besides the synthetic
generator only that product loops over samples in Python.  ``build_training_set(...,
workers=2)`` spreads the chunks over processes with identical results.
``bench/data_throughput.py`` times each part, one process and two workers.

Files (:meth:`TrainingSet.save` / :meth:`TrainingSet.load`) are a ``torch.save``
dict of tensors and plain metadata (``schema_version``, ``feature_schema``,
``feature_names``, ``target_names``, ``family_names``, the synthetic ``config``),
loaded with ``weights_only=True``; a schema mismatch is a ``ValueError``.

Over 600 lines on purpose: the training-set builder is one fused pass per batch (one
eigendecomposition feeding features, targets, labels and quadratic forms), kept in
one module so its memory and speed trade-offs can be read together.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shrinklab.core import estimators, features
from shrinklab.core.estimators import solve_simplex_qp
from shrinklab.core.features import (
    CLASSICAL_POINTS,
    FEATURE_NAMES,
    FEATURE_SCHEMA,
    INTENSITY_NAMES,
    schema_for,
)
from shrinklab.core.progress import report
from shrinklab.core.sample_stats import sample_stats, targets_from_stats
from shrinklab.core.targets import (
    TARGET_NAMES,
    gram,
    market_parts_from_cov,
    matvecs,
    qis_eigenvalues,
    quadratic_form_from_differences,
    quadratic_form_from_stack,
    row_times,
    target_rayleigh_quotients,
)
from shrinklab.core.validation import center
from shrinklab.data import synthetic

__all__ = [
    "SCHEMA_VERSION",
    "TrainingSet",
    "MatrixBucket",
    "classical_intensities",
    "normalised_frobenius",
    "build_training_set",
    "process_batch",
    "fsopt_loss_from_eigh",
]


if TYPE_CHECKING:
    import pandas as pd


# 3: same fields as 2, but the synthetic generator changed (float32 Haar draws and
# Z Lᵀ product, numpy χ²), and rebuild_matrices regenerates Σ and X from the seeds
# with the current generator: files of version 2 must be rebuilt, not reused.
# 4: same fields as 3; the training draws use a lower-triangular root of Σ (trmm), so
# X of a seed changed (same distribution), and S comes from one syrk per sample.
SCHEMA_VERSION: int = 4


# Batches are processed in chunks of about this many float64 elements of X and the
# targets (32 MB); with the shared eigh and O(np + p²) intensities the chunk size
# matters little (measured within 10 % from 4 MB to 64 MB at p = 50 and 200).
_CHUNK_ELEMENTS = 1 << 22


_CHUNK_MIN, _CHUNK_MAX = 4, 128


# Inside a chunk the returns are reduced in pieces of about this many elements (2 MB of
# float64, the L2 cache of one core): see _returns_stats.
_STATS_ELEMENTS = 1 << 18


# From this p on the eigendecomposition goes through numpy's LAPACK (see _eigh).
_NUMPY_EIGH_MIN_P = 128


# From this p on the FSOPT loss reads uᵀΣu off the generator's roots (one trmm or an
# O(p²k) product per sample) instead of one batched GEMM ΣU (see fsopt_loss_from_eigh).
_ROOT_FSOPT_MIN_P = 64


# The targets whose Rayleigh quotients uᵀT_ku targets.target_rayleigh_quotients returns.
_RAYLEIGH_TARGETS = ("identity", "diagonal", "constant_correlation", "single_factor")


# Tensor fields of a TrainingSet, with their stored dtype.
_FIELDS: dict[str, torch.dtype] = {
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
        for name, dtype in _FIELDS.items():
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
        return {k: getattr(self, k) for k in _FIELDS}

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
            "config": _plain_config(self.config),
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


def classical_intensities(ts: TrainingSet) -> dict[str, torch.Tensor]:
    """The classical estimators as intensities ``w (N, K)`` of the family, by estimator name.

    Ledoit–Wolf and OAS put their intensity on the identity target, the
    constant-correlation / single-factor shrinkers theirs on their target, and
    QIS is ``w = e_qis`` (Σ̂ = the QIS estimate); so
    ``ts.quadratic_loss(w)`` is each estimator's own Frobenius loss (tested).
    """
    out = {}
    N, K = ts.c.shape
    for name, (col, target) in CLASSICAL_POINTS.items():
        w = torch.zeros(N, K, dtype=torch.float64)
        k = ts.target_names.index(target)
        w[:, k] = 1.0 if col is None else ts.intensities[:, INTENSITY_NAMES.index(col)]
        out[name] = w
    return out


def normalised_frobenius(w: Any, ts: TrainingSet) -> torch.Tensor:
    """``(wᵀGw − 2cᵀw + d) / d`` per sample (same as ``ts.normalised_loss(w)``)."""
    return ts.normalised_loss(w)


def _plain_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config as plain python (dicts, floats, ints, str) for ``weights_only`` loading."""
    out: dict[str, Any] = {}
    for k, v in dict(cfg or {}).items():
        out[k] = {str(a): float(b) for a, b in v.items()} if isinstance(v, Mapping) else v
    return out


# --------------------------------------------------------------------------- building
def fsopt_loss_from_eigh(
    U: torch.Tensor, sigma: torch.Tensor, roots: list | None = None
) -> torch.Tensor:
    """``‖U diag(uᵢᵀΣuᵢ) Uᵀ − Σ‖²_F`` ``(B,)`` from the sample eigenvectors ``U (B, p, p)``.

    FSOPT of Ledoit & Wolf (2012, Ann. Statist. 40(2)).  With ``M = UᵀΣU`` the
    loss is the sum of squared off-diagonal entries of ``M`` (``U`` orthogonal),
    i.e. ``‖Σ‖²_F − Σ_i (uᵢᵀΣuᵢ)²`` (one ``p³`` product instead of two).  Where
    that difference cancels (below ``1e-6 ‖Σ‖²_F``) the squared off-diagonal
    entries of ``M`` are summed directly, so the result never loses more than
    ~1e-10 relative.

    ``roots`` (optional, one per sample, :attr:`shrinklab.data.synthetic.SyntheticBatch.roots`):
    a root of each ``Σ`` that gives ``uᵢᵀΣuᵢ = ‖Rᵀuᵢ‖²`` more cheaply than ``ΣU``
    (:func:`_quadratic_diagonal`: a ``trmm`` for a lower-triangular ``L``, ``O(p²k)``
    for factors ``(B, d)``); the same values up to round-off.
    """
    return _fsopt_parts(U, sigma, roots)[1]


def _fsopt_parts(
    U: torch.Tensor, sigma: torch.Tensor, roots: list | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uᵢᵀΣuᵢ (B, p), FSOPT loss (B,))``; see :func:`fsopt_loss_from_eigh`."""
    total = (sigma * sigma).sum((-2, -1))
    if roots is None:
        d = (U * (sigma @ U)).sum(-2)  # uᵢᵀ Σ uᵢ
    else:
        d = torch.stack([_quadratic_diagonal(U[i], r) for i, r in enumerate(roots)])
    loss = total - (d * d).sum(-1)
    close = loss < 1e-6 * total
    if bool(close.any()):
        idx = close.nonzero().flatten()
        M = U[idx].transpose(-1, -2) @ (sigma[idx] @ U[idx])
        M.diagonal(dim1=-2, dim2=-1).zero_()
        loss[idx] = (M * M).sum((-2, -1))
    return d, loss.clamp_min(0)


def _quadratic_diagonal(U: torch.Tensor, root: Any) -> torch.Tensor:
    """``diag(UᵀΣU)`` ``(p,)`` for ``U (p, p)`` and a root of ``Σ``.

    ``root`` is a lower-triangular ``L`` (``Σ = LLᵀ``): ``‖(UᵀL)ᵢ‖²``, ``UᵀL`` by one
    BLAS ``trmm`` (half the flops of the GEMM ``ΣU``); or factors ``(B (p, k), d (p,))``
    (``Σ = BBᵀ + diag(d²)``): ``‖(UᵀB)ᵢ‖² + Σ_j d_j² U_ji²`` in ``O(p²k)``.
    """
    if isinstance(root, tuple):
        b, dv = root
        P = U.transpose(-1, -2) @ b.to(U.dtype)
        return (P * P).sum(-1) + row_times(dv * dv, U * U)
    from scipy.linalg import blas

    # Uᵀ is U's buffer read in Fortran order when U is C-contiguous; Lᵀ likewise.
    ut = U.detach().cpu().numpy().T
    lt = root.to(U.dtype).cpu().numpy().T  # Lᵀ, upper triangular
    P = blas.dtrmm(1.0, lt, ut, side=1, lower=0, trans_a=1)  # Uᵀ (Lᵀ)ᵀ = UᵀL
    return torch.from_numpy(np.einsum("ij,ij->i", P, P)).to(U.device)


def process_batch(
    X: torch.Tensor,
    sigma: torch.Tensor,
    timings: dict[str, float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    roots: list | None = None,
) -> dict[str, torch.Tensor]:
    """Everything stored per sample for one batch sharing ``(p, n)`` (in cache-sized chunks).

    ``X (B, n, p)`` (float64, or float32 that is upcast exactly, piece by piece),
    ``sigma (B, p, p)`` float64 -> dict with ``features, oracle_w, alpha_star, G, c,
    d, loss_fsopt, loss_lw, intensities`` (computed in float64).  ``S`` and one
    ``eigh`` (its eigenvalues feed the features, its eigenvectors FSOPT) are
    computed once.
    If ``timings`` is a dict, the seconds spent in each part are added to it
    (keys ``cov, eigh, targets, quadratic_form, qp, intensities, features, fsopt``),
    measured with ``clock`` (e.g. ``time.process_time`` for CPU time).
    ``roots`` (optional): the root each ``X[i]`` was drawn with
    (:attr:`shrinklab.data.synthetic.SyntheticBatch.roots`); from ``p =
    _ROOT_FSOPT_MIN_P`` on the FSOPT loss uses them (:func:`fsopt_loss_from_eigh`).
    """
    B, n, p = X.shape
    step = _chunk_size(n, p)
    if roots is not None and len(roots) != B:
        raise ValueError(f"roots has {len(roots)} entries for a batch of {B}")
    if B > step:  # keep the (B, K, p, p) temporaries cache-sized
        parts = [
            process_batch(
                X[s : s + step],
                sigma[s : s + step],
                timings,
                clock,
                None if roots is None else roots[s : s + step],
            )
            for s in range(0, B, step)
        ]
        return {k: torch.cat([q[k] for q in parts]) for k in parts[0]}
    clock = _Clock(timings, clock)
    S, sf_parts, i_stats, f_stats = _returns_stats(X, clock)
    evals, U = _eigh(S)
    clock("eigh")
    extras: dict = {}
    fsopt_roots = roots if p >= _ROOT_FSOPT_MIN_P else None
    if bool((torch.diagonal(S, dim1=-2, dim2=-1) == 0).any()):  # constant columns
        G, c, d = _quadratic_form_explicit(S, sigma, n, sf_parts, (evals, U), extras, clock)
        loss_fsopt = fsopt_loss_from_eigh(U, sigma, fsopt_roots)
        clock("fsopt")
    else:
        G, c, d, loss_fsopt = _quadratic_form_spectral(
            S, sigma, n, sf_parts, (evals, U), extras, clock, fsopt_roots
        )
    w = solve_simplex_qp(G, c)
    clock("qp")
    k_cc, k_sf = TARGET_NAMES.index("constant_correlation"), TARGET_NAMES.index("single_factor")
    inten = estimators.intensities_from_stats(  # γ̂ = ‖S − F‖² from G's diagonal
        i_stats,
        S,
        (None, extras["rbar"], None, sf_parts),
        gamma=(G[:, k_cc, k_cc], G[:, k_sf, k_sf]),
    )
    clock("intensities")
    feats = features.features_from_stats(f_stats, S, evals, G, inten)
    clock("features")
    s_lw = inten[:, 0]
    loss_lw = s_lw * s_lw * G[:, 0, 0] - 2 * s_lw * c[:, 0] + d
    return {
        "features": feats,
        "oracle_w": w,
        "alpha_star": w.sum(-1),
        "G": G,
        "c": c,
        "d": d,
        "loss_fsopt": loss_fsopt,
        "loss_lw": loss_lw,
        "intensities": inten,
    }


def _quadratic_form_explicit(S, sigma, n, sf_parts, eig, extras, clock):
    """``G, c, d`` from the K target matrices and ``Σ`` (:func:`quadratic_form_from_stack`)."""
    B, p = S.shape[0], S.shape[-1]
    K = len(TARGET_NAMES)
    stack = torch.empty(B, K + 1, p, p, dtype=S.dtype, device=S.device)  # [T_1..T_K, Σ]
    targets_from_stats(S, n, sf_parts, eig, extras, out=stack)  # QIS: this eigh
    clock("targets")
    stack[:, K].copy_(sigma)
    G, c, d = quadratic_form_from_stack(S, stack)  # overwrites the stack with [T_k − S, Σ − S]
    clock("quadratic_form")
    return G, c, d


def _quadratic_form_spectral(S, sigma, n, sf_parts, eig, extras, clock, roots):
    """``G, c, d`` and the FSOPT loss without forming the QIS target (no constant columns).

    QIS is ``U diag(δ) Uᵀ`` in the eigenbasis of ``S`` (``U`` from the shared eigh,
    :func:`shrinklab.core.targets.qis_eigenvalues`), so with ``eᵢ = δᵢ − λᵢ`` its entries are
    ``G_qq = Σ eᵢ²``, ``G_qk = Σ eᵢ uᵢᵀ(T_k − S)uᵢ`` (the other targets' Rayleigh
    quotients in ``O(p²)``, :func:`shrinklab.core.targets.target_rayleigh_quotients`) and
    ``c_q = Σ eᵢ (uᵢᵀΣuᵢ − λᵢ)`` (``uᵢᵀΣuᵢ`` is FSOPT's, :func:`_fsopt_parts`); the
    other entries are one Gram of ``[T_k − S, Σ − S]`` (:func:`quadratic_form_from_stack`).
    The same values as :func:`_quadratic_form_explicit` up to round-off (tested), without
    the ``p³`` product of the QIS target and one of the ``K + 1`` matrices of the Gram;
    the differences ``T_k − S`` are written in one pass each.
    """
    evals, U = eig
    B, p = S.shape[0], S.shape[-1]
    K = len(TARGET_NAMES)
    q = TARGET_NAMES.index("qis")
    others = tuple(k for k in TARGET_NAMES if k != "qis")
    if others != _RAYLEIGH_TARGETS:  # pragma: no cover - guards a change of TARGET_NAMES
        raise RuntimeError(f"targets {others} are not those of target_rayleigh_quotients")
    D = torch.empty(B, K, p, p, dtype=S.dtype, device=S.device)  # [T_k − S (k ≠ qis), Σ − S]
    targets_from_stats(S, n, sf_parts, None, extras, out=D, names=others, minus=S)
    clock("targets")
    torch.sub(sigma, S, out=D[:, K - 1])
    G_o, c_o, d = quadratic_form_from_differences(D)
    clock("quadratic_form")
    d_sigma, loss_fsopt = _fsopt_parts(U, sigma, roots)
    clock("fsopt")
    e = qis_eigenvalues(evals, n) - evals
    A = target_rayleigh_quotients(S, U, extras["rbar"], sf_parts) - evals.unsqueeze(1)
    g_q = (A * e.unsqueeze(1)).sum(-1)  # (B, K − 1)
    idx = torch.tensor([i for i in range(K) if i != q])
    G = torch.empty(B, K, K, dtype=S.dtype, device=S.device)
    G[:, idx.unsqueeze(-1), idx] = G_o
    G[:, q, idx] = g_q
    G[:, idx, q] = g_q
    G[:, q, q] = (e * e).sum(-1)
    c = torch.empty(B, K, dtype=S.dtype, device=S.device)
    c[:, idx] = c_o
    c[:, q] = (e * (d_sigma - evals)).sum(-1)
    clock("targets")
    return G, c, d, loss_fsopt


def _eigh(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh(S)`` (ascending) for symmetric ``S (B, p, p)``.

    On CPU from ``p = _NUMPY_EIGH_MIN_P`` on through numpy's LAPACK (OpenBLAS
    ``dsyevd``, each matrix on its own): measured 2.68 ms against torch's (MKL)
    2.92 ms per ``200 × 200`` matrix on the project's AMD CPU (1.64 against 1.79 at
    p = 160, equal at 120, slower below); the same decomposition up to round-off.
    """
    if S.device.type != "cpu" or S.shape[-1] < _NUMPY_EIGH_MIN_P:
        return torch.linalg.eigh(S)
    w, v = np.linalg.eigh(S.numpy())
    return torch.from_numpy(w), torch.from_numpy(v)


def _returns_stats(X: torch.Tensor, clock: _Clock) -> tuple[torch.Tensor, dict, dict, dict]:
    """``S`` and every sum over the returns that the rest of :func:`process_batch` needs.

    The returns are demeaned and reduced in pieces of about :data:`_STATS_ELEMENTS`
    elements (one sample at p = 200), so that each piece of ``Xc`` and its
    temporaries (``Xc²``, ``Xc³``) stay in cache while they are read several
    times; only ``S`` and vectors of length ``n`` or ``p`` leave the loop.
    ``Xc²`` is formed once (:func:`_center_squares`) and shared by the check for
    constant columns, the features and the intensities.
    ``S = XcᵀXc / n`` is one ``syrk`` per sample (:func:`shrinklab.core.targets.gram`).
    Returns ``(S, market parts, intensity stats, feature stats)`` (see
    :func:`shrinklab.core.targets.market_parts`, :func:`shrinklab.core.estimators.intensity_stats`,
    :func:`shrinklab.core.features.feature_stats`).
    """
    B, n, p = X.shape
    step = max(1, _STATS_ELEMENTS // (n * p))
    S = torch.empty(B, p, p, dtype=torch.float64, device=X.device)
    pieces = []
    for s in range(0, B, step):
        Xc, Y2, ssq = _center_squares(X[s : s + step].to(S.dtype))
        Sp = S[s : s + step]
        torch.div(gram(Xc), n, out=Sp)
        clock("cov")
        sd = torch.diagonal(Sp, dim1=-2, dim2=-1).clamp_min(0).sqrt()
        inv_sd = torch.where(sd > 0, 1.0 / torch.where(sd > 0, sd, 1.0), 0.0)
        covmkt = Sp.mean(-1)  # S 1/p = cov(x, m)
        # One pass over Xc: the market m = Xc 1/p and Xc σ, Xc covmkt, Xc σ⁻¹.
        m, x_sd, x_c, x_isd = matvecs(Xc, torch.full_like(sd, 1.0 / p), sd, covmkt, inv_sd)
        sf = market_parts_from_cov(Sp, m)
        clock("targets")
        fst = features.feature_stats(Xc, Sp, Y2, ssq / n, x_isd)  # reads Y2 = Xc²
        clock("features")
        y4 = fst["m4"].sum(-1) * n  # Σ_ti x_ti⁴
        ist = estimators.intensity_stats(Xc, Sp, sf["covmkt"], Y2, y4, (x_sd, x_c))
        clock("intensities")  # Y2 now holds Xc³
        pieces.append((sf, ist, fst))
    return (S, *(_cat_stats([q[i] for q in pieces]) for i in range(3)))


def _center_squares(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Xc, Xc∘Xc, Σ_t xc_ti²)``: :func:`shrinklab._validation.center` ``(X, cov=False)``,
    the squares and their column sums ``(B, p)``.

    ``center`` squares ``Xc`` to find the candidates for constant columns; here the
    squares are kept for the moments.  With no candidate (the same rule as
    ``center``'s) ``Xc = X − mean`` is ``center``'s result bit for bit; otherwise
    ``center`` itself handles the sample (tested on constant columns).
    """
    n = X.shape[-2]
    mean = X.mean(dim=-2, keepdim=True)
    Xc = X - mean
    Y2 = Xc * Xc
    ssq = Y2.sum(-2)
    bound = (4.0 * n * torch.finfo(X.dtype).eps * mean.squeeze(-2)) ** 2
    if bool((ssq / n <= bound).any()):
        Xc, _ = center(X, cov=False)
        Y2 = Xc * Xc
        ssq = Y2.sum(-2)
    return Xc, Y2, ssq


def _cat_stats(pieces: list[dict]) -> dict:
    """Concatenate per-piece dicts of tensors / tuples of tensors along dim 0 (other values: first)."""
    if len(pieces) == 1:
        return pieces[0]
    out = {}
    for k, v in pieces[0].items():
        if isinstance(v, torch.Tensor):
            out[k] = torch.cat([q[k] for q in pieces])
        elif isinstance(v, tuple):
            out[k] = tuple(torch.cat([q[k][i] for q in pieces]) for i in range(len(v)))
        else:
            out[k] = v
    return out


def _chunk_size(n: int, p: int) -> int:
    """Samples per chunk: about ``_CHUNK_ELEMENTS`` float64s of ``X`` and targets."""
    per_sample = n * p + len(TARGET_NAMES) * p * p
    return int(min(_CHUNK_MAX, max(_CHUNK_MIN, _CHUNK_ELEMENTS // per_sample)))


class _Clock:
    """Adds the time since the previous call to ``timings[name]`` (no-op without a dict)."""

    def __init__(self, timings: dict[str, float] | None, clock: Callable[[], float]) -> None:
        self.timings = timings
        self.clock = clock
        self.t = clock()

    def __call__(self, name: str) -> None:
        if self.timings is None:
            return
        now = self.clock()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


def _progress_enabled(progress: bool) -> bool:
    return bool(progress) and sys.stderr.isatty() and not os.environ.get("CI")


def build_training_set(
    n_samples: int,
    seed: int,
    config: synthetic.SyntheticConfig | Mapping[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
    workers: int = 1,
) -> TrainingSet:
    """Draw ``n_samples`` synthetic worlds and compute their training rows (batched).

    ``config`` is a :class:`shrinklab.data.synthetic.SyntheticConfig` or a dict of its
    fields (``None``: defaults); ``seed`` fixes everything (deterministic on CPU).
    A tqdm bar is shown when ``progress`` and stderr is a terminal and the
    environment variable ``CI`` is unset.  ``threads`` sets torch's intra-op
    threads for the duration of the build (restored after; ``None``: unchanged).
    On a machine shared with other jobs ``threads=1`` avoids OpenMP
    oversubscription, which was measured to slow the build down 40-fold
    (768 samples: 0.8 s with 1 thread, 34.6 s with 2, load average ~8 on 2 cores).

    ``workers > 1`` builds the batches in that many worker processes (``spawn``;
    each with ``threads`` intra-op threads, default 1): the batch plans
    (:func:`shrinklab.data.synthetic.plan_batches`) are drawn here and each worker
    generates and processes chunks of them, so the result is identical to
    ``workers=1`` run with the same thread count (tested).  The unit of work is
    a chunk of a batch (a few to 128 samples), so batches of different ``n``
    balance between the workers.  Starting the workers
    costs about a second (importing torch); worth it from a few thousand samples.

    Side effect: glibc malloc is set to keep freed memory for reuse
    (:func:`_keep_freed_memory`: ~15 % faster; resident memory stays at its peak).
    """
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cfg = synthetic.as_config(config)
    _keep_freed_memory()
    if int(workers) > 1:
        return _build_parallel(
            int(n_samples), int(seed), cfg, progress, int(workers), int(threads or 1)
        )
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with _blas_threads(threads):
            return _build(int(n_samples), int(seed), cfg, progress)
    finally:
        torch.set_num_threads(previous)


def _blas_threads(threads: int | None):
    """Context limiting numpy's / scipy's BLAS (OpenBLAS: ``syrk``, ``trmm``, ``dsyevd``
    of the builder) to ``threads`` threads like torch's (no-op for ``None``)."""
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads), user_api="blas")


def _batch_rows(batch: synthetic.SyntheticBatch) -> dict[str, torch.Tensor]:
    """The stored fields of one synthetic batch (see :func:`process_batch`)."""
    codes = {f: i for i, f in enumerate(synthetic.FAMILIES)}
    out = process_batch(batch.X, batch.sigma, roots=batch.roots)
    B = len(batch)
    out["p"] = torch.full((B,), batch.p, dtype=torch.int64)
    out["n"] = torch.full((B,), batch.n, dtype=torch.int64)
    out["family"] = torch.tensor([codes[f] for f in batch.family], dtype=torch.int64)
    out["df"] = batch.df
    out["sample_seed"] = batch.sample_seed
    out["difficulty"] = batch.difficulty
    return {k: out[k].to(_FIELDS[k]) for k in _FIELDS}


def _plan_rows(plan: synthetic.BatchPlan, cfg: synthetic.SyntheticConfig) -> dict:
    """Generate and process one planned batch, chunk by chunk.

    Each chunk of :func:`_chunk_size` samples is drawn (samples do not depend on
    their batch, :func:`shrinklab.data.synthetic.regenerate`) and processed at once,
    so no batch-sized ``X`` is ever allocated: the same rows as processing
    ``generate_batches``' whole batch, with cache-sized, reused memory.
    """
    parts = [_chunk_rows(sub, cfg) for sub in _chunk_plans(plan)]
    return {k: torch.cat([q[k] for q in parts]) for k in _FIELDS}


def _chunk_rows(sub: synthetic.BatchPlan, cfg: synthetic.SyntheticConfig) -> dict:
    """Generate and process one chunk-sized plan (the unit of work of the worker processes)."""
    return _batch_rows(_chunk_batch(sub, cfg))


def _chunk_rows_numpy(sub: synthetic.BatchPlan, cfg: synthetic.SyntheticConfig) -> dict:
    """:func:`_chunk_rows` as numpy arrays, for the worker processes: torch tensors sent
    between processes travel through shared memory, one open file descriptor each in
    the receiving process while the tensor lives, and a large training set (tens of
    thousands of samples, hundreds of chunks × 15 fields) then runs out of descriptors
    ("received 0 items of ancdata"); numpy arrays are pickled by value. The plan's
    tensors arrive as numpy arrays for the same reason (:func:`_plan_as_numpy`)."""
    sub = dataclasses.replace(
        sub, df=torch.from_numpy(sub.df), sample_seed=torch.from_numpy(sub.sample_seed)
    )
    return {k: v.numpy() for k, v in _chunk_rows(sub, cfg).items()}


def _plan_as_numpy(plan: synthetic.BatchPlan) -> synthetic.BatchPlan:
    """``plan`` with its tensors as numpy arrays, to send to a worker process."""
    return dataclasses.replace(plan, df=plan.df.numpy(), sample_seed=plan.sample_seed.numpy())


def _chunk_batch(
    sub: synthetic.BatchPlan, cfg: synthetic.SyntheticConfig
) -> synthetic.SyntheticBatch:
    """The synthetic batch of one chunk, ``X`` in float32 when the draws are (exactly
    the float64 values of :func:`shrinklab.data.synthetic.build_batch`, half the memory
    traffic; :func:`process_batch` upcasts them piece by piece), with the roots of
    ``Σ`` that ``X`` was drawn with (for the FSOPT loss)."""
    return synthetic.build_planned_batch(sub, cfg, torch.float32, keep_roots=True)


def _chunk_plans(plan: synthetic.BatchPlan) -> list[synthetic.BatchPlan]:
    """``plan`` split into consecutive plans of at most :func:`_chunk_size` samples."""
    step = _chunk_size(plan.n, plan.p)
    return [
        dataclasses.replace(
            plan,
            families=plan.families[s : s + step],
            df=plan.df[s : s + step],
            sample_seed=plan.sample_seed[s : s + step],
        )
        for s in range(0, len(plan.families), step)
    ]


def _init_worker(threads: int) -> None:
    """Worker set-up: intra-op threads (torch and numpy/scipy BLAS) and
    :func:`_keep_freed_memory`."""
    torch.set_num_threads(threads)
    _blas_threads(threads).__enter__()  # for the worker's lifetime
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    """Let glibc malloc keep freed memory for reuse (process-wide, idempotent).

    By default glibc returns large freed blocks to the OS, so every chunk's
    temporaries (tens of MB) are page-faulted in again; in this VM that was
    measured at 15-20 % of the build time.  Blocks below 256 MB are then served
    from the heap and up to 512 MB of free heap is kept (the process's resident
    memory does not shrink below its peak).  A no-op where glibc is absent.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _assemble(parts: list[dict[str, torch.Tensor]], cfg: synthetic.SyntheticConfig) -> TrainingSet:
    return TrainingSet(
        **{k: torch.cat([q[k] for q in parts]) for k in _FIELDS},
        config=_plain_config(dataclasses.asdict(cfg)),
    )


def _report_samples(done: int, total: int, step: int, workers: int = 1) -> None:
    """A progress line each time another tenth of the samples is built."""
    if done * 10 // total != (done - step) * 10 // total or done == total:
        report(f"training set: {done:,}/{total:,} samples ({workers} worker(s))")


def _build(
    n_samples: int, seed: int, cfg: synthetic.SyntheticConfig, progress: bool
) -> TrainingSet:
    from tqdm import tqdm

    parts: list[dict[str, torch.Tensor]] = []
    done = 0
    with tqdm(
        total=int(n_samples),
        desc="training samples",
        unit="sample",
        disable=not _progress_enabled(progress),
    ) as bar:
        for plan in synthetic.plan_batches(int(n_samples), int(seed), cfg):
            parts.append(_plan_rows(plan, cfg))
            bar.update(len(plan.families))
            done += len(plan.families)
            _report_samples(done, int(n_samples), len(plan.families))
    return _assemble(parts, cfg)


def _build_parallel(
    n_samples: int,
    seed: int,
    cfg: synthetic.SyntheticConfig,
    progress: bool,
    workers: int,
    threads: int,
) -> TrainingSet:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    # Tasks are chunks (not whole batches) so that batches of very different n balance.
    tasks = [s for plan in synthetic.plan_batches(n_samples, seed, cfg) for s in _chunk_plans(plan)]
    parts: list[dict[str, torch.Tensor]] = []
    done = 0
    with (
        ProcessPoolExecutor(
            max_workers=min(workers, len(tasks)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        ) as pool,
        tqdm(
            total=n_samples,
            desc=f"training samples ({workers} workers)",
            unit="sample",
            disable=not _progress_enabled(progress),
        ) as bar,
    ):
        tasks_np = [_plan_as_numpy(t) for t in tasks]
        for arrays in pool.map(_chunk_rows_numpy, tasks_np, [cfg] * len(tasks_np)):
            rows = {k: torch.from_numpy(v) for k, v in arrays.items()}
            parts.append(rows)
            bar.update(int(rows["p"].shape[0]))
            done += int(rows["p"].shape[0])
            _report_samples(done, n_samples, int(rows["p"].shape[0]), workers)
    return _assemble(parts, cfg)
