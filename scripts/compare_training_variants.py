"""Follow-up to the model-selection study: regularisation and loss variants of pretraining.

Trains the pretraining configuration of ``params.yaml`` and variants of it on the
pipeline's synthetic training set (early stopping on its validation set, exactly as
notebook 02), for several seeds, and scores each on an *independent* synthetic
holdout drawn here (seed 777, 6,000 worlds; neither the public scenario grid nor the
pipeline's test set is used for this choice):

* mean normalised Frobenius loss ``L(ŵ)/L(S)`` (every world weighs the same), with its
  standard error over the holdout worlds;
* PRIAL over the holdout (ratio of means, Ledoit & Wolf 2022) with a delta-method SE;
* the paired difference of the normalised loss against the first variant, averaged
  over seeds, with its standard error over seeds;
* the comparison the evaluation's goal makes, per world family of the holdout: the
  ratio of the mean loss to that of the best classical estimator of the family
  (Ledoit–Wolf, OAS, constant correlation, single factor, QIS; ratio of means, as the
  grid compares scenarios), its geometric mean over the families (``geo_ratio``,
  the criterion studied for ``best_classical_weight``) and its worst family;
* the same comparison on the *selection grid* (``scripts/selection_grid.py``: 10
  scenarios unlike the public grid, 100 replications, seed 2026): ``sel_fails``, the
  number of scenarios where the network is more than one standard error below the
  best classical estimator (the evaluation's goal), and ``sel_mean_prial``.

Run after ``dvc repro`` (needs ``data/processed``); ~2.5 min per fit on one core (60,000 worlds)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_training_variants.py [--seeds 1 11]
        [--variants NAME ...] [--n-train N] [--out CSV]

``--n-train N`` trains on the first N training worlds only (the data-size comparison
of params.yaml: ``--n-train 20000`` against the full set).

Variants (``name: overrides`` of TrainConfig / network arguments) are listed in
:data:`VARIANTS`; the first is the reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import selection_grid
import torch
import yaml

from shrinklab.core.features import FEATURE_NAMES, MULTI_TARGET_NAMES
from shrinklab.core.metrics import prial_with_se
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data import dataset
from shrinklab.evaluation import selection as experts
from shrinklab.models.network import MLShrinkageNetwork, classical_anchors
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT_SEED, HOLDOUT_SIZE = 777, 6000

# A TrainConfig-override key handled here, not by TrainConfig: see with_curvature_cap
CURVATURE_CAP = "curvature_cap (cap, power)"

# name -> (network overrides, TrainConfig overrides)


def _anchors_without_multi_target() -> list[list[int]]:
    """The pipeline's anchors less the multi-target candidate (its features stay inputs)."""
    mt = {FEATURE_NAMES.index(f) for f in MULTI_TARGET_NAMES}
    return [a for a in classical_anchors(len(FEATURE_NAMES), len(TARGET_NAMES)) if a[0] not in mt]


VARIANTS: dict[str, tuple[dict, dict]] = {
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
        {
            "dropout": 0.1,
            "input_dropout": 0.0,
            "gate": "sparsemax",
            "anchors": _anchors_without_multi_target(),
        },
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
    # Down-weight the worlds whose loss is most sensitive to w: the curvature ‖G‖₂/d of
    # L/d is ~10x the median in dominant-factor worlds and ~3x in factor worlds, whose
    # gradients then dominate training (see with_curvature_cap)
    **{
        f"curvature cap {cap:g}, power {pw:g}": ({}, {CURVATURE_CAP: (cap, pw)})
        for cap, pw in ((30.0, 1.0), (15.0, 1.0), (8.0, 0.5))
    },
    # the edge-case worlds (near-singular, dominant factor: synthetic.EDGE_FAMILIES) are
    # in the training set for robustness; here they weigh less in the objective
    **{
        f"edge worlds weight {wt:g}": ({}, {"edge_weight": wt})
        for wt in (1.0, 0.5, 0.25, 0.1, 0.05)
    },
    # capacity: the study chose [128, 64, 32] on 10,000 worlds and 12 epochs; the
    # pipeline trains on 60,000 worlds for 70 epochs, where a wider net may pay
    **{
        f"hidden {dims}": ({"hidden_dims": dims}, {})
        for dims in ([256, 128, 64], [512, 256, 128], [256, 256, 128, 64])
    },
}


def base_configs(params: dict) -> tuple[dict, dict]:
    pt = params["pretrain"]
    net = {
        "hidden_dims": pt["hidden_dims"],
        "dropout": pt["dropout"],
        "input_dropout": pt["input_dropout"],
        "use_attention": pt["attention"],
        "gate": pt.get("gate", "softmax"),
    }
    keys = (
        "lr weight_decay epochs batch_size patience curriculum intensity_weight matrix_weight "
        "spectrum_weight uncertainty_weight clip_norm"
    ).split()
    optional = ("loss_normaliser", "best_classical_weight", "gap_floor", "edge_weight")
    return net, {k: pt[k] for k in keys} | {k: pt[k] for k in optional if k in pt}


