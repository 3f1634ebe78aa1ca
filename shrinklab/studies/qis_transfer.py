"""Decision 0064's study: part of a model's linear-target intensity moved to the QIS target
where the gate sees a diversified universe.

On universes of funds that hold the same stocks (almost no idiosyncratic variance) the
best classical estimator is mostly QIS (Ledoit & Wolf 2022, "Quadratic shrinkage for large
covariance matrices", Bernoulli 28) or OAS, and `final.pt` is behind it; most of
`final.pt`'s intensity there already goes to QIS, the rest to the linear targets
(identity, diagonal, constant correlation, single factor), which blur the small but real
spreads between funds (research log, "Exploration: confining the extra correlation
shrinkage"; decision 0063). :class:`QisTransfer` wraps a model: of the intensities
``w_k = α π_k`` it moves the share ``λ · P(diversified)`` of every linear target's to the
QIS target (the total ``α`` unchanged; ``P`` the gate's probability of the ``diversified``
family, so that windows the gate reads as stocks or synthetic families keep their
intensities):

    w'_k = (1 − λP) w_k  (k linear),   w'_qis = w_qis + λP Σ_k w_k.

:func:`fund_universes` draws fresh universes of funds from the 20 stocks (the worlds
study's diversified universes and Dirichlet portfolios, new seeds); :func:`rule_0064`
holds the rule of docs/decisions/0064-qis-transfer-on-diversified-windows.md. Chooses
nothing by itself; ``scripts/qis_transfer.py`` runs the parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data import returns as data
from shrinklab.data.universes import Universe
from shrinklab.models.network import ShrinkageOutput
from shrinklab.studies.fold_parts import fold_means, new_misses, relative_vols
from shrinklab.studies.worlds import diversified_returns_frame, portfolio_returns_frame

__all__ = ["QisTransfer", "fund_universes", "moved_intensities", "rule_0064"]

QIS = TARGET_NAMES.index("qis")
FUND_START = pd.Timestamp("2004-01-02")


def moved_intensities(w: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Intensities ``w (B, K)`` with the fraction ``share (B,)`` of every linear target's
    moved to the QIS target (module docstring); rows sum as before."""
    if w.ndim != 2 or w.shape[1] != len(TARGET_NAMES):
        raise ValueError(f"intensities must be (B, {len(TARGET_NAMES)}), got {tuple(w.shape)}")
    share = share.to(w.dtype)
    if share.shape != (w.shape[0],) or bool(((share < 0) | (share > 1)).any()):
        raise ValueError("share must be one value in [0, 1] per row")
    linear = [k for k in range(w.shape[1]) if k != QIS]
    out = w.clone()
    moved = w[:, linear] * share[:, None]
    out[:, linear] = w[:, linear] - moved
    out[:, QIS] = w[:, QIS] + moved.sum(1)
    return out


class QisTransfer:
    """A gated model (``gate``, ``_as_input``) whose ``predict`` moves ``lam · P(diversified)``
    of the linear intensities to QIS; every other attribute is the model's (its volatility
    timing included)."""

    def __init__(self, model: Any, lam: float) -> None:
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam!r}")
        if "diversified" not in list(getattr(model.gate, "families", [])):
            raise ValueError("the model's gate has no 'diversified' family")
        self._model, self.lam = model, float(lam)
        self._col = list(model.gate.families).index("diversified")

    def __getattr__(self, name: str) -> Any:
        # only reached for names the wrapper lacks; "_model" itself is missing while
        # unpickling (a worker process), where delegating would recurse
        if name == "_model" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._model, name)

    @torch.no_grad()
    def predict(self, features: Any, regime: Any = None) -> ShrinkageOutput:
        out = self._model.predict(features, regime)
        gate = self._model.gate
        was = gate.training
        gate.eval()
        try:
            p = gate(self._model._as_input(features)).double()[:, self._col]
        finally:
            gate.train(was)
        w = moved_intensities(out.intensities.double(), self.lam * p)
        alpha = w.sum(1)
        return ShrinkageOutput(alpha, w / alpha.clamp_min(1e-300)[:, None], out.log_var)


def fund_universes(seed: int, sizes: Sequence[int] = (6, 10, 20), draws: int = 3) -> list[Universe]:
    """Universes of funds from the 20 stocks before 2016, backtested from 2004: for each
    size ``p`` in ``sizes``, ``draws`` diversified universes (``p − 1`` long-only portfolios
    of 8–20 stocks and their index: :func:`shrinklab.studies.worlds.diversified_returns_frame`),
    and ``draws`` universes of 15 Dirichlet(0.5) portfolios; seeds ``seed + j`` (new seeds
    give universes no earlier study has seen)."""
    ret = data.before_test(data.load_returns())
    out, j = [], 0
    for p in sizes:
        for _ in range(draws):
            frame = diversified_returns_frame(ret, p, seed + j)
            out.append(Universe("funds", f"funds p={p} s={seed + j}", frame, FUND_START))
            j += 1
    for _ in range(draws):
        frame = portfolio_returns_frame(ret, 15, seed + j)
        out.append(Universe("dirichlet", f"dirichlet p=15 s={seed + j}", frame, FUND_START))
        j += 1
    return out


def rule_0064(
    funds: pd.DataFrame,
    folds: pd.DataFrame,
    french: pd.DataFrame,
    grids: pd.DataFrame,
    base: str = "final",
    cand: str = "transfer",
) -> dict[str, Any]:
    """The rule of docs/decisions/0064-qis-transfer-on-diversified-windows.md on the rows of
    :func:`shrinklab.evaluation.universe_backtest.fold_backtest` (``funds``: the fresh fund
    universes; ``folds``: fresh cross-universe folds; ``french``: Ken French's universes)
    and a grid table with one row per scenario and columns ``base``, ``cand``:

    1. funds: per universe, the mean over windows of ``(cand − base) / base`` (%); their
       mean below zero by more than one SE (over the universes);
    2. folds: no new miss — in every family × window where ``base``'s mean volatility is at
       or below the best classical estimator's, ``cand``'s is too;
    3. French: the mean over cells of ``cand``'s volatility relative to ``base``'s (%) not
       above zero by more than its SE (over the cells);
    4. grids: the mean PRIAL of ``cand`` at most 0.5 points below ``base``'s."""
    per_universe = fold_means(funds, cand, base)
    f_m = float(per_universe.mean())
    f_se = float(per_universe.std(ddof=1) / np.sqrt(len(per_universe)))
    held, misses = new_misses(folds, base, cand)
    fr = relative_vols(french, cand, base)
    fr_m, fr_se = float(fr.mean()), float(fr.std(ddof=1) / np.sqrt(len(fr)))
    drop = float(grids[base].mean() - grids[cand].mean())
    r1, r2, r3, r4 = f_m + f_se < 0, not misses, fr_m <= fr_se, drop <= 0.5
    return {
        "funds_rel_vol_pct": f_m, "funds_rel_vol_se": f_se, "funds_universes": len(per_universe),
        "funds_by_universe": per_universe.round(4).to_dict(),
        "folds_cells_at_or_below_best_base": held, "folds_new_misses": misses,
        "french_rel_vol_pct": fr_m, "french_rel_vol_se": fr_se,
        "grids_prial_base": float(grids[base].mean()), "grids_prial_cand": float(grids[cand].mean()),
        "grids_prial_drop": drop,
        "rule1_funds": bool(r1), "rule2_folds": bool(r2), "rule3_french": bool(r3),
        "rule4_grids": bool(r4), "adopt": bool(r1 and r2 and r3 and r4),
    }  # fmt: skip
