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
# Four ways to combine networks (the specification's model-ensembling step), each built by `shrinklab.models.ensemble`:
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
# that early stopping does not use). The intervals of the intensity are then
# recalibrated by split conformal prediction on the same half (Lei et al. 2018), so
# that they hit every nominal level, not just one. Coverage is checked on the
# held-out synthetic **test** set.
#
# Finally the chosen ensemble gets **family experts** (section 4): networks trained
# on one world family each, switched in where a gate on the features is sure of
# that family (a hard mixture of experts, `shrinklab.models.experts`).

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
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"

# %%


from shrinklab.data import dataset
from shrinklab.evaluation import plots
from shrinklab.evaluation import selection as selection_mod
from shrinklab.evaluation.reporting import save_figure, save_metrics
from shrinklab.models import experts
from shrinklab.models.persistence import load_model_payload
from shrinklab.models.registry import save_model
from shrinklab.pipeline import run_dir, stage_setup
from shrinklab.training import ensembles as ensembles_mod
from shrinklab.training import experts as expert_training
from shrinklab.training.config import TrainConfig
from shrinklab.training.monitor import run_logger

processed, models, reports, figures = stage_setup(
    "04_ensembling", seed, processed_dir, models_dir, reports_dir
)
train_set = dataset.TrainingSet.load(processed / "synthetic_train.pt")
# Early stopping and calibration use disjoint halves of the validation worlds.
valid_set, calibration_set = dataset.TrainingSet.load(processed / "synthetic_valid.pt").split(
    0.5, seed
)
test_set = dataset.TrainingSet.load(processed / "synthetic_test.pt")
pretrained = load_model_payload(models / "pretrained.pt")
architecture = {
    k: v for k, v in pretrained["config"].items() if k not in ("input_dim", "num_targets")
}
base = TrainConfig(**{**pretrained["extra"]["train_config"], "epochs": member_epochs, "seed": seed})
checkpoints = run_dir(
    "ensemble",
    {"base": base.to_dict(), "arch": architecture, "n": n_members},
    processed / "synthetic_train.pt",
)

# %%
ensembles = {
    "multi_seed": ensembles_mod.train_multi_seed(
        train_set,
        valid_set,
        checkpoints / "multi_seed",
        n_members=n_members,
        seeds=[seed * 100 + i for i in range(n_members)],
        model_config=architecture,
        config=base,
        calibration_set=calibration_set,
    ),
    "checkpoint_average": ensembles_mod.train_checkpoint_average(
        train_set,
        valid_set,
        checkpoints / "swa",
        model_config=architecture,
        config=base,
        seed=seed,
        method="swa",
        calibration_set=calibration_set,
    ),
    "architecture": ensembles_mod.train_architecture_ensemble(
        train_set,
        valid_set,
        checkpoints / "architecture",
        architectures=[architecture, {**architecture, "use_attention": True}],
        seed=seed,
        config=base,
        calibration_set=calibration_set,
    ),
    "boosting": ensembles_mod.train_boosted(
        train_set,
        valid_set,
        checkpoints / "boosting",
        n_members=max(2, n_members),
        model_config=architecture,
        config=base,
        seed=seed,
        calibration_set=calibration_set,
    ),
}

# %% [markdown]
# ## PRIAL of members, ensembles and the oracle
#
# On the validation worlds (used to pick the ensemble kind) and on the test worlds
# (reported). The classical estimators are points of the same family.
#
# **Which ensemble is deployed** (`ensemble.select_ensemble`, on the validation
# worlds that early stopping used — not the calibration half, not the test worlds):
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
# calibrated by construction (failing the gate means a broken variance or data that
# moved between calibration and use); among kinds the data cannot tell apart on
# PRIAL, the sharper intervals win — "maximise sharpness subject to calibration"
# (Gneiting, Balabdaoui & Raftery 2007). Caveat: the worlds come in batches that share
# (p, n), so both standard errors are optimistic, and a PRIAL tie on the validation
# worlds need not be one on the test worlds.

# %%
classical = dataset.classical_intensities(test_set)
test_table = selection_mod.prial_table(ensembles, test_set, extra_intensities=classical)
chosen, selection = selection_mod.select_ensemble(ensembles, valid_set, levels=(0.5, 0.9))
print("chosen on validation:", chosen)
selection[["prial", "prial_vs_best", "prial_vs_best_se", "conformal_50", "conformal_90",
           "width_90_conformal", "calibrated", "tied", "chosen"]]  # fmt: skip

# %%
test_table.sort_values("prial", ascending=False).reset_index(drop=True)

# %%
fig = plots.prial_bars(test_table.assign(scenario="synthetic test", se=0.0), estimator_col="model", highlight=[chosen])
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
# * **Conformal** (deployed: `EnsembleModel.interval`) — α ± σ · s₍ₖ₎, where s₍ₖ₎ is
#   the k-th smallest normalised calibration error |α* − α| / σ, k = ⌈(m + 1) ℓ⌉
#   (split conformal with normalised scores, Lei et al. 2018). For worlds exchangeable
#   with the calibration worlds its coverage is at least ℓ and at most ℓ + 1/(m + 1),
#   at every level at once; σ still scales each interval to its sample. The sorted
#   scores are stored in the model file.
#
# The guarantee is marginal: averaged over worlds, not per world type. The synthetic
# worlds come in batches of 128 that share one draw of (p, n), and coverage differs
# between such designs, so the test coverage below varies by more than its binomial
# standard error would suggest (the full test set holds about 30 designs).
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
# loss is steep in w: trained on the factor worlds alone, the same network is about
# 10 % closer to the oracle there (`scripts/family_mixing.py`). So the chosen ensemble
# (the *general* model) gets one expert network per family in `family_experts`,
# trained on that family's worlds only with the members' settings, and a gate: a
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
best = ensembles[chosen]
deployed = best
if family_experts:
    with run_logger("ensemble/gate", reports) as log:  # TensorBoard + DVCLive
        gate = expert_training.train_family_gate(
            train_set.features, train_set.families, epochs=gate_epochs, seed=seed, logger=log
        )
    family_models = expert_training.train_family_experts(
        train_set,
        valid_set,
        family_experts,
        checkpoints / "experts",
        model_config=pretrained["config"],
        config=base,
        seed=seed,
        n_members=expert_members,
        monitor=reports,
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

# %%
save_model(
    models / "ensemble.pt",
    deployed,
    pretrained["feature_names"],
    pretrained["target_names"],
    extra={"ensemble_kind": chosen, "family_experts": list(family_experts)},
)
prial = test_table.set_index("model")["prial"]
save_metrics(
    reports / "metrics" / "ensemble.json",
    {
        "chosen": chosen,
        "test_prial": {k: float(v) for k, v in prial.items()},
        "family_experts": list(family_experts),
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
                "tied": bool(r.tied),
            }
            for name, r in selection.iterrows()
        },
    },
)

# %%
# NBVAL_CHECK_OUTPUT
print("deployed ensemble:", chosen, f"({len(best.members)} members)")
print("test PRIAL:", {k: round(float(v), 1) for k, v in prial.items() if "[" not in k})
print("conformal coverage 50/90:", {k: (round(float(r.conformal_50), 2), round(float(r.conformal_90), 2)) for k, r in coverage.iterrows()})
