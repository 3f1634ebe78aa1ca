# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: shrinklab (Python 3.11)
#     language: python
#     name: shrinklab
# ---

# %% [markdown]
# # 4. Ensembles and calibrated uncertainty
#
# Four ways to combine networks (spec §7), each built by `shrinklab.ensemble`:
#
# * **multi-seed** — the pretrained architecture from several random seeds
#   (deep ensembles, Lakshminarayanan et al. 2017);
# * **checkpoint averaging** — stochastic weight averaging over the last epochs of
#   one run (Izmailov et al. 2018);
# * **architecture ensemble** — the specification's MLP with and without feature
#   self-attention;
# * **boosting** — sequential members trained on resamples that emphasise the
#   previous members' worst cases (Drucker 1997).
#
# Members are averaged in the intensities w = απ; since the Frobenius loss is convex
# in w, an ensemble is never worse than its members' mean on any sample. Its
# uncertainty combines the members' spread with their predicted variances, scaled
# by a temperature fitted on validation data only (a half of the validation worlds
# that early stopping does not use). Coverage is then checked on the
# held-out synthetic **test** set.

# %% tags=["parameters"]
seed = 3
n_members = 2
member_epochs = 2
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"

# %%
from pathlib import Path

import pandas as pd
import seaborn as sns
import torch

from shrinklab import dataset, ensemble, plots
from shrinklab.network import load_model_payload, save_model
from shrinklab.pipeline import run_dir
from shrinklab.reporting import save_figure, save_metrics
from shrinklab.train import TrainConfig

sns.set_theme(style="whitegrid", context="notebook")
torch.manual_seed(seed)
processed, models, reports = Path(processed_dir), Path(models_dir), Path(reports_dir)
figures = reports / "figures" / "04_ensembling"
train_set = dataset.TrainingSet.load(processed / "synthetic_train.pt")
# Early stopping and calibration use disjoint halves of the validation worlds.
valid_set, calibration_set = dataset.TrainingSet.load(processed / "synthetic_valid.pt").split(0.5, seed)
test_set = dataset.TrainingSet.load(processed / "synthetic_test.pt")
pretrained = load_model_payload(models / "pretrained.pt")
architecture = {k: v for k, v in pretrained["config"].items() if k not in ("input_dim", "num_targets")}
base = TrainConfig(**{**pretrained["extra"]["train_config"], "epochs": member_epochs, "seed": seed})
checkpoints = run_dir("ensemble", {"base": base.to_dict(), "arch": architecture, "n": n_members}, processed / "synthetic_train.pt")

# %%
ensembles = {
    "multi_seed": ensemble.train_multi_seed(
        train_set, valid_set, checkpoints / "multi_seed", n_members=n_members,
        seeds=[seed * 100 + i for i in range(n_members)], model_config=architecture,
        config=base, calibration_set=calibration_set),
    "checkpoint_average": ensemble.train_checkpoint_average(
        train_set, valid_set, checkpoints / "swa", model_config=architecture, config=base,
        seed=seed, method="swa", calibration_set=calibration_set),
    "architecture": ensemble.train_architecture_ensemble(
        train_set, valid_set, checkpoints / "architecture",
        architectures=[architecture, {**architecture, "use_attention": True}],
        seed=seed, config=base, calibration_set=calibration_set),
    "boosting": ensemble.train_boosted(
        train_set, valid_set, checkpoints / "boosting", n_members=max(2, n_members),
        model_config=architecture, config=base, seed=seed, calibration_set=calibration_set),
}

# %% [markdown]
# ## PRIAL of members, ensembles and the oracle
#
# On the validation worlds (used to pick the ensemble kind) and on the test worlds
# (reported). The classical estimators are points of the same family.

# %%
classical = dataset.classical_intensities(test_set)
valid_table = ensemble.prial_table(ensembles, valid_set, include_members=False)
test_table = ensemble.prial_table(ensembles, test_set, extra_intensities=classical)
chosen = valid_table[valid_table["kind"] == "model"].sort_values("prial", ascending=False)["model"].iloc[0]
print("chosen on validation:", chosen)
test_table.sort_values("prial", ascending=False).reset_index(drop=True)

# %%
fig = plots.prial_bars(test_table.assign(scenario="synthetic test", se=0.0), estimator_col="model")
save_figure(fig, figures / "prial_members.png")

# %% [markdown]
# ## Calibration
#
# The nominal 50 % and 90 % Gaussian intervals of the predicted intensity α should
# cover the oracle intensity α* = Σ w* at those rates. The temperature was fitted
# on validation data; coverage is measured on the test worlds.

# %%
rows, curves = [], {}
for name, model in ensembles.items():
    out = model.predict(test_set.features)
    var = out.log_var.exp()
    cover = ensemble.interval_coverage(out.alpha, var, test_set.alpha_star, levels=(0.5, 0.9))
    rows.append({"ensemble": name, "temperature": float(getattr(model, "temperature", torch.tensor(1.0))),
                 "coverage_50": cover[0.5], "coverage_90": cover[0.9],
                 "nll": ensemble.gaussian_nll(out.alpha, var, test_set.alpha_star)})
    curves[name] = ensemble.reliability_curve(out.alpha, var, test_set.alpha_star)
coverage = pd.DataFrame(rows).set_index("ensemble")
coverage

# %%
fig = plots.reliability_diagram(curves)
save_figure(fig, figures / "reliability.png")

# %%
best = ensembles[chosen]
save_model(models / "ensemble.pt", best, pretrained["feature_names"], pretrained["target_names"],
           extra={"ensemble_kind": chosen})
prial = test_table.set_index("model")["prial"]
save_metrics(reports / "metrics" / "ensemble.json", {
    "chosen": chosen,
    "test_prial": {k: float(v) for k, v in prial.items()},
    "coverage": {name: {"50": float(r.coverage_50), "90": float(r.coverage_90)} for name, r in coverage.iterrows()},
})
