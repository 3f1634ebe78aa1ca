"""Real returns turned into estimation windows, and global-minimum-variance weights.

For a rebalance date ``t`` (an integer position in the returns' index) the
*estimation window* is ``X = returns[t − window : t]`` (the ``window`` days strictly
before ``t``: what an investor knows at the close of day ``t − 1``) and the
*realised* returns are ``returns[t : t + horizon]`` (the holding period that
follows). :func:`build_windows` stacks every such pair of the same shape into
tensors ``X (B, window, p)`` and ``realised (B, horizon, p)``, together with the
sample covariance ``S (B, p, p)``, the shrinkage targets ``T (B, K, p, p)``
(:func:`shrinklab.core.targets.shrinkage_targets`), the features ``(B, F)``
(:func:`shrinklab.core.features.extract_features`) and the market regime known at
``t`` (the code of day ``t − 1`` from :func:`shrinklab.data.returns.market_regimes`, which
uses only data up to that day).

Leakage rules
-------------
* Rebalance dates ``t`` lie in ``[start, end]`` and so does the whole realised
  period: ``t + horizon − 1 ≤ end``. Windows for a fold's training period built
  with ``end`` = its last training date therefore never see validation or test
  returns, and validation windows never reach the test period.
* The estimation window lies before ``t``; by default it may reach back before
  ``start`` (that is the past — a validation window at the first validation date
  uses the preceding training days, as a real investor would).
  ``estimation_inside=True`` keeps it inside ``[start, end]`` too.

Asset subsets (data augmentation for fine-tuning, so that the network sees
several ``p``): with ``asset_subsets = m > 0`` each date also gets ``m`` random
subsets of the assets, of sizes drawn uniformly from ``[min_assets, p − 1]``
(NumPy ``default_rng(seed)``). Windows are grouped by ``p``; each group is one
:class:`WindowBatch`.

GMV weights
-----------
:func:`gmv_weights` returns ``w = Σ⁻¹1 / 1ᵀΣ⁻¹1``, the global minimum-variance
portfolio (Markowitz 1952; as used to evaluate covariance estimators by Engle &
Colacito, JBES 24, 2006, and Ledoit & Wolf, RFS 30, 2017), batched and
differentiable. Well-conditioned matrices (smallest eigenvalue above
``rcond · largest``) go through a Cholesky solve. Singular or ill-conditioned
ones (e.g. a zero-variance asset, or ``p > n`` sample covariances) use the
Moore–Penrose pseudo-inverse with the same relative cut-off, ``w ∝ Σ⁺1``: the
minimum-variance portfolio *within the range of Σ*, so that directions the
estimate claims are riskless (an artefact of the estimate) get no weight. If
``1ᵀΣ⁺1 = 0`` (e.g. ``Σ = 0``) the weights are equal, ``1/p``.
:func:`pad_assets` embeds windows of ``p`` assets in ``p_max`` (an inert diagonal
block that the masked solve ignores exactly), so that windows of every ``p`` can be
batched together (fine-tuning, :mod:`shrinklab.training.finetune`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.estimators import sample_covariance
from shrinklab.core.features import classical_intensities, features_from_parts, target_gram
from shrinklab.core.targets import TARGET_NAMES, shrinkage_targets
from shrinklab.core.validation import demean

__all__ = [
    "RealWindows",
    "WindowBatch",
    "WindowSampling",
    "build_windows",
    "gmv_weights",
    "pad_assets",
    "portfolio_returns",
    "realised_gmv_variance",
    "rebalance_positions",
    "split_windows",
]


DEFAULT_RCOND = 1e-12


# --------------------------------------------------------------------------- GMV weights
def _as_cov(cov: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(cov, torch.Tensor):
        C = cov if cov.is_floating_point() else cov.to(torch.float64)
    else:
        try:
            C = torch.as_tensor(np.asarray(cov, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cov must be numeric matrices: {exc}") from exc
    if C.ndim not in (2, 3) or C.shape[-1] != C.shape[-2] or C.shape[-1] == 0:
        raise ValueError(f"cov must be (p, p) or (B, p, p) square matrices, got {tuple(C.shape)}")
    if not bool(torch.isfinite(C).all()):
        raise ValueError("cov contains NaN or inf")
    batched = C.ndim == 3
    return (C if batched else C.unsqueeze(0)), batched


def gmv_weights(
    cov: Any, *, rcond: float = DEFAULT_RCOND, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Global minimum-variance weights ``Σ⁻¹1 / 1ᵀΣ⁻¹1`` of ``cov (p, p)`` or ``(B, p, p)``.

    Returns a torch tensor ``(p,)`` or ``(B, p)`` (dtype of a floating tensor input,
    float64 otherwise; device of the input) whose rows sum to one. Differentiable.
    Singular / ill-conditioned matrices (``λ_min ≤ rcond · λ_max``) use the
    pseudo-inverse ``Σ⁺1`` with relative cut-off ``rcond``; a zero result gives
    equal weights (see the module docstring).

    ``mask`` (``(p,)`` or ``(B, p)`` bool) marks the real assets of *padded* matrices:
    with ``cov = blockdiag(Σ, D)`` (real assets first or anywhere, no covariance
    between real and padding assets, ``D`` positive definite) the solve uses the
    mask instead of ``1``, ``x = cov⁻¹ m = [Σ⁻¹1; 0]``, so the padding assets get
    weight exactly 0 and the real ones the GMV weights of ``Σ``. This lets windows with
    different ``p`` share one batch.
    """
    if not rcond > 0:
        raise ValueError(f"rcond must be > 0, got {rcond}")
    C, batched = _as_cov(cov)
    C = 0.5 * (C + C.transpose(-1, -2))
    B, p, _ = C.shape
    if mask is None:
        ones = torch.ones(B, p, 1, dtype=C.dtype, device=C.device)
    else:
        m = torch.as_tensor(mask, device=C.device)
        m = m.unsqueeze(0) if m.ndim == 1 else m
        if tuple(m.shape) not in ((1, p), (B, p)):
            raise ValueError(f"mask must have shape ({p},) or ({B}, {p}), got {tuple(m.shape)}")
        ones = m.to(C.dtype).expand(B, p).unsqueeze(-1)
    with torch.no_grad():
        lam = torch.linalg.eigvalsh(C)
        top = lam[:, -1]
        ok = (top > 0) & (lam[:, 0] > rcond * top)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    bad = ~ok
    if bool(ok.any()):
        idx = ok.nonzero().flatten()
        L, info = torch.linalg.cholesky_ex(C[idx])
        good = info == 0
        if bool(good.any()):
            sel = idx[good]
            parts.append((sel, torch.cholesky_solve(ones[sel], L[good])))
        if not bool(good.all()):
            bad = bad.clone()
            bad[idx[~good]] = True
    if bool(bad.any()):
        idx = bad.nonzero().flatten()
        pinv = torch.linalg.pinv(C[idx], rtol=rcond, hermitian=True)
        parts.append((idx, pinv @ ones[idx]))
    x = torch.zeros(B, p, dtype=C.dtype, device=C.device)
    for idx, val in parts:
        x = x.index_put((idx,), val.squeeze(-1))
    total = x.sum(-1, keepdim=True)
    tiny = torch.finfo(C.dtype).tiny
    degenerate = total.abs() <= tiny
    equal = ones.squeeze(-1) / ones.squeeze(-1).sum(-1, keepdim=True).clamp_min(1.0)
    w = torch.where(degenerate, equal, x / torch.where(degenerate, torch.ones_like(total), total))
    return w if batched else w[0]


