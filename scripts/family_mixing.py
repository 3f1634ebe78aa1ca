"""What training on every world family costs each family: the "mixing cost" diagnosis.

The pretraining network of ``params.yaml`` is trained (as in
``compare_training_variants.py``: same configuration, early stopping on the
pipeline's validation set, seed 1) on subsets of the pipeline's training worlds, and
each fit is scored on the independent synthetic holdout (seed 777, 6,000 worlds) by
the per-family ratio of its mean loss to that of the family's best classical
estimator (``shrinklab.evaluation.selection.family_ratios``; < 1 = better than every
classical estimator). Subsets:

* ``all``: every family (the pipeline's network);
* ``only <family>``: one family's worlds (how well a network that knows the family
  could do there; off its family such a network extrapolates and is meaningless);
* ``factor + <family>``: the factor worlds with one other family (which family costs
  the factor worlds most);
* ``all but <family>``: every family but one.

A family whose own ratio is much better when trained alone than in ``all`` pays for
sharing the network; ``all but X`` shows whether family ``X`` is the one it pays to.
``--classifier`` only asks whether the features tell the families apart: a
gradient-boosted classifier (scikit-learn) trained on the training worlds' features
and family labels, its confusion matrix on the holdout (rows: true family, shares).
``--gated`` is the study behind the pipeline's family experts (``params.yaml:
ensemble.family_experts``, :mod:`shrinklab.models.experts`): the pipeline's ensemble alone
and with experts trained on one family alone (factor, sp500, 1/3/10) switched in
where the library's gate gives that family a probability above 0.8, each expert one
network or a 3-seed ensemble; scored on the holdout and the selection grid
(``reports/model_selection/family_gated.csv``). The gate learns the generator's family
labels; on real data it answers with the ensemble wherever it is unsure.
``--threshold`` sweeps the gate threshold of the pipeline's gated model
(``reports/model_selection/gate_threshold.csv``).
Neither the public scenario grid nor the pipeline's test set is used.

Run after ``dvc repro`` (needs ``data/processed``); ~30-90 s per fit on one core::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/family_mixing.py [--out CSV] [--classifier | --gated | --threshold]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import compare_training_variants as ctv
import numpy as np
import pandas as pd
import selection_grid
import torch
import yaml

from shrinklab.data import dataset
from shrinklab.evaluation import selection
from shrinklab.models import experts
from shrinklab.models.ensemble import EnsembleModel
from shrinklab.training import experts as expert_training

ROOT = Path(__file__).resolve().parents[1]
SEED = 1


def subsets(families: list[str]) -> dict[str, list[str]]:
    """Name → the training families of each fit."""
    out = {"all": families}
    out |= {f"only {f}": [f] for f in families}
    out |= {f"factor + {f}": ["factor", f] for f in families if f != "factor"}
    out |= {f"all but {f}": [g for g in families if g != f] for f in ("dominant_factor",)}
    return out


def restrict(ts: dataset.TrainingSet, keep: list[str]) -> dataset.TrainingSet:
    fam = np.asarray(ts.families)
    return ts.subset(np.flatnonzero(np.isin(fam, keep)).tolist())


def family_classifier(train_set: dataset.TrainingSet):
    """A gradient-boosted classifier (scikit-learn) of the world family from the features."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(max_iter=200, random_state=0)
    return clf.fit(train_set.features.numpy(), np.asarray(train_set.families))


def family_confusion(train_set: dataset.TrainingSet, hold: dataset.TrainingSet) -> pd.DataFrame:
    """Holdout confusion matrix (rows: true family, normalised) of
    :func:`family_classifier` trained on ``train_set``."""
    from sklearn.metrics import confusion_matrix

    clf = family_classifier(train_set)
    labels = sorted(set(train_set.families))
    cm = confusion_matrix(
        np.asarray(hold.families),
        clf.predict(hold.features.numpy()),
        labels=labels,
        normalize="true",
    )
    return pd.DataFrame(cm, index=labels, columns=labels)


EXPERT_FAMILIES = ("factor", "sp500", "spectrum_1_3_10")
EXPERT_SEEDS = (1, 2, 3)


