# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: shrinklab (Python 3.11)
#     language: python
#     name: shrinklab
# ---

# %% [markdown]
# # 4. Ensembles and calibrated uncertainty
#
# The pipeline's ensemble (`models/ensemble.pt`) is a **multi-seed** deep ensemble: the
# pretrained architecture from several random seeds (Lakshminarayanan et al. 2017), built by
# `shrinklab.training.ensembles.train_multi_seed`. The specification's model-ensembling
# step lists three more kinds (checkpoint averaging, an architecture ensemble,
# boosting); the comparison that chose multi-seed
# (docs/decisions/0012-ensemble-kind-multi-seed.md) is a study outside this pipeline:
# `notebooks/08_ensemble_kinds.py`, run by `make studies`
# (docs/decisions/0018-pipeline-trains-only-the-deployed-ensemble.md). The members are
# independent, as are the members of the family experts (section 4), so all of them are
# trained in `workers` processes; the members are identical for any number of workers.
#
# Members are averaged in the intensities w = απ; since the Frobenius loss is convex
# in w, an ensemble is never worse than its members' mean on any sample. Its
# uncertainty combines the members' spread with their predicted variances, scaled
# by a temperature fitted on validation data only (a half of the validation worlds
# that early stopping does not use). The intervals of the intensity are then
# recalibrated by split conformal prediction on the same half (Lei et al. 2018), so
# that they hit every nominal level, not just one. Coverage is checked on the
# held-out synthetic **test** set.
#
# Finally the ensemble gets **family experts** (section 4): networks trained
# on one world family each, switched in where a gate on the features is sure of
# that family (a hard mixture of experts, `shrinklab.models.experts`).
#
# The ensemble is not necessarily the deployed model: the compression stage (notebook 05)
# chooses `models/final.pt` between it and the fine-tuned network by the rule of
# docs/decisions/0021-deploy-rule-cross-universe-folds.md, and with the current settings
# that rule deploys the fine-tuned network (`chosen` in `reports/metrics/compress.json`).
# The ensemble stays the compression stage's teacher and incumbent, and the model whose
# intervals are calibrated below.

# %% tags=["parameters"]
seed = 3
n_members = 2
member_epochs = 2
# families with an expert network behind the feature gate ([] = no experts)
family_experts = ["factor"]
gate_threshold = 0.8
gate_epochs = 2
# networks per expert (a deep ensemble of seeds seed, seed + 1, ...)
expert_members = 1
# experts trained like the family experts but kept out of ensemble.pt, for final.pt's soft
# mixture behind a guard: {family: {threshold, max_p_over_n}} (decision 0058)
guarded_experts = {"toeplitz": {"threshold": 0.5, "max_p_over_n": 4.0}}
# processes that train the independent members (1: in the kernel)
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
from shrinklab.models import experts
from shrinklab.models.guarded import checked_guard_spec, save_guarded_experts
from shrinklab.models.registry import save_model
from shrinklab.pipeline import run_dir, stage_setup
from shrinklab.training import ensembles as ensembles_mod
from shrinklab.training import experts as expert_training
from shrinklab.training.monitor import run_logger
from shrinklab.training.parallel import train_members

params = notebook_section("ensemble", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "04_ensembling", seed, processed_dir, models_dir, reports_dir
)
# Early stopping and calibration use disjoint halves of the validation worlds.
inputs = ensembles_mod.ensemble_inputs(processed, models, seed=seed, member_epochs=member_epochs)
train_set, valid_set, test_set = inputs.train_set, inputs.valid_set, inputs.test_set
calibration_set, architecture, base = inputs.calibration_set, inputs.architecture, inputs.config
guard_specs = {f: checked_guard_spec(f, spec) for f, spec in guarded_experts.items()}
checkpoints = run_dir("ensemble", inputs.run_key(n_members), inputs.train_path)

# %%
# One queue of independent members for the worker processes: the ensemble's, then the
# family experts' and the guarded experts' (section 4), so that no worker idles between them.
member_jobs = ensembles_mod.multi_seed_jobs(
    train_set,
    valid_set,
    checkpoints / "multi_seed",
    seeds=ensembles_mod.multi_seed_seeds(seed, n_members),
    model_config=architecture,
    config=base,
    monitor=reports,  # TensorBoard + DVCLive, one run per member
)
expert_jobs = expert_training.family_expert_jobs(
    train_set,
    valid_set,
    family_experts,
    checkpoints / "experts",
    model_config=inputs.pretrained["config"],
    config=base,
    seed=seed,
    n_members=expert_members,
    monitor=reports,
)
guarded_jobs = expert_training.family_expert_jobs(  # the family experts' recipe, their own runs
    train_set,
    valid_set,
    list(guard_specs),
    checkpoints / "guarded_experts",
    model_config=inputs.pretrained["config"],
    config=base,
    seed=seed,
    n_members=expert_members,
    monitor=reports,
)
trained = train_members(member_jobs + expert_jobs + guarded_jobs, workers)
kind = "multi_seed"
ensemble = ensembles_mod.calibrated_ensemble(trained[:n_members], kind, calibration_set)
ensembles = {kind: ensemble}

