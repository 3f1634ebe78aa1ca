"""studies.family_mixing: what training on every world family costs each family, and
the family experts behind the gate (docs/decisions/0014-family-experts-gate-0.7.md).

* :func:`mixing_table` — the pretraining network trained (as
  :func:`shrinklab.studies.training_variants.fit`) on subsets of the training worlds
  (:func:`subsets`: every family, one family alone, the factor worlds with one other
  family, every family but one) and scored on the independent holdout by the
  per-family ratio of its mean loss to the family's best classical estimator
  (:func:`shrinklab.evaluation.selection.family_ratios`; < 1 = better than every
  classical estimator). A family much better alone than in ``all`` pays for sharing.
* :func:`family_confusion` — whether the features tell the families apart: a
  gradient-boosted classifier (scikit-learn's histogram GBM, after Friedman, Annals of
  Statistics 29, 2001) trained on the training worlds, its holdout confusion matrix.
* :func:`gate_threshold_table` — the pipeline's gated model at each gate threshold:
  holdout per-family ratios, mean ``L/d``, share served by the experts and the
  selection grid.
* :func:`expert_fits` — one expert per family, trained on its family's worlds (plus a
  share of the others with ``others > 0``: misfire-robust experts,
  :func:`with_others`), a multi-seed ensemble each (Lakshminarayanan et al. 2017); put
  behind the library's gate (:class:`shrinklab.models.experts.GatedExpertModel`) they
  are the gated-experts study of decision 0014.

Neither the public scenario grid nor the pipeline's test set is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import confusion_matrix

from shrinklab.evaluation import selection
from shrinklab.models import experts
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.studies import selection_grid
from shrinklab.studies.training_variants import fit

__all__ = [
    "expert_fits",
    "family_confusion",
    "gate_threshold_table",
    "mixing_table",
    "restrict",
    "subsets",
    "with_others",
]


def subsets(
    families: Sequence[str], leave_out: Sequence[str] = ("dominant_factor",)
) -> dict[str, list[str]]:
    """Name → the training families of each fit of :func:`mixing_table`."""
    families = list(families)
    out = {"all": families}
    out |= {f"only {f}": [f] for f in families}
    out |= {f"factor + {f}": ["factor", f] for f in families if f != "factor"}
    out |= {f"all but {f}": [g for g in families if g != f] for f in leave_out if f in families}
    return out


def restrict(ts: Any, keep: Sequence[str]) -> Any:
    """The worlds of ``ts`` whose family is in ``keep``."""
    idx = np.flatnonzero(np.isin(np.asarray(ts.families), list(keep)))
    if idx.size == 0:
        raise ValueError(f"no world of the families {list(keep)}")
    return ts.subset(idx.tolist())


def with_others(ts: Any, family: str, fraction: float, seed: int) -> Any:
    """The worlds of ``family`` and a random ``fraction`` of the other worlds (seeded)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    f = np.asarray(ts.families)
    keep = (f == family) | (np.random.default_rng(seed).random(len(f)) < fraction)
    return ts.subset(np.flatnonzero(keep).tolist())


def expert_fits(
    net: Mapping[str, Any],
    train_kw: Mapping[str, Any],
    train_set: Any,
    valid_set: Any,
    families: Sequence[str],
    seeds: Sequence[int] = (1, 2, 3),
    others: float = 0.0,
) -> dict[str, EnsembleModel]:
    """Family → an ensemble of one network per seed trained on that family's worlds
    (and, with ``others > 0``, that share of the other worlds, drawn with the seed)."""
    if not seeds:
        raise ValueError("no seed")

    def worlds(ts: Any, fam: str, s: int) -> Any:
        return with_others(ts, fam, others, s) if others > 0 else restrict(ts, [fam])

    return {
        fam: EnsembleModel(
            [
                fit(net, train_kw, worlds(train_set, fam, s), worlds(valid_set, fam, s), s)
                for s in seeds
            ]
        )
        for fam in families
    }


def mixing_table(
    net: Mapping[str, Any],
    train_kw: Mapping[str, Any],
    train_set: Any,
    valid_set: Any,
    hold: Any,
    seed: int = 1,
    fits: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """One row per fit of ``fits`` (default :func:`subsets` of the training families):
    ``fit``, ``n_train`` and the holdout's per-family ``ratio_<family>``."""
    fits = subsets(sorted(set(train_set.families))) if fits is None else fits
    rows = []
    for name, keep in fits.items():
        tr, va = restrict(train_set, keep), restrict(valid_set, keep)
        model = fit(net, train_kw, tr, va, seed)
        with torch.no_grad():
            w = model.predict(hold.features).intensities.double()
        ratios = selection.family_ratios(hold.quadratic_loss(w).numpy(), hold)
        rows.append(
            {"fit": name, "n_train": len(tr), **{f"ratio_{f}": r for f, r in ratios.items()}}
        )
    return pd.DataFrame(rows)


def family_confusion(train_set: Any, hold: Any, seed: int = 0) -> pd.DataFrame:
    """Holdout confusion matrix (rows: true family, each row sums to 1) of a
    gradient-boosted classifier of the family from the features of ``train_set``."""
    clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
    clf.fit(np.asarray(train_set.features), np.asarray(train_set.families))
    labels = sorted(set(train_set.families))
    cm = confusion_matrix(
        np.asarray(hold.families),
        clf.predict(np.asarray(hold.features)),
        labels=labels,
        normalize="true",
    )
    return pd.DataFrame(cm, index=labels, columns=labels)


def gate_threshold_table(
    model: experts.GatedExpertModel,
    hold: Any,
    thresholds: Sequence[float],
    grid_reps: int = 100,
) -> pd.DataFrame:
    """One row per threshold: holdout per-family ratios and mean ``L/d``,
    ``share_experts`` (share of holdout worlds an expert serves) and, with
    ``grid_reps``, the selection grid's summary. ``model.threshold`` is restored."""
    if not isinstance(model, experts.GatedExpertModel):
        raise ValueError("the gate-threshold study needs a model with family experts")
    if not thresholds:
        raise ValueError("no threshold")
    kept, rows = model.threshold, {}
    try:
        for t in thresholds:
            model.threshold = float(t)
            name = f"threshold {float(t):g}"
            with torch.no_grad():
                fam = selection.family_loss_table({name: model}, hold).drop(columns="prial")
            row = fam.loc[name]
            row["share_experts"] = 1.0 - model.expert_share(hold.features)["general"]
            if grid_reps:
                sel = selection_grid.summary(selection_grid.score(model, grid_reps))
                row = pd.concat([row, pd.Series(sel)])
            rows[name] = row
    finally:
        model.threshold = kept
    return pd.DataFrame(rows).T