def general_model():
    """The pipeline's ensemble without its experts (``models/ensemble.pt`` is a
    :class:`~shrinklab.models.experts.GatedExpertModel` once the pipeline has run)."""
    from shrinklab.models.registry import load_model

    model = load_model(ROOT / "models" / "ensemble.pt")
    return model.general if isinstance(model, experts.GatedExpertModel) else model


def holdout_and_selection(models: dict, hold, csv_name: str) -> pd.DataFrame:
    """Holdout per-family ratios and mean ``L/d`` and the selection-grid summary of each
    model, printed and written to ``reports/model_selection/<csv_name>``."""
    with torch.no_grad():
        df = selection.family_loss_table(models, hold).drop(columns="prial")
    for name, model in models.items():
        sel = selection_grid.score(model)
        print(f"\nselection grid, {name}:")
        print(sel[["prial", "best_classical", "diff", "diff_se", "fail"]].round(3).to_string())
        df.loc[name, list(selection_grid.summary(sel))] = pd.Series(selection_grid.summary(sel))
    df.to_csv(ROOT / "reports/model_selection" / csv_name, float_format="%.6g")
    print(df.round(4).T.to_string())
    return df


def gated_experts(train_set, valid_set, hold, params: dict) -> pd.DataFrame:
    """The study behind ``params.yaml: ensemble.family_experts`` (see the module
    docstring): the pipeline's ensemble alone and with family experts behind the
    library's gate (:mod:`shrinklab.models.experts`, gate seed 0), one network per expert
    (seed 1) or a 3-seed ensemble (seeds 1-3); holdout per-family ratios and mean
    ``L/d``, and the selection grid of each."""
    general = general_model()
    gate = expert_training.train_family_gate(train_set.features, train_set.families, seed=0)
    net, tc = ctv.base_configs(params)
    fits = {
        fam: [
            ctv.fit(net, tc, restrict(train_set, [fam]), restrict(valid_set, [fam]), s)
            for s in EXPERT_SEEDS
        ]
        for fam in EXPERT_FAMILIES
    }
    models = {
        "ensemble": general,
        "gated, 1-network experts": experts.GatedExpertModel(
            general, {f: m[0] for f, m in fits.items()}, gate
        ),
        "gated, 3-seed experts": experts.GatedExpertModel(
            general, {f: EnsembleModel(m) for f, m in fits.items()}, gate
        ),
    }
    df = holdout_and_selection(models, hold, "family_gated.csv")
    share = models["gated, 3-seed experts"].expert_share(hold.features)
    print("share of holdout worlds served:", {k: round(v, 3) for k, v in share.items()})
    return df


OTHER_FRACTION = 0.2


def with_others(ts: dataset.TrainingSet, fam: str, fraction: float, seed: int):
    """The worlds of ``fam`` and a random ``fraction`` of the other worlds (seeded)."""
    f = np.asarray(ts.families)
    rng = np.random.default_rng(seed)
    keep = (f == fam) | (rng.random(len(f)) < fraction)
    return ts.subset(np.flatnonzero(keep).tolist())


def mixed_experts(train_set, valid_set, hold) -> pd.DataFrame:
    """Misfire-robust experts: the pipeline's gated model against the same gate and
    general model with experts trained on their family plus ``OTHER_FRACTION`` of the
    other worlds (3 seeds each, like the pipeline's), so that a world the gate sends
    to the wrong expert meets a network that has seen its family
    (``reports/model_selection/family_experts_mixed.csv``)."""
    from shrinklab.models.registry import load_model

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    pipeline = load_model(ROOT / "models" / "ensemble.pt")
    net, tc = ctv.base_configs(params)
    fits = {
        fam: EnsembleModel(
            [
                ctv.fit(
                    net,
                    tc,
                    with_others(train_set, fam, OTHER_FRACTION, s),
                    with_others(valid_set, fam, OTHER_FRACTION, s),
                    s,
                )
                for s in EXPERT_SEEDS
            ]
        )
        for fam in pipeline.expert_families
    }
    mixed = experts.GatedExpertModel(pipeline.general, fits, pipeline.gate, pipeline.threshold)
    models = {"pipeline experts": pipeline, f"experts + {OTHER_FRACTION:g} others": mixed}
    return holdout_and_selection(models, hold, "family_experts_mixed.csv")


