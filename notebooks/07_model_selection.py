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
# # 7. Model selection: hyper-parameter search, robustness folds, ablations
#
# The specification tunes hyper-parameters four ways: a **grid** over the
# architecture, **Bayesian optimisation** of the learning parameters, **K-fold
# validation across market regimes** and **ablation studies**. This notebook is slow:
# it is the `model_selection` stage of `studies/dvc.yaml`, not of `make repro`;
# `make model-selection` (or `make studies`) runs it (see docs/research-log.md, "The
# model-selection study (notebook 07)").
#
# * Bayesian optimisation: Optuna's TPE sampler (Bergstra et al., NeurIPS 2011) over
#   learning rate, weight decay, the loss weights α (intensity), β (Frobenius),
#   γ (spectrum), the uncertainty weight and the clipping norm; trials that fall
#   behind the median at the same epoch are pruned. The objective is the validation
#   mean normalised Frobenius loss L(ŵ)/L(S) — not the training objective, whose
#   value depends on the very weights being searched. The study is stored in SQLite,
#   seeded and resumable.
# * Robustness: every configuration is scored leaving one synthetic covariance family
#   out at a time, and on the real walk-forward folds with per-regime losses.
# * Ablations of the deployed configuration: each feature group, each loss component,
#   single vs multi-target, curriculum, synthetic pretraining before real fine-tuning,
#   and each component of the specification the deployed model does not use.

# %% tags=["parameters"]
seed = 7
n_search = 1500
n_trials = 4
trial_epochs = 3
batch_size = 256
grid = {"width": [64, 128, 256], "depth": [2, 3], "dropout": [0.2, 0.3], "attention": [False, True]}
grid_jobs = 2
cv_epochs = 2
n_real_folds = 2
real_windows = [60]
finetune_lrs = [0.0001, 0.0003]
finetune_epochs = 2
ablation_epochs = 3
ablation_studies = ["features", "loss", "targets", "curriculum", "pretraining", "components"]
component_weights = {"log_det_weight": 0.1, "portfolio_weight": 0.1, "smoothness_weight": 0.1,
                     "adversarial_weight": 0.1}
hidden_dims = [64, 32, 16]
dropout = 0.3
input_dropout = 0.1
attention = False
curriculum = True
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"
runs_dir = "build/smoke/runs/model_selection"

# %%
import dataclasses
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

# optuna's progress bar (tqdm) asks for ipywidgets, which the report does not need
warnings.filterwarnings("ignore", message="IProgress not found")

from shrinklab.core.params import notebook_section
from shrinklab.data import dataset
from shrinklab.evaluation.reporting import save_figure, save_metrics
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.models.persistence import load_model_payload
from shrinklab.pipeline import REPO_ROOT, stage_setup
from shrinklab.studies.ablation import run_ablation
from shrinklab.studies.folds import (
    cross_validate,
    family_folds,
    paired_difference,
    real_fit_score,
    real_folds,
    regime_splits,
    select_config,
    synthetic_fit_score,
)
from shrinklab.studies.tuning import (
    dvc_queue_commands,
    grid_configs,
    optuna_search,
    update_params_file,
)
from shrinklab.training.config import TrainConfig

params = notebook_section("model_selection", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "07_model_selection", seed, processed_dir, models_dir, reports_dir
)
selection = reports / "model_selection"  # study, tables, chosen parameters (committed)
scratch = Path(runs_dir)  # training checkpoints of trials and folds (not committed)
tables = selection
for folder in (selection, scratch, figures):
    folder.mkdir(parents=True, exist_ok=True)
train_full = dataset.TrainingSet.load(processed / "synthetic_train.pt")
valid_set = dataset.TrainingSet.load(processed / "synthetic_valid.pt")
train_set = train_full.subset(np.arange(min(n_search, len(train_full))))
model_config = {"hidden_dims": hidden_dims, "dropout": dropout, "input_dropout": input_dropout,
                "use_attention": attention}
base = TrainConfig(epochs=trial_epochs, batch_size=batch_size, curriculum=curriculum, seed=seed, device="cpu")
print(f"search on {len(train_set)} of {len(train_full)} training samples, {len(valid_set)} validation samples")

# %% [markdown]
# ## 7.1 Bayesian optimisation of the learning parameters
#
# Each trial trains the network with one draw of the parameters; after every epoch
# its validation loss is reported to the median pruner. Rerunning this stage adds
# `n_trials` trials to the stored study instead of starting over.