def pad_assets(
    S: torch.Tensor, T: torch.Tensor, realised: torch.Tensor, p_max: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad windows of ``p`` assets to ``p_max`` so that windows of any ``p`` share a batch.

    ``S (B, p, p)``, ``T (B, K, p, p)``, ``realised (B, h, p)`` →
    ``(S', T', R', mask)`` with ``S' = blockdiag(S, c I)``, ``T'_k = blockdiag(T_k, c I)``
    (``c = tr S / p``, or 1 if that is 0, so conditioning is unchanged in scale),
    zero realised returns for the padding assets and ``mask (B, p_max)`` True on the
    real ones. Every family member is then ``blockdiag(Σ̂(w), c I)`` and
    :func:`gmv_weights` with the mask gives the unpadded GMV weights (padding gets 0).
    """
    B, K, p, _ = T.shape
    if p > p_max:
        raise ValueError(f"p = {p} exceeds p_max = {p_max}")
    if p == p_max:
        mask = torch.ones(B, p, dtype=torch.bool, device=S.device)
        return S, T, realised, mask
    c = torch.diagonal(S, dim1=-2, dim2=-1).mean(-1)
    c = torch.where(c > 0, c, torch.ones_like(c))
    pad = torch.diag_embed(c[:, None].expand(B, p_max - p))
    S2 = S.new_zeros(B, p_max, p_max)
    S2[:, :p, :p] = S
    S2[:, p:, p:] = pad
    T2 = T.new_zeros(B, K, p_max, p_max)
    T2[:, :, :p, :p] = T
    T2[:, :, p:, p:] = pad[:, None]
    R2 = realised.new_zeros(B, realised.shape[1], p_max)
    R2[:, :, :p] = realised
    mask = torch.zeros(B, p_max, dtype=torch.bool, device=S.device)
    mask[:, :p] = True
    return S2, T2, R2, mask


def portfolio_returns(weights: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """Daily returns ``returns (B, h, p) @ weights (B, p)`` → ``(B, h)`` (weights held fixed)."""
    return torch.einsum("bhp,bp->bh", returns.to(weights.dtype), weights)


def realised_gmv_variance(
    cov: torch.Tensor,
    realised: torch.Tensor,
    *,
    demean: bool = True,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Realised variance ``(B,)`` of the GMV portfolio of ``cov (B, p, p)`` over ``realised
    (B, h, p)``: sample variance (``correction=1``) of the daily portfolio returns, or their
    mean square with ``demean=False`` (the convention of
    :func:`shrinklab.training.losses.realised_portfolio_variance`). ``mask``: see
    :func:`gmv_weights` (padded assets)."""
    r = portfolio_returns(gmv_weights(cov, mask=mask), realised)
    return r.var(dim=-1, correction=1) if demean else r.square().mean(-1)


# --------------------------------------------------------------------------- windows
@dataclass
class WindowBatch:
    """Windows that share ``(window, horizon, p)``; B of them, stacked.

    ``dates`` are the rebalance dates ``t`` (first day of the realised period),
    ``positions`` their integer positions in the returns' index, ``assets (B, p)``
    the column positions used by each window, ``last_dates`` the last realised day
    of each window.
    """

    dates: pd.DatetimeIndex
    positions: np.ndarray
    assets: np.ndarray
    X: torch.Tensor
    realised: torch.Tensor
    S: torch.Tensor
    targets: torch.Tensor
    features: torch.Tensor | None
    regime: torch.Tensor | None
    last_dates: pd.DatetimeIndex | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def p(self) -> int:
        return int(self.X.shape[-1])

    @property
    def window(self) -> int:
        return int(self.X.shape[-2])

    @property
    def horizon(self) -> int:
        return int(self.realised.shape[-2])

    def select(self, idx: Any) -> WindowBatch:
        """The windows at ``idx`` (ints, bool mask, slice)."""
        if isinstance(idx, slice):
            ii = np.arange(len(self))[idx]
        else:
            ii = np.asarray(idx)
            if ii.dtype == bool:
                ii = np.flatnonzero(ii)
        ii = ii.astype(np.int64)
        t = torch.as_tensor(ii, dtype=torch.long)

        def take(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, torch.Tensor):
                return v[t.to(v.device)]
            if isinstance(v, pd.Index):
                return v[ii]
            return v[ii]

        return WindowBatch(**{f.name: take(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> WindowBatch:
        """Tensors moved to ``device`` (and floating tensors cast to ``dtype`` if given)."""

        def move(v: Any) -> Any:
            if not isinstance(v, torch.Tensor):
                return v
            if dtype is not None and v.is_floating_point():
                return v.to(device=device, dtype=dtype)
            return v.to(device=device)

        return WindowBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})


@dataclass
class RealWindows:
    """All windows of one ``(window, horizon)``, grouped by number of assets ``p``.

    ``groups`` holds one :class:`WindowBatch` per ``p`` (largest first); iterate over
    the object to get them. ``columns`` are the asset names of the returns.
    """

    groups: list[WindowBatch]
    window: int
    horizon: int
    columns: list[str]
    target_names: tuple[str, ...] = field(default=TARGET_NAMES)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self) -> Iterator[WindowBatch]:
        return iter(self.groups)

    @property
    def dates(self) -> pd.DatetimeIndex:
        """Distinct rebalance dates, sorted."""
        return pd.DatetimeIndex(np.unique(np.concatenate([g.dates.values for g in self.groups])))

    @property
    def full(self) -> WindowBatch:
        """The group with every asset (``p = len(columns)``)."""
        for g in self.groups:
            if g.p == len(self.columns):
                return g
        raise ValueError("no window with the full asset universe")

    def restrict(self, start: Any = None, end: Any = None) -> RealWindows:
        """The windows whose rebalance date is ``≥ start`` and whose realised period ends
        ``≤ end`` (the same windows :func:`build_windows` gives for ``[start, end]`` when
        the rebalance grids agree, e.g. both start at the first date; computed once)."""
        groups = []
        for g in self.groups:
            if g.last_dates is None:
                raise ValueError("windows without last_dates cannot be restricted")
            keep = np.ones(len(g), dtype=bool)
            if start is not None:
                keep &= np.asarray(g.dates >= pd.Timestamp(start))
            if end is not None:
                keep &= np.asarray(g.last_dates <= pd.Timestamp(end))
            if keep.any():
                groups.append(g.select(keep))
        if not groups:
            raise ValueError(f"no window in [{start}, {end}]")
        return RealWindows(groups, self.window, self.horizon, list(self.columns), self.target_names)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> RealWindows:
        return RealWindows(
            [g.to(device, dtype) for g in self.groups],
            self.window,
            self.horizon,
            list(self.columns),
            self.target_names,
        )


def _position(index: pd.DatetimeIndex, date: Any, side: str) -> int:
    return int(index.searchsorted(pd.Timestamp(date), side=side))


def rebalance_positions(
    index: pd.DatetimeIndex,
    window: int,
    horizon: int = 21,
    step: int = 21,
    start: Any = None,
    end: Any = None,
    estimation_inside: bool = False,
) -> np.ndarray:
    """Integer positions ``t`` of the rebalance dates (see the module docstring).

    The first is the first day ``≥ start`` with ``window`` days of history before it
    (inside ``[start, end]`` too with ``estimation_inside``); then every ``step`` days
    while the realised period ``[t, t + horizon)`` ends on or before ``end``.
    """
    index = pd.DatetimeIndex(index)
    for name, v in (("window", window), ("horizon", horizon), ("step", step)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    if window < 2:
        raise ValueError(f"window must be >= 2 (a covariance needs 2 observations), got {window}")
    lo = 0 if start is None else _position(index, start, "left")
    hi = len(index) - 1 if end is None else _position(index, end, "right") - 1
    first = lo + window if estimation_inside else max(lo, window)
    last = hi - horizon + 1
    return np.arange(first, last + 1, step, dtype=np.int64)


def regime_codes(regimes: Any, index: pd.DatetimeIndex, positions: np.ndarray) -> np.ndarray:
    """Regime known at each rebalance date: the code of the day before it."""
    known = index[positions - 1]
    if isinstance(regimes, pd.Series):
        codes = regimes.reindex(known)
        if codes.isna().any():
            missing = known[codes.isna().to_numpy()][:3]
            raise ValueError(f"regimes has no code for dates {list(missing.date)}")
        return codes.to_numpy().astype(np.int64)
    arr = np.asarray(regimes)
    if arr.ndim != 1 or len(arr) != len(index):
        raise ValueError(
            "regimes must be a pandas Series indexed by date, or an array aligned with the "
            f"returns ({len(index)} entries); got shape {arr.shape}"
        )
    return arr[positions - 1].astype(np.int64)


def _make_batch(
    R: np.ndarray,
    index: pd.DatetimeIndex,
    pos: np.ndarray,
    assets: np.ndarray,
    window: int,
    horizon: int,
    regime: np.ndarray | None,
    with_features: bool,
) -> WindowBatch:
    rows_x = pos[:, None] + np.arange(-window, 0)[None, :]  # (B, window)
    rows_r = pos[:, None] + np.arange(horizon)[None, :]  # (B, horizon)
    X = torch.as_tensor(R[rows_x[:, :, None], assets[:, None, :]])
    realised = torch.as_tensor(R[rows_r[:, :, None], assets[:, None, :]])
    S = sample_covariance(X)
    T = shrinkage_targets(X)
    feats = None
    if with_features:
        # extract_features(X) from the pieces already computed (same result, targets once)

        Xc = demean(X)
        evals = torch.linalg.eigvalsh(S)
        feats = features_from_parts(X, Xc, S, evals, target_gram(S, T), classical_intensities(X))
    return WindowBatch(
        dates=index[pos],
        positions=pos,
        assets=assets,
        X=X,
        realised=realised,
        S=S,
        targets=T,
        features=feats,
        regime=None if regime is None else torch.as_tensor(regime, dtype=torch.long),
        last_dates=index[pos + horizon - 1],
    )


def build_windows(
    returns: pd.DataFrame,
    window: int,
    horizon: int = 21,
    step: int = 21,
    start: Any = None,
    end: Any = None,
    asset_subsets: int = 0,
    min_assets: int = 5,
    seed: int = 0,
    regimes: pd.Series | np.ndarray | None = None,
    *,
    estimation_inside: bool = False,
    features: bool = True,
) -> RealWindows:
    """Estimation windows and realised returns for every rebalance date (module docstring).

    Parameters
    ----------
    returns : DataFrame ``(days, assets)`` with an increasing DatetimeIndex, no NaN.
    window, horizon, step : estimation length, holding length, days between dates.
    start, end : bounds of the period; dates and realised returns stay inside.
    asset_subsets, min_assets, seed : random asset subsets per date (augmentation).
    regimes : market-regime codes per date (:func:`shrinklab.data.returns.market_regimes`);
        a window gets the code of the day before its rebalance date.
    estimation_inside : keep the estimation window inside ``[start, end]`` as well.
    features : compute :func:`shrinklab.core.features.extract_features` (``False``: None).
    """
    if not isinstance(returns, pd.DataFrame):
        raise ValueError(f"returns must be a pandas DataFrame, got {type(returns)!r}")
    index = returns.index
    if not isinstance(index, pd.DatetimeIndex):
        raise ValueError("returns need a DatetimeIndex")
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise ValueError("returns' index must be strictly increasing dates")
    R = returns.to_numpy(dtype=np.float64)
    if not np.isfinite(R).all():
        raise ValueError("returns contain NaN or inf; clean them first (shrinklab.data)")
    P = R.shape[1]
    if asset_subsets < 0 or int(asset_subsets) != asset_subsets:
        raise ValueError(f"asset_subsets must be a non-negative integer, got {asset_subsets}")
    if asset_subsets and not 1 <= min_assets < P:
        raise ValueError(f"min_assets must be in [1, {P - 1}] for asset subsets, got {min_assets}")
    pos = rebalance_positions(index, window, horizon, step, start, end, estimation_inside)
    if len(pos) == 0:
        raise ValueError(
            f"no rebalance date in [{start}, {end}] with {window} days of history and "
            f"{horizon} realised days ({len(index)} days of returns)"
        )
    codes = None if regimes is None else regime_codes(regimes, index, pos)

    rng = np.random.default_rng(seed)
    by_p: dict[int, tuple[list[int], list[np.ndarray]]] = {
        P: (list(range(len(pos))), [np.arange(P)] * len(pos))
    }
    for i in range(len(pos)):
        for _ in range(int(asset_subsets)):
            k = int(rng.integers(min_assets, P))
            cols = np.sort(rng.choice(P, size=k, replace=False))
            by_p.setdefault(k, ([], []))
            by_p[k][0].append(i)
            by_p[k][1].append(cols)
    groups = []
    for k in sorted(by_p, reverse=True):
        rows, cols = by_p[k]
        rows_a = np.asarray(rows, dtype=np.int64)
        groups.append(
            _make_batch(
                R,
                index,
                pos[rows_a],
                np.stack(cols).astype(np.int64),
                window,
                horizon,
                None if codes is None else codes[rows_a],
                features,
            )
        )
    return RealWindows(groups, int(window), int(horizon), [str(c) for c in returns.columns])


@dataclass(frozen=True)
class WindowSampling:
    """How the real windows of walk-forward folds are drawn: each estimation window is
    followed by ``horizon`` realised days; a training window every ``step`` days, each
    date with ``asset_subsets`` random asset subsets of at least ``min_assets`` assets
    (drawn with ``seed``; 0: the full universe only); a validation window (full
    universe) every ``val_step`` days.

    The keyword arguments of :func:`shrinklab.training.finetune.walk_forward_finetune`
    and :func:`shrinklab.studies.folds.real_folds`, with one set of defaults."""

    horizon: int = 21
    step: int = 5
    val_step: int = 21
    asset_subsets: int = 0
    min_assets: int = 5
    seed: int = 0


def split_windows(
    returns: pd.DataFrame,
    split: Any,
    window: int,
    horizon: int = 21,
    step: int = 21,
    *,
    val_step: int | None = None,
    asset_subsets: int = 0,
    min_assets: int = 5,
    seed: int = 0,
    regimes: pd.Series | np.ndarray | None = None,
    features: bool = True,
) -> tuple[RealWindows, RealWindows]:
    """Training and validation windows of one walk-forward fold.

    ``split`` is a :class:`shrinklab.data.returns.Split` (``train``/``val`` integer positions).
    Training windows: dates and realised returns inside the training positions,
    with the random asset subsets. Validation windows: the full universe only, dates
    and realised returns inside the validation block (estimation windows may use the
    training days before it), every ``val_step`` days (default ``step``).
    """
    index = returns.index
    train, val = np.asarray(split.train), np.asarray(split.val)
    if len(train) == 0 or len(val) == 0:
        raise ValueError("split has an empty training or validation period")
    if np.any(np.diff(train) != 1) or np.any(np.diff(val) != 1):
        raise ValueError("split positions must be contiguous blocks")
    tr = build_windows(
        returns,
        window,
        horizon,
        step,
        start=index[train[0]],
        end=index[train[-1]],
        asset_subsets=asset_subsets,
        min_assets=min_assets,
        seed=seed,
        regimes=regimes,
        features=features,
    )
    va = build_windows(
        returns,
        window,
        horizon,
        step if val_step is None else val_step,
        start=index[val[0]],
        end=index[val[-1]],
        regimes=regimes,
        features=features,
    )
    return tr, va