GATE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def gate_thresholds(hold) -> pd.DataFrame:
    """The pipeline's gated model (``models/ensemble.pt``) at each threshold of
    ``GATE_THRESHOLDS``: holdout per-family ratios, mean ``L/d`` and share served by the
    experts, and the selection grid (``reports/model_selection/gate_threshold.csv``)."""
    from shrinklab.models.registry import load_model

    model = load_model(ROOT / "models" / "ensemble.pt")
    if not isinstance(model, experts.GatedExpertModel):
        raise SystemExit("models/ensemble.pt has no family experts: run the pipeline first")
    rows = {}
    for t in GATE_THRESHOLDS:
        model.threshold = t
        name = f"threshold {t:g}"
        with torch.no_grad():
            row = selection.family_loss_table({name: model}, hold).drop(columns="prial").loc[name]
        row["share_experts"] = 1.0 - model.expert_share(hold.features)["general"]
        row = pd.concat([row, pd.Series(selection_grid.summary(selection_grid.score(model)))])
        rows[name] = row
        print(
            f"{name}: L/d {row['norm_loss']:.5f}, selection fails {row['sel_fails']:.0f}, "
            f"mean PRIAL {row['sel_mean_prial']:.2f}",
            flush=True,
        )
    df = pd.DataFrame(rows).T
    df.to_csv(ROOT / "reports/model_selection/gate_threshold.csv", float_format="%.6g")
    print(df.round(4).T.to_string())
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="reports/model_selection/family_mixing.csv")
    ap.add_argument("--classifier", action="store_true", help="only the family classifier")
    ap.add_argument("--gated", action="store_true", help="only the gated-experts study")
    ap.add_argument("--mixed", action="store_true", help="only the misfire-robust experts study")
    ap.add_argument(
        "--threshold",
        action="store_true",
        help="only the gate-threshold sweep of the pipeline's model",
    )
    args = ap.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    processed = ROOT / params["pretrain"]["processed_dir"]
    train_set = dataset.TrainingSet.load(processed / "synthetic_train.pt")
    valid_set = dataset.TrainingSet.load(processed / "synthetic_valid.pt")
    data = params["data_prep"]
    hold = ctv.holdout_set(int(data["p_max"]), int(data.get("batch_size", 128)))
    if args.gated:
        gated_experts(train_set, valid_set, hold, params)
        return
    if args.threshold:
        gate_thresholds(hold)
        return
    if args.mixed:
        mixed_experts(train_set, valid_set, hold)
        return
    if args.classifier:
        cm = family_confusion(train_set, hold)
        out = ROOT / "reports/model_selection/family_confusion.csv"
        cm.to_csv(out, float_format="%.4f")
        print(cm.round(2).to_string())
        print(f"diagonal (share of each family recognised): {np.diag(cm).round(2).tolist()}")
        return
    net, tc = ctv.base_configs(params)
    families = sorted(set(train_set.families))
    rows = []
    for name, keep in subsets(families).items():
        t0 = time.time()
        tr, va = restrict(train_set, keep), restrict(valid_set, keep)
        model = ctv.fit(net, tc, tr, va, SEED)
        with torch.no_grad():
            w = model.predict(hold.features).intensities.double()
        ratios = selection.family_ratios(hold.quadratic_loss(w).numpy(), hold)
        rows.append(
            {"fit": name, "n_train": len(tr), **{f"ratio_{f}": r for f, r in ratios.items()}}
        )
        print(f"{name:28s} {len(tr):6d} worlds, {time.time() - t0:4.0f} s", flush=True)
    df = pd.DataFrame(rows)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False, float_format="%.6g")
    show = df.set_index("fit")
    print(f"\nper-family ratio to the best classical estimator (holdout, seed {SEED})")
    print(show.round(3).to_string())
    own = {f: show.loc[f"only {f}", f"ratio_{f}"] for f in families}
    print("\nown family: trained alone vs with all families")
    print(
        pd.DataFrame(
            {"alone": own, "all": {f: show.loc["all", f"ratio_{f}"] for f in families}}
        ).round(3)
    )


if __name__ == "__main__":
    main()