# %%
search = optuna_search(
    train_set, valid_set, n_trials=n_trials, seed=seed, storage_path=selection / "optuna.db",
    study_name=f"pretrain-{len(train_set)}-{trial_epochs}ep", base_config=base, model_config=model_config,
    n_startup_trials=min(5, n_trials), checkpoint_dir=scratch / "trials",
)
trials = search.trials
trials.to_csv(tables / "trials.csv", index=False)
print(f"{len(trials)} trials ({search.n_complete} complete, {search.n_pruned} pruned); "
      f"best validation normalised loss {search.best_value:.4f}")
pd.Series(search.best_params, name="best")

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
    t = trials[trials["state"] == state]
    ax.scatter(t["number"], t["value"], marker=marker, label=state.lower())
ax.plot(trials["number"], trials["value"].where(trials["state"] == "COMPLETE").cummin().ffill(),
        color="black", lw=1, label="best so far")
ax.set(xlabel="trial", ylabel="validation L(ŵ)/L(S)", title="Optuna TPE search")
ax.legend()
save_figure(fig, figures / "optuna_trials.png")

# %% [markdown]
# ## 7.2 Architecture grid as DVC experiments
#
# Widths, depth, dropout and attention are compared as DVC experiments of the
# `pretrain` stage: the commands below queue one experiment per grid point, run
# them with `grid_jobs` workers, and compare them by the pretraining validation loss.

# %%
params_yaml = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
commands = dvc_queue_commands(grid, "pretrain", params=params_yaml, jobs=grid_jobs)
(selection / "grid_commands.sh").write_text("\n".join(commands) + "\n")
print(f"{len(grid_configs(grid))} grid points")
print("\n".join(commands[:2] + ["..."] + commands[-3:]))

# %% [markdown]
# ## 7.3 Robustness: leave one covariance family out
#
# The default and the tuned learning parameters, each trained without one family and
# scored on it. The mean over families and its standard error say whether the tuned
# configuration is better everywhere or only on the worlds the search saw.

# %%
configs = {
    "default": {"train": dataclasses.replace(base, epochs=cv_epochs), "model": model_config},
    "tuned": {"train": dataclasses.replace(search.best_config, epochs=cv_epochs), "model": model_config},
}
lofo = cross_validate(synthetic_fit_score(scratch / "cv_families"), family_folds(train_set), configs)
lofo.to_csv(tables / "leave_one_family_out.csv")
per_family = lofo.attrs["folds"].pivot(index="group", columns="config", values="norm_loss")
lofo[["norm_loss_mean", "norm_loss_se", "norm_loss_max", "prial_mean", "prial_se"]]

# %%
per_family

# %% [markdown]
# ## 7.4 Robustness: walk-forward folds across market regimes
#
# The pretrained network fine-tuned on real returns with the realised GMV-variance
# loss, per walk-forward fold, for several fine-tuning learning rates; losses are
# relative to Ledoit–Wolf (< 1 is better) and broken down by the regime of each
# validation window.

# %%
returns = pd.read_parquet(processed / "sp500_returns.parquet")
market = pd.read_parquet(processed / "sp500_market.parquet")
splits = regime_splits(returns.index, market["regime"])[-n_real_folds:]
pd.DataFrame([{"fold": s.fold, "val_start": s.val_start.date(), "val_end": s.val_end.date(),
               "dominant": s.dominant, **s.regime_share} for s in splits])

# %%
wf_folds = real_folds(returns, market["regime"], splits, windows=real_windows, step=21, val_step=21)
pretrained = MLShrinkageNetwork.from_pretrained(models / "pretrained.pt")
ft_configs = {f"lr={lr:g}": {"train": TrainConfig(lr=lr, epochs=finetune_epochs, batch_size=64, patience=3,
                                                  seed=seed, device="cpu", set_priors=False)}
              for lr in finetune_lrs}
regime_cv = cross_validate(real_fit_score(pretrained, scratch / "cv_regimes"), wf_folds, ft_configs)
regime_cv.to_csv(tables / "regime_folds.csv")
best_ft = select_config(regime_cv, "loss", rule="mean_se")
regime_cv[[c for c in regime_cv.columns if c.endswith("_mean") or c.endswith("_se")]]

# %% [markdown]
# ## 7.5 Ablations
#
# The full model of the ablation is the **deployed member configuration**: the network
# and the `TrainConfig` stored in `models/pretrained.pt` (the `pretrain` section, as the
# ensemble members of notebook 04 use them), trained with `epochs` reduced to
# `ablation_epochs` on the search's `n_search` training samples: its numbers are not the
# deployed model's, and the rows say what each change is worth at that budget.
# Each row changes one thing against it: a feature group removed, a loss term the
# deployed model uses switched off, a single target, the curriculum flipped,
# pretraining, and each component of the specification the deployed model does not
# use switched on — the log-determinant (Stein) and portfolio-variance loss terms, the
# smoothness and adversarial regularisers at the weights `component_weights` (declared
# in params.yaml before the run), progressive sizes, attention and, fine-tuned on real
# returns, market-regime inputs. `delta_prial` is the change in PRIAL on the synthetic
# validation set with its paired standard error; `real_vol` the annualised
# out-of-sample volatility of the GMV portfolio on the last fold's real validation
# windows.

