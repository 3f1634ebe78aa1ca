"""studies.training_variants: pretraining variants scored on the independent holdout.

The pretraining configuration of ``params.yaml`` and variants of it (:data:`VARIANTS`:
regularisation, gate, multi-target expert, the loss normaliser λ of
docs/decisions/0009-loss-l-over-d.md, a curvature cap, the edge-world weight of 0010,
capacity) are trained exactly as notebook 02 trains the network (early stopping on
the validation set, one seed each) and scored on the independent holdout of
:mod:`shrinklab.studies.holdout` and on the selection grid
(:mod:`shrinklab.studies.selection_grid`); neither the public scenario grid nor the
pipeline's test set is used. :func:`variant_row` is the score of one fit:

* mean normalised Frobenius loss ``L(ŵ)/L(S)`` with its standard error;
* PRIAL over the holdout (ratio of means, Ledoit & Wolf 2022) with a delta-method SE;
* per world family the ratio of the mean loss to the family's best classical
  estimator (:func:`shrinklab.evaluation.selection.family_ratios`), its geometric mean
  ``geo_ratio`` and worst family;
* the selection grid's ``sel_fails`` and ``sel_mean_prial``.

:func:`summarise` averages over seeds and gives paired differences to the first
variant. :func:`ratio_max_row` scores one fit of the p/n-range study (0011).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinklab.core.features import FEATURE_NAMES, MULTI_TARGET_NAMES
from shrinklab.core.metrics import prial_with_se
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.evaluation import selection
from shrinklab.models.network import MLShrinkageNetwork, classical_anchors
from shrinklab.studies import holdout as holdouts
from shrinklab.studies import selection_grid
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train

__all__ = [
    "CURVATURE_CAP",
    "VARIANTS",
    "base_configs",
    "fit",
    "ratio_max_row",
    "summarise",
    "variant_row",
    "with_curvature_cap",
]

#: A TrainConfig-override key handled here, not by TrainConfig (:func:`with_curvature_cap`).
CURVATURE_CAP = "curvature_cap (cap, power)"


def anchors_without_multi_target() -> list[list[int]]:
    """The pipeline's anchors less the multi-target candidate (its features stay inputs)."""
    mt = {FEATURE_NAMES.index(f) for f in MULTI_TARGET_NAMES}
    return [a for a in classical_anchors(len(FEATURE_NAMES), len(TARGET_NAMES)) if a[0] not in mt]


#: name → (network overrides, TrainConfig overrides); the first is the reference.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "study (dropout 0.3, input dropout 0.1, intensity MSE 0.2601)": (
        {"dropout": 0.3, "input_dropout": 0.1},
        {"intensity_weight": 0.2601},
    ),
    "dropout 0.1, no input dropout, intensity MSE 0.2601": (
        {"dropout": 0.1, "input_dropout": 0.0},
        {"intensity_weight": 0.2601},
    ),
    "dropout 0.1, no input dropout, no intensity MSE": (
        {"dropout": 0.1, "input_dropout": 0.0},
        {"intensity_weight": 0.0},
    ),
    "dropout 0.1, no input dropout, softmax gate": (
        {"dropout": 0.1, "input_dropout": 0.0, "gate": "softmax"},
        {"intensity_weight": 0.2601},
    ),
    "dropout 0.1, no input dropout, sparsemax gate": (
        {"dropout": 0.1, "input_dropout": 0.0, "gate": "sparsemax"},
        {"intensity_weight": 0.2601},
    ),
    "dropout 0.1, no input dropout, sparsemax gate, no multi-target expert": (
        {"dropout": 0.1, "input_dropout": 0.0, "gate": "sparsemax", "anchors": "no_multi_target"},
        {"intensity_weight": 0.2601},
    ),
    # the loss normaliser (params.yaml pretrain.best_classical_weight): geo_ratio falls
    # monotonically with λ, so λ is chosen by sel_fails (then sel_mean_prial)
    "loss L/d only (λ = 0)": (
        {},
        {"loss_normaliser": "sample", "best_classical_weight": 0.0, "edge_weight": 1.0},
    ),
    **{
        f"loss L/d + {lam:g}·L/L_best": (
            {},
            {
                "loss_normaliser": "sample_and_best_classical",
                "best_classical_weight": lam,
                "gap_floor": 0.001,
            },
        )
        for lam in (0.01, 0.03, 0.1, 0.3, 1.0)
    },
    # down-weight the worlds whose loss is most sensitive to w (with_curvature_cap)
    **{
        f"curvature cap {cap:g}, power {pw:g}": ({}, {CURVATURE_CAP: (cap, pw)})
        for cap, pw in ((30.0, 1.0), (15.0, 1.0), (8.0, 0.5))
    },
    # the edge-case worlds (synthetic.EDGE_FAMILIES) weigh less in the objective
    **{
        f"edge worlds weight {wt:g}": ({}, {"edge_weight": wt})
        for wt in (1.0, 0.5, 0.25, 0.1, 0.05)
    },
    # capacity: the study chose [128, 64, 32] on 10,000 worlds and 12 epochs
    **{
        f"hidden {dims}": ({"hidden_dims": dims}, {})
        for dims in ([256, 128, 64], [512, 256, 128], [256, 256, 128, 64])
    },
}

