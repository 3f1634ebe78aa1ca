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
# # 8. Study: which kind of ensemble
#
# A study, not a stage of `make repro` (run it with `make studies`, which reproduces
# `studies/dvc.yaml`). The pipeline trains only the chosen kind, the multi-seed
# ensemble (notebook 04; docs/decisions/0018-pipeline-trains-only-the-deployed-ensemble.md;
# since docs/decisions/0021-deploy-rule-cross-universe-folds.md the ensemble is a candidate
# for `final.pt`, not necessarily the deployed model);
# this notebook checks that the choice of docs/decisions/0012-ensemble-kind-multi-seed.md
# still holds. It trains the four ways to combine networks of the specification's
# model-ensembling step (`shrinklab.studies.ensemble_kinds`), with the members' settings
# of the `ensemble` stage:
#
# * **multi-seed** — the pretrained architecture from several random seeds
#   (deep ensembles, Lakshminarayanan et al. 2017): the same members as notebook 04;
# * **checkpoint averaging** — stochastic weight averaging over the last epochs of
#   one run (Izmailov et al. 2018);
# * **architecture ensemble** — the specification's MLP with and without feature
#   self-attention;
# * **boosting** — sequential members trained on resamples that emphasise the
#   previous members' worst cases (Drucker 1997).
#
# Each is calibrated on the same half of the validation worlds as notebook 04 (a
# temperature, then split conformal intervals, Lei et al. 2018).

# %% tags=["parameters"]
seed = 3
n_members = 2
member_epochs = 2
# processes that train the independent multi-seed members (1: in the kernel)
workers = 1
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"

# %%
from shrinklab.core.params import notebook_section
from shrinklab.data import dataset
from shrinklab.evaluation import plots
from shrinklab.evaluation import selection as selection_mod
from shrinklab.evaluation.reporting import save_figure, save_metrics
from shrinklab.pipeline import run_dir, stage_setup
from shrinklab.studies import ensemble_kinds
from shrinklab.training import ensembles as ensembles_mod

params = notebook_section("ensemble_kinds", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "08_ensemble_kinds", seed, processed_dir, models_dir, reports_dir
)
# Early stopping and calibration use disjoint halves of the validation worlds.
inputs = ensembles_mod.ensemble_inputs(processed, models, seed=seed, member_epochs=member_epochs)
valid_set, test_set = inputs.valid_set, inputs.test_set
checkpoints = run_dir("ensemble_kinds", inputs.run_key(n_members), inputs.train_path)
kinds = ensemble_kinds.train_ensemble_kinds(
    inputs.train_set,
    valid_set,
    inputs.calibration_set,
    checkpoints,
    architecture=inputs.architecture,
    config=inputs.config,
    seed=seed,
    n_members=n_members,
    workers=workers,
)

# %% [markdown]
# ## The selection rule, on the validation worlds
#
# `selection.select_ensemble`, on the validation worlds that early stopping used — not
# the calibration half, not the test worlds (the rule of decision 0012):
#
# 1. *calibration gate* — a kind qualifies unless its conformal 50 % or 90 % interval
#    covers these worlds less often than the nominal rate by more than three standard
#    errors (the standard error counts the n validation worlds and the m calibration
#    worlds, √(ℓ(1−ℓ)(1/n + 1/m))); if none qualifies, all stay in. The gate is
#    one-sided because early stopping saw these worlds: the members fit them a little
#    better than fresh ones, and every kind over-covers them somewhat;
# 2. *PRIAL* — the best validation PRIAL among them, and every kind whose PRIAL is
#    below it by at most one paired standard error (delta method, same worlds) counts
#    as tied with it, as does any kind ranked above a tied one;
# 3. *sharpness* — of the tied kinds, the one with the narrowest 90 % interval.
#
# PRIAL comes first because the covariance matrix is the product; calibration is a
# gate rather than a score, because conformal recalibration makes every kind
# calibrated by construction; among kinds the data cannot tell apart on PRIAL, the
# sharper intervals win — "maximise sharpness subject to calibration" (Gneiting,
# Balabdaoui & Raftery 2007). Caveat: the worlds come in batches that share (p, n), so
# both standard errors are optimistic, and a PRIAL tie on the validation worlds need
# not be one on the test worlds.

# %%
result = ensemble_kinds.compare_ensemble_kinds(
    kinds, valid_set, test_set, extra_intensities=dataset.classical_intensities(test_set)
)
print("chosen on validation:", result.chosen)
result.selection[["prial", "prial_vs_best", "prial_vs_best_se", "conformal_50", "conformal_90",
                  "width_90_conformal", "calibrated", "tied", "chosen"]]  # fmt: skip

# %% [markdown]
# ## Reports on the test worlds (never used to choose)
#
# PRIAL of members, kinds, the classical estimators (points of the same family) and
# the oracle; then the coverage of each kind's Gaussian and conformal intervals.

# %%
result.test_prial.sort_values("prial", ascending=False).reset_index(drop=True)

# %%
fig = plots.prial_bars(
    result.test_prial.assign(scenario="synthetic test", se=0.0), estimator_col="model"
)
save_figure(fig, figures / "prial_members.png")

# %%
result.coverage

# %%
fig = plots.reliability_diagram(selection_mod.reliability_curves(kinds, test_set))
save_figure(fig, figures / "reliability.png")

# %%
prial = result.test_prial.set_index("model")["prial"]
save_metrics(
    reports / "metrics" / "ensemble_kinds.json",
    {
        "chosen": result.chosen,
        "test_prial": {k: float(v) for k, v in prial.items()},
        "coverage": {
            name: {"50": float(r.conformal_50), "90": float(r.conformal_90)}
            for name, r in result.coverage.iterrows()
        },
        "selection": {
            name: {
                "valid_prial": float(r.prial),
                "valid_coverage_50": float(r.conformal_50),
                "valid_coverage_90": float(r.conformal_90),
                "valid_width_90": float(r.width_90_conformal),
                "calibrated": bool(r.calibrated),
                "tied": bool(r.tied),
            }
            for name, r in result.selection.iterrows()
        },
    },
)

# %%
# NBVAL_CHECK_OUTPUT
print("chosen kind:", result.chosen, {k: len(e.members) for k, e in kinds.items()})
print("test PRIAL:", {k: round(float(v), 1) for k, v in prial.items() if "[" not in k})
print(
    "conformal coverage 50/90:",
    {
        k: (round(float(r.conformal_50), 2), round(float(r.conformal_90), 2))
        for k, r in result.coverage.iterrows()
    },
)