# %% [markdown]
# ## PRIAL of the members, the ensemble and the oracle
#
# On the validation worlds that early stopping used (not the calibration half, not the
# test worlds) and on the test worlds (reported). The classical estimators are points
# of the same family.
#
# The validation row also applies the *calibration gate* of the selection rule
# (`selection.select_ensemble`, docs/decisions/0012-ensemble-kind-multi-seed.md): the
# ensemble is `calibrated` unless its conformal 50 % or 90 % interval covers these
# worlds less often than the nominal rate by more than three standard errors (the
# standard error counts the n validation worlds and the m calibration worlds,
# √(ℓ(1−ℓ)(1/n + 1/m))). The gate is one-sided because early stopping saw these worlds:
# the members fit them a little better than fresh ones, so the ensemble over-covers
# them somewhat. A failed gate means a broken variance or data that moved between
# calibration and use. Caveat: the worlds come in batches that share (p, n), so the
# standard error is optimistic.

# %%
classical = dataset.classical_intensities(test_set)
test_table = selection_mod.prial_table(ensembles, test_set, extra_intensities=classical)
_, selection = selection_mod.select_ensemble(ensembles, valid_set, levels=(0.5, 0.9))
selection[["prial", "conformal_50", "conformal_90", "width_90_conformal", "calibrated"]]

# %%
test_table.sort_values("prial", ascending=False).reset_index(drop=True)

# %%
fig = plots.prial_bars(
    test_table.assign(scenario="synthetic test", se=0.0), estimator_col="model", highlight=[kind]
)
save_figure(fig, figures / "prial_members.png")

# %% [markdown]
# ## Calibration
#
# The nominal 50 % and 90 % intervals of the predicted intensity α should cover the
# oracle intensity α* = Σ w* at those rates. Two kinds of interval, both fitted on
# the calibration half of the validation worlds only:
#
# * **Gaussian** — α ± z σ, with σ² the mixture variance scaled by the fitted
#   temperature τ (and weight λ of the members' own variance). One temperature
#   matches the variance, not the shape: with standardised errors heavier-tailed
#   than Gaussian, the 50 % interval over-covers and no τ fixes 50 % and 90 % at once.
# * **Conformal** (what `EnsembleModel.interval` returns by default) — α ± σ · s₍ₖ₎, where s₍ₖ₎ is
#   the k-th smallest normalised calibration error |α* − α| / σ, k = ⌈(m + 1) ℓ⌉
#   (split conformal with normalised scores, Lei et al. 2018). For worlds exchangeable
#   with the calibration worlds its coverage is at least ℓ and at most ℓ + 1/(m + 1),
#   at every level at once; σ still scales each interval to its sample. The sorted
#   scores are stored in the model file.
#
# The guarantee is marginal: averaged over worlds, not per world type. The synthetic
# worlds come in batches of data_prep's `batch_size` that share one draw of (p, n), and
# coverage differs between such designs, so the test coverage below varies by more
# than its binomial standard error would suggest (the test set holds `n_test /
# batch_size` designs, not `n_test` independent worlds).
#
# Coverage, mean interval width and the Gaussian NLL on the test worlds:

# %%
coverage = selection_mod.coverage_table(ensembles, test_set, levels=(0.5, 0.9))
coverage

# %%
fig = plots.reliability_diagram(selection_mod.reliability_curves(ensembles, test_set))
save_figure(fig, figures / "reliability.png")

# %% [markdown]
# ## Family experts behind a gate
#
# A network trained on every world family pays for the sharing in the families whose
# loss is steep in w: trained on the factor worlds alone, the same network comes
# closer to the oracle there (`shrinklab.studies.family_mixing`;
# `reports/model_selection/family_mixing.csv` and docs/research-log.md). So the ensemble
# (the *general* model) gets one expert network per family in `family_experts`,
# trained on that family's worlds only with the members' settings (in the queue of the
# first cell, beside the ensemble's members), and a gate: a
# small classifier of the world family from the features, trained on the generator's
# family labels of the training worlds. Where the gate gives an expert family a
# probability above `gate_threshold`, that expert's intensity and target weights
# replace the general model's; elsewhere, including every world the gate is unsure
# of, the general model answers unchanged. The predicted variance stays the
# ensemble's, so its calibration above holds.
#
# The design was chosen on the independent synthetic holdout and the selection grid
# (docs/decisions/0014-family-experts-gate-0.7.md and docs/research-log.md), not on the test worlds below.