# %%
deployed = load_model_payload(models / "pretrained.pt")
deployed_model = {k: v for k, v in deployed["config"].items() if k not in ("input_dim", "num_targets")}
ablation_cfg = TrainConfig.from_dict({**deployed["extra"]["train_config"], "epochs": ablation_epochs})
last = wf_folds[-1]
ablation = run_ablation(
    train_set, valid_set, scratch / "ablation", model_config=deployed_model, train_config=ablation_cfg,
    real=(last.train, last.valid), finetune_config=ft_configs[best_ft]["train"], studies=ablation_studies,
    component_weights=component_weights, base_label="the deployed member configuration (models/pretrained.pt)",
)
ablation.to_csv(tables / "ablation.csv", index=False)
shown = ["study", "variant", "prial", "prial_se", "delta_prial", "delta_prial_se", "norm_loss", "norm_loss_se",
         "real_vol", "real_vol_se", "real_ratio_lw"]
ablation[shown].round(3)

# %%
rows = ablation.iloc[1:]
fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1))
ax.barh(rows["variant"], rows["delta_prial"], xerr=1.96 * rows["delta_prial_se"], color="#457b9d")
ax.axvline(0, color="black", lw=0.8)
ax.invert_yaxis()
ax.set(xlabel="PRIAL change vs full model (pp, 95% CI)",
       title=f"Ablations of the deployed configuration ({ablation_epochs} epochs)")
save_figure(fig, figures / "ablation.png")

# %% [markdown]
# ## 7.6 The chosen configuration
#
# The tuned learning parameters are kept when they beat the defaults on the
# held-out families by more than one standard error of the *family-paired*
# difference (both were scored on the same held-out families, so how hard each family
# is cancels out); otherwise the defaults stay (a lucky search on one validation set
# is not a reason to change). The fine-tuning learning rate is the one with the best
# pessimistic (mean + SE) loss over the regime folds. The block below is what
# `params.yaml` gets; applying it is a reviewed commit
# (`shrinklab.studies.tuning.update_params_file`).

# %%
paired = paired_difference(lofo.attrs["folds"], "tuned", "default", "norm_loss")
gain, gain_se = -paired["mean"], paired["se"]
keep_tuned = bool(gain > gain_se)
chosen = {k: v for k, v in search.best_params.items() if k in params_yaml["pretrain"]} if keep_tuned else {}
(selection / "best_params.yaml").write_text(yaml.safe_dump(
    {"search_best": search.best_params, "chosen_pretrain": chosen, "finetune_lr": ft_configs[best_ft]["train"].lr},
    sort_keys=True))
print("keep tuned parameters:", keep_tuned,
      f"(paired gain {gain:.4f} ± {gain_se:.4f}, tuned better on {paired['wins']} of {paired['n']} families)")
if chosen:
    print(update_params_file(REPO_ROOT / "params.yaml", "pretrain", chosen, write=False).split("pretrain:")[1].split("\n\n")[0])

# %%
save_metrics(reports / "metrics" / "model_selection.json", {
    "n_trials": int(len(trials)),
    "n_pruned": int(search.n_pruned),
    "best_valid_norm_loss": float(search.best_value),
    "best_params": {k: float(v) for k, v in search.best_params.items()},
    "lofo_norm_loss": {k: float(v) for k, v in lofo["norm_loss_mean"].items()},
    "regime_loss": {k: float(v) for k, v in regime_cv["loss_mean"].items()},
    "keep_tuned": keep_tuned,
    "lofo_paired_gain": {"mean": gain, "se": gain_se, "wins": paired["wins"], "n": paired["n"]},
    "finetune_lr": float(ft_configs[best_ft]["train"].lr),
    "ablation_delta_prial": dict(zip(ablation["variant"], ablation["delta_prial"].astype(float), strict=True)),
})

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(grid_configs(grid))} grid points; {len(trials)} trials ({search.n_pruned} pruned), "
      f"best validation loss {search.best_value:.3f}")
print("leave-one-family-out loss:", lofo["norm_loss_mean"].round(3).to_dict())
print("regime-fold loss:", regime_cv["loss_mean"].round(3).to_dict(), "| chosen:", best_ft)
print("ablation variants:", list(ablation["variant"]))
