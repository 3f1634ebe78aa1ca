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
# # 9. Study: the deployed model on the selection grid and the holdout
#
# A study, not a stage of `make repro` (`make studies` reproduces `studies/dvc.yaml`).
# It scores the deployed model where the pipeline's choices were made, never on the
# public scenario grid or the test period:
#
# * the **selection grid** (`shrinklab.studies.selection_grid`): the scenarios of
#   `SELECTION_GRID`, unlike the public grid, plus those of `WIDE_GRID` (p/n > 2) — PRIAL (Ledoit & Wolf 2022), the paired
#   difference to each scenario's best classical estimator and the failures (more
#   than one standard error below it), the yardstick of docs/decisions/0009, 0010,
#   0011 and 0014;
# * the **gate threshold** of the family experts (docs/decisions/0014) swept on the
#   independent holdout (`shrinklab.studies.holdout`, seed `HOLDOUT_SEED`) and the selection grid;
# * whether the features tell the world **families** apart (a gradient-boosted
#   classifier's holdout confusion matrix), the premise of the gate;
# * a report on the public grid, never a selection tool: **multi-target shrinkage on
#   its own** (the network's sixth expert, docs/decisions/0008) on the evaluation's
#   scenarios and seeds.

# %% tags=["parameters"]
seed = 11
grid_reps = 3
holdout_size = 300
gate_thresholds = [0.5, 0.7, 0.9]
multi_target_reps = 3
p_max = 20
batch_size = 64
studies_cache_dir = "build/smoke/studies"
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"

# %%
import pandas as pd
import yaml

from shrinklab.core.params import notebook_section
from shrinklab.data import dataset
from shrinklab.evaluation.reporting import save_metrics
from shrinklab.models import experts
from shrinklab.models.registry import load_model
from shrinklab.pipeline import REPO_ROOT, stage_setup
from shrinklab.studies import family_mixing, holdout, selection_grid

params = notebook_section("selection_grid", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "09_selection_grid", seed, processed_dir, models_dir, reports_dir
)
out = reports / "studies" / "selection_grid"
out.mkdir(parents=True, exist_ok=True)
final = load_model(models / "final.pt")
hold = holdout.holdout_set(studies_cache_dir, p_max, batch_size, n=holdout_size)
print(f"holdout: {len(hold)} worlds (seed {holdout.HOLDOUT_SEED})")

# %% [markdown]
# ## The deployed model on the selection grid and the wide grid

# %%
scores, grid = selection_grid.grid_scores(final, grid_reps)
grid.to_csv(out / "deployed_grid.csv", float_format="%.6g")
grid[["prial", "se", "best_classical", "prial_best_classical", "diff", "diff_se", "fail", "oracle"]]

# %% [markdown]
# ## The gate threshold of the family experts
#
# The pipeline's gated model (`models/ensemble.pt`) at each threshold; docs/decisions/0014
# chose params.yaml's `ensemble.gate_threshold` by the rule declared there.

# %%
ensemble = load_model(models / "ensemble.pt")
if isinstance(ensemble, experts.GatedExpertModel):
    gate = family_mixing.gate_threshold_table(ensemble, hold, gate_thresholds, grid_reps)
    gate.to_csv(out / "gate_threshold.csv", float_format="%.6g")
else:
    gate = pd.DataFrame()
    print("models/ensemble.pt has no family experts: no gate to sweep")
gate

# %% [markdown]
# ## Do the features tell the families apart?

# %%
train_set = dataset.TrainingSet.load(processed / "synthetic_train.pt")
confusion = family_mixing.family_confusion(train_set, hold)
confusion.to_csv(out / "family_confusion.csv", float_format="%.4f")
confusion.round(2)

# %% [markdown]
# ## Multi-target shrinkage alone on the public grid (a report)

# %%
evaluate = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["evaluate"]
multi_target = selection_grid.multi_target_table(
    evaluate["scenarios"], multi_target_reps, evaluate["seed"]
)
multi_target.to_csv(out / "multi_target_public_grid.csv", index=False, float_format="%.6g")
multi_target

# %%
save_metrics(reports / "metrics" / "selection_grid.json", {
    **{k: v for k, v in scores.items() if not k.startswith("diff_")},
    "holdout_worlds": len(hold),
    "grid_reps": int(grid_reps),
    "multi_target_mean_prial": float(multi_target["multi_target"].mean()),
    "family_recognised_mean": float(pd.Series(confusion.to_numpy().diagonal()).mean()),
    "gate_thresholds": {k: float(v) for k, v in gate.get("norm_loss", pd.Series()).items()},
})  # fmt: skip

# %%
# NBVAL_CHECK_OUTPUT
print("scenarios scored:", len(grid), "| fails:", scores["grid_fails"])
print("confusion matrix shape:", confusion.shape, "| thresholds:", list(gate.index))