# %%
best = ensemble
deployed = best
if family_experts:
    with run_logger("ensemble/gate", reports) as log:  # TensorBoard + DVCLive
        gate = expert_training.train_family_gate(
            train_set.features, train_set.families, epochs=gate_epochs, seed=seed, logger=log
        )
    family_models = expert_training.group_experts(
        family_experts, trained[n_members : n_members + len(expert_jobs)], expert_members
    )
    deployed = experts.GatedExpertModel(best, family_models, gate, threshold=gate_threshold)
    gated_table = selection_mod.family_loss_table({"ensemble": best, "gated": deployed}, test_set)
    share = deployed.expert_share(test_set.features)
    print("share of test worlds served:", {k: round(v, 3) for k, v in share.items()})
    display(gated_table.round(3))  # noqa: F821 (IPython)

# %%
if family_experts:
    fig = plots.family_ratio_bars(gated_table)
    save_figure(fig, figures / "family_experts.png")

# %% [markdown]
# ## Guarded experts (decision 0058)
#
# The experts of `guarded_experts` are trained by the same recipe (their family's worlds
# only, seeds `seed`, `seed + 1`, …) but stay out of `ensemble.pt`: its switch, and every
# choice the compress stage's rules make with it, are unchanged. They go to
# `models/guarded_experts/` with their guards, and the compress stage puts them into
# `final.pt`'s soft mixture (`shrinklab.evaluation.compression.deployed_form`), where
# each takes the gate's probability of its family only where that probability exceeds
# `threshold` and p/n is at most `max_p_over_n` (the training worlds' range). Below, each
# on its own family's test worlds (a report), beside the ensemble: its loss over the best
# classical estimator's there (`ratio_<family>`, below 1 is better).

# %%
guarded_models = expert_training.group_experts(
    list(guard_specs), trained[n_members + len(expert_jobs) :], expert_members
)
for fam, module in guarded_models.items():
    rows = [i for i, f in enumerate(test_set.families) if f == fam]
    if not rows:
        print(f"{fam}: no test worlds of this family")
        continue
    table = selection_mod.family_loss_table(
        {"ensemble": best, f"{fam} expert": module}, test_set.subset(rows)
    )
    print(f"{fam}: {len(rows)} test worlds, guard {guard_specs[fam]}")
    display(table[["prial", f"ratio_{fam}"]].round(3))  # noqa: F821 (IPython)
guarded_dir = save_guarded_experts(
    models / "guarded_experts",
    guarded_models,
    guard_specs,
    inputs.pretrained["feature_names"],
    inputs.pretrained["target_names"],
)

# %%
save_model(
    models / "ensemble.pt",
    deployed,
    inputs.pretrained["feature_names"],
    inputs.pretrained["target_names"],
    extra={"ensemble_kind": kind, "family_experts": list(family_experts)},
)
prial = test_table.set_index("model")["prial"]
save_metrics(
    reports / "metrics" / "ensemble.json",
    {
        "chosen": kind,
        "test_prial": {k: float(v) for k, v in prial.items()},
        "family_experts": list(family_experts),
        "guarded_experts": guard_specs,
        "gated_test": (
            {
                "prial": {k: float(v) for k, v in gated_table["prial"].items()},
                "ratio_to_best_classical": {
                    f"{m}/{f}": float(gated_table.loc[m, f"ratio_{f}"])
                    for m in gated_table.index
                    for f in family_experts
                },
                "share_served": share,
            }
            if family_experts
            else None
        ),
        "coverage": {
            name: {"50": float(r.conformal_50), "90": float(r.conformal_90)}
            for name, r in coverage.iterrows()
        },
        "coverage_gaussian": {
            name: {"50": float(r.gaussian_50), "90": float(r.gaussian_90)}
            for name, r in coverage.iterrows()
        },
        "selection": {
            name: {
                "valid_prial": float(r.prial),
                "valid_coverage_50": float(r.conformal_50),
                "valid_coverage_90": float(r.conformal_90),
                "valid_width_90": float(r.width_90_conformal),
                "calibrated": bool(r.calibrated),
            }
            for name, r in selection.iterrows()
        },
    },
)

# %%
# NBVAL_CHECK_OUTPUT
print("ensemble kind:", kind, f"({len(best.members)} members)")
print("test PRIAL:", {k: round(float(v), 1) for k, v in prial.items() if "[" not in k})
print(
    "conformal coverage 50/90:",
    {
        k: (round(float(r.conformal_50), 2), round(float(r.conformal_90), 2))
        for k, r in coverage.iterrows()
    },
)