_TRAIN_KEYS = (
    "lr weight_decay epochs batch_size patience curriculum intensity_weight matrix_weight "
    "spectrum_weight uncertainty_weight clip_norm"
).split()
_OPTIONAL_KEYS = ("loss_normaliser", "best_classical_weight", "gap_floor", "edge_weight")


def base_configs(pretrain: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Network and TrainConfig keyword arguments of the ``pretrain`` section of
    ``params.yaml``."""
    net = {
        "hidden_dims": pretrain["hidden_dims"],
        "dropout": pretrain["dropout"],
        "input_dropout": pretrain["input_dropout"],
        "use_attention": pretrain["attention"],
        "gate": pretrain.get("gate", "softmax"),
    }
    train_kw = {k: pretrain[k] for k in _TRAIN_KEYS}
    return net, train_kw | {k: pretrain[k] for k in _OPTIONAL_KEYS if k in pretrain}


def with_curvature_cap(ts: Any, cap: float, power: float) -> Any:
    """``ts`` whose worlds are trained with ``L/(d·e)`` instead of ``L/d``,
    ``e = max(1, ‖G‖₂ / (cap·d))^power`` (``‖G‖₂``: the largest curvature of the loss in
    ``w``): ``G`` and ``c`` are divided by ``e`` and ``d`` kept, so that the trainer's
    ``L/d`` becomes ``L/(d·e)`` plus a per-world constant, which changes no gradient
    and no early-stopping choice. The oracle labels are unchanged."""
    if not (cap > 0 and power >= 0):
        raise ValueError(f"cap must be > 0 and power >= 0, got {cap}, {power}")
    G = torch.as_tensor(ts.G)
    c = torch.as_tensor(ts.c)
    d = torch.as_tensor(ts.d).double()
    e = (torch.linalg.matrix_norm(G.double(), ord=2) / (cap * d)).clamp_min(1.0) ** power
    return dataclasses.replace(
        ts, G=(G.double() / e[:, None, None]).to(G.dtype), c=(c.double() / e[:, None]).to(c.dtype)
    )


def fit(
    net: Mapping[str, Any], train_kw: Mapping[str, Any], train_set: Any, valid_set: Any, seed: int
) -> MLShrinkageNetwork:
    """Train one network (``net``: its keyword arguments, ``anchors="no_multi_target"``
    for :func:`anchors_without_multi_target`; ``train_kw``: TrainConfig overrides plus
    the optional :data:`CURVATURE_CAP`) on CPU with early stopping on ``valid_set``."""
    train_kw, net = dict(train_kw), dict(net)
    if CURVATURE_CAP in train_kw:
        cap, power = train_kw.pop(CURVATURE_CAP)
        train_set = with_curvature_cap(train_set, cap, power)
        valid_set = with_curvature_cap(valid_set, cap, power)
    if net.get("anchors") == "no_multi_target":
        net["anchors"] = anchors_without_multi_target()
    torch.manual_seed(int(seed))
    model = MLShrinkageNetwork(
        input_dim=int(np.shape(train_set.features)[1]), num_targets=len(TARGET_NAMES), **net
    )
    cfg = TrainConfig(**train_kw, seed=int(seed), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        train(model, train_set, valid_set, cfg, out_dir=tmp)
    return model.eval()


def variant_row(model: Any, hold: Any, grid_reps: int = 100) -> tuple[dict[str, float], np.ndarray]:
    """The scores of one fit (module docstring) and its per-world ``L/d`` on ``hold``."""
    with torch.no_grad():
        w = model.predict(hold.features).intensities.double()
    loss = hold.quadratic_loss(w)
    nl = (loss / torch.as_tensor(hold.d).double()).numpy()
    ratios = selection.family_ratios(loss.numpy(), hold)
    prial, prial_se = prial_with_se(w, hold)
    row = {
        "norm_loss": float(nl.mean()),
        "norm_loss_se": float(nl.std(ddof=1) / np.sqrt(nl.size)),
        "prial": prial,
        "prial_se": prial_se,
        "geo_ratio": float(np.exp(np.mean(np.log(list(ratios.values()))))),
        "worst_family_ratio": max(ratios.values()),
        **{f"ratio_{f}": r for f, r in ratios.items()},
    }
    if grid_reps:
        row |= selection_grid.summary(selection_grid.score(model, grid_reps))
    return row, nl


def _se(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else np.nan


def summarise(rows: pd.DataFrame, norm: Mapping[tuple[str, int], np.ndarray]) -> pd.DataFrame:
    """Per variant (in the order of ``rows``): the means over seeds, the selection-grid
    failures summed over seeds, and the paired differences of ``norm_loss`` and of
    ``log geo_ratio`` to the first variant with their SEs over seeds (``norm``: the
    per-world ``L/d`` of each ``(variant, seed)``)."""
    names = list(dict.fromkeys(rows["variant"]))
    seeds = list(dict.fromkeys(rows["seed"]))
    ref = names[0]
    geo = rows.set_index(["variant", "seed"])["geo_ratio"]
    cols = [c for c in ("norm_loss", "prial", "geo_ratio", "sel_mean_prial") if c in rows]
    out = rows.groupby("variant", sort=False)[cols].mean()
    if "sel_fails" in rows:
        out["sel_fails_all_seeds"] = rows.groupby("variant", sort=False)["sel_fails"].sum()
    d_norm = {k: [float((norm[k, s] - norm[ref, s]).mean()) for s in seeds] for k in names}
    d_geo = {k: [float(np.log(geo[k, s] / geo[ref, s])) for s in seeds] for k in names}
    out["delta_norm_loss_vs_first"] = [np.mean(d_norm[k]) for k in out.index]
    out["delta_se_over_seeds"] = [_se(d_norm[k]) for k in out.index]
    out["delta_log_geo_ratio_vs_first"] = [np.mean(d_geo[k]) for k in out.index]
    out["delta_log_geo_se"] = [_se(d_geo[k]) for k in out.index]
    return out


def ratio_max_row(
    model: Any, hold: Any, wide: Any, grid_reps: int = 100
) -> tuple[dict[str, float], pd.DataFrame]:
    """One fit of the p/n-range study: holdout mean ``L/d`` and per-family ratios, the
    wide holdout's ``p/n > 2`` scores (:func:`shrinklab.studies.holdout.wide_scores`)
    and the selection + wide grids (:func:`shrinklab.studies.selection_grid.grid_scores`)."""
    with torch.no_grad():
        fam = selection.family_loss_table({"m": model}, hold).drop(columns="prial").loc["m"]
    scores, table = selection_grid.grid_scores(model, grid_reps)
    return {**fam.to_dict(), **holdouts.wide_scores(model, wide), **scores}, table
