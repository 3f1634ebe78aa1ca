"""What training on every world family costs each family: the "mixing cost" diagnosis.

The pretraining network of ``params.yaml`` is trained (as in
``compare_training_variants.py``: same configuration, early stopping on the
pipeline's validation set, seed 1) on subsets of the pipeline's training worlds, and
each fit is scored on the independent synthetic holdout (seed 777, 6,000 worlds) by
the per-family ratio of its mean loss to that of the family's best classical
estimator (``compare_training_variants.family_ratios``; < 1 = better than every
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
``--gated`` prototypes a mixture of experts on the holdout: the pipeline's pretrained
network, with the output of a network trained on one family alone (factor, sp500,
1/3/10) wherever that classifier gives the family a probability above 0.8 ("hard")
or mixed in with that probability ("soft"). A diagnostic, not a model of the pipeline:
the classifier learns the generator's family labels, which real data do not have.
Neither the public scenario grid nor the pipeline's test set is used.

Run after ``dvc repro`` (needs ``data/processed``); ~30-90 s per fit on one core::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/family_mixing.py [--out CSV] [--classifier | --gated]
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

from shrinklab import dataset
from shrinklab.network import ShrinkageOutput

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


class GatedExperts:
    """``predict(features)`` of the gated prototype: ``w = w_g + Σ_f p_f (w_f − w_g)``,
    ``w_g`` the general network's intensities, ``w_f`` those of the expert of family
    ``f`` and ``p_f`` the classifier's probability of ``f`` ("soft") or ``p_f > 0.8``
    ("hard": at most one family passes, so the expert's output replaces the general one)."""

    def __init__(self, general, experts: dict, clf, hard: bool) -> None:
        self.general, self.experts, self.clf, self.hard = general, experts, clf, hard
        self.target_names = getattr(general, "target_names", None)

    @torch.no_grad()
    def predict(self, feats: torch.Tensor) -> ShrinkageOutput:
        w_general = self.general.predict(feats).intensities.double()
        proba = self.clf.predict_proba(feats.double().numpy())
        w = w_general.clone()
        for fam, model in self.experts.items():
            p = torch.as_tensor(proba[:, list(self.clf.classes_).index(fam)])
            p = (p > 0.8).double() if self.hard else p
            w = w + p[:, None] * (model.predict(feats).intensities.double() - w_general)
        alpha = w.sum(1)
        weights = torch.where(
            alpha[:, None] > 0, w / alpha.clamp_min(1e-300)[:, None], 1.0 / w.shape[1]
        )
        return ShrinkageOutput(alpha, weights, torch.zeros_like(alpha))


def gated_experts(train_set, valid_set, hold, params: dict) -> pd.DataFrame:
    """Per-family ratios and mean ``L/d`` on the holdout of the pipeline's pretrained
    network alone and gated with one-family experts (see the module docstring), and
    the selection grid of the network alone and of the hard-gated prototype."""
    from shrinklab import MLShrinkageCovariance

    pretrained = ROOT / params["pretrain"]["models_dir"] / "pretrained.pt"
    general = MLShrinkageCovariance.from_pretrained(pretrained).model_
    clf = family_classifier(train_set)
    net, tc = ctv.base_configs(params)
    experts = {
        fam: ctv.fit(net, tc, restrict(train_set, [fam]), restrict(valid_set, [fam]), SEED)
        for fam in EXPERT_FAMILIES
    }
    models = {
        "pretrained network": general,
        "gated, soft": GatedExperts(general, experts, clf, hard=False),
        "gated, hard (p > 0.8)": GatedExperts(general, experts, clf, hard=True),
    }
    table = []
    for name, model in models.items():
        with torch.no_grad():
            loss = hold.quadratic_loss(model.predict(hold.features).intensities.double())
        ratios = ctv.family_ratios(loss.numpy(), hold)
        table.append(
            {
                "model": name,
                "norm_loss": float((loss / hold.d).mean()),
                "geo_ratio": float(np.exp(np.mean(np.log(list(ratios.values()))))),
                **{f"ratio_{f}": r for f, r in ratios.items()},
            }
        )
    df = pd.DataFrame(table).set_index("model")
    df.to_csv(ROOT / "reports/model_selection/family_gated.csv", float_format="%.6g")
    print(df.round(4).T.to_string())
    for name in ("pretrained network", "gated, hard (p > 0.8)"):
        sel = selection_grid.score(models[name])
        print(f"\nselection grid, {name}:")
        print(sel[["prial", "best_classical", "diff", "diff_se", "fail"]].round(3).to_string())
        summary = selection_grid.summary(sel)
        print(f"mean PRIAL {summary['sel_mean_prial']:.2f}; {summary['sel_fails']} fails")
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="reports/model_selection/family_mixing.csv")
    ap.add_argument("--classifier", action="store_true", help="only the family classifier")
    ap.add_argument("--gated", action="store_true", help="only the gated-experts prototype")
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
        ratios = ctv.family_ratios(hold.quadratic_loss(w).numpy(), hold)
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