def cached_worlds(
    path: Path, n: int, seed: int, config: dict, workers: int = 1
) -> dataset.TrainingSet:
    """``n`` synthetic worlds drawn with ``seed`` and ``config``, cached at ``path``
    (rebuilt when the cached file was written by an older shrinklab)."""
    if path.exists():
        try:
            return dataset.TrainingSet.load(path)
        except ValueError as exc:  # built by an older shrinklab (other features): rebuild
            print(f"rebuilding {path.name}: {exc}", flush=True)
    ts = dataset.build_training_set(
        n, seed=seed, config=config, progress=False, threads=1, workers=workers
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ts.save(path)
    return ts


def holdout_set(p_max: int, batch_size: int) -> dataset.TrainingSet:
    path = ROOT / "build" / "variants" / f"holdout_{HOLDOUT_SEED}_{p_max}_{batch_size}.pt"
    cfg = {"p_max": p_max, "batch_size": batch_size}
    return cached_worlds(path, HOLDOUT_SIZE, HOLDOUT_SEED, cfg)


def selection_grid_scores(model: MLShrinkageNetwork) -> dict[str, float]:
    """The selection grid's ``sel_fails``, ``sel_mean_prial`` and per-scenario differences."""
    return selection_grid.summary(selection_grid.score(model))


def with_curvature_cap(ts: dataset.TrainingSet, cap: float, power: float) -> dataset.TrainingSet:
    """``ts`` whose worlds are trained with ``L/(d·e)`` instead of ``L/d``,
    ``e = max(1, ‖G‖₂ / (cap·d))^power`` (``‖G‖₂``: the largest curvature of the loss in
    ``w``): ``G`` and ``c`` are divided by ``e`` and ``d`` kept, so that the trainer's
    ``L/d`` becomes ``L/(d·e)`` plus a per-world constant, which changes no gradient
    and no early-stopping choice. The oracle labels are unchanged."""
    e = (torch.linalg.matrix_norm(ts.G.double(), ord=2) / (cap * ts.d.double())).clamp_min(1.0)
    e = e**power
    return dataclasses.replace(
        ts,
        G=(ts.G.double() / e[:, None, None]).to(ts.G.dtype),
        c=(ts.c.double() / e[:, None]).to(ts.c.dtype),
    )


def fit(net: dict, tc: dict, train_set, valid_set, seed: int) -> MLShrinkageNetwork:
    if CURVATURE_CAP in tc:
        tc = dict(tc)
        cap, power = tc.pop(CURVATURE_CAP)
        train_set = with_curvature_cap(train_set, cap, power)
        valid_set = with_curvature_cap(valid_set, cap, power)
    torch.manual_seed(seed)
    model = MLShrinkageNetwork(
        input_dim=train_set.features.shape[1], num_targets=len(TARGET_NAMES), **net
    )
    with tempfile.TemporaryDirectory() as tmp:
        train(model, train_set, valid_set, TrainConfig(**tc, seed=seed, device="cpu"), out_dir=tmp)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 11])
    ap.add_argument("--out", default="reports/model_selection/training_variants.csv")
    ap.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="train on the first N worlds of the training set only (data-size comparison)",
    )
    ap.add_argument("--variants", nargs="+", default=None, help="names of VARIANTS to run")
    args = ap.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    processed = ROOT / params["pretrain"]["processed_dir"]
    train_set = dataset.TrainingSet.load(processed / "synthetic_train.pt")
    if args.n_train is not None:
        if not 0 < args.n_train <= len(train_set):
            raise SystemExit(f"--n-train must be in [1, {len(train_set)}], got {args.n_train}")
        train_set = train_set.subset(range(args.n_train))
    variants = {k: VARIANTS[k] for k in (args.variants or VARIANTS)}
    valid_set = dataset.TrainingSet.load(processed / "synthetic_valid.pt")
    data = params["data_prep"]
    hold = holdout_set(int(data["p_max"]), int(data.get("batch_size", 128)))
    net0, tc0 = base_configs(params)
    rows, norm, geo = [], {}, {}
    for name, (net_over, tc_over) in variants.items():
        for seed in args.seeds:
            model = fit({**net0, **net_over}, {**tc0, **tc_over}, train_set, valid_set, seed)
            with torch.no_grad():
                w = model.predict(hold.features).intensities.double()
            loss = hold.quadratic_loss(w)
            nl = (loss / hold.d).numpy()
            norm[name, seed] = nl
            ratios = experts.family_ratios(loss.numpy(), hold)
            geo[name, seed] = float(np.exp(np.mean(np.log(list(ratios.values())))))
            prial, prial_se = prial_with_se(w, hold)
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "norm_loss": nl.mean(),
                    "norm_loss_se": nl.std(ddof=1) / np.sqrt(nl.size),
                    "prial": prial,
                    "prial_se": prial_se,
                    "geo_ratio": geo[name, seed],
                    "worst_family_ratio": max(ratios.values()),
                    **{f"ratio_{f}": r for f, r in ratios.items()},
                    **selection_grid_scores(model),
                }
            )
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    ref = next(iter(variants))
    diffs = {
        name: [float((norm[name, s] - norm[ref, s]).mean()) for s in args.seeds]
        for name in variants
    }
    cols = ["norm_loss", "prial", "geo_ratio", "sel_mean_prial"]
    summary = df.groupby("variant", sort=False)[cols].mean()
    summary["sel_fails_all_seeds"] = df.groupby("variant", sort=False)["sel_fails"].sum()
    summary["delta_norm_loss_vs_first"] = [np.mean(diffs[k]) for k in summary.index]
    summary["delta_se_over_seeds"] = [
        np.std(diffs[k], ddof=1) / np.sqrt(len(diffs[k])) if len(diffs[k]) > 1 else np.nan
        for k in summary.index
    ]
    geo_diffs = {
        name: [np.log(geo[name, s]) - np.log(geo[ref, s]) for s in args.seeds] for name in variants
    }
    summary["delta_log_geo_ratio_vs_first"] = [np.mean(geo_diffs[k]) for k in summary.index]
    summary["delta_log_geo_se"] = [
        np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
        for v in (geo_diffs[k] for k in summary.index)
    ]
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(
        f"\n{len(args.seeds)} seeds, {len(train_set)} training worlds, holdout of {len(hold)} worlds (seed {HOLDOUT_SEED})"
    )
    print(summary.round(4).to_string())


if __name__ == "__main__":
    main()
