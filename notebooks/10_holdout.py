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
# # 10. Study: training variants on the independent holdout
#
# A study, not a stage of `make repro` (`make studies` reproduces `studies/dvc.yaml`).
# The pretraining configuration of `params.yaml` and variants of it
# (`shrinklab.studies.training_variants.VARIANTS`) are trained as notebook 02 trains the
# network, one run per seed, and scored on the independent holdout (seed
# `shrinklab.studies.holdout.HOLDOUT_SEED`) and the
# selection grid — the evidence behind the loss normaliser λ (docs/decisions/0009), the
# edge-world weight (0010) and, with worlds drawn at several `ratio_max`, the training
# p/n range (0011). Neither the public scenario grid nor the test set is used.

# %% tags=["parameters"]
seed = 1
variants = ["loss L/d only (λ = 0)", "edge worlds weight 0.25"]
seeds = [1, 11]
n_train = 400
epochs = 2
grid_reps = 3
holdout_size = 300
ratio_max = [2.0, 4.0]
ratio_seeds = [1]
ratio_train = 400
ratio_valid = 150
wide_size = 300
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
from shrinklab.pipeline import REPO_ROOT, stage_setup
from shrinklab.studies import holdout
from shrinklab.studies import training_variants as tv

params = notebook_section("holdout", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "10_holdout", seed, processed_dir, models_dir, reports_dir
)
out = reports / "studies" / "holdout"
out.mkdir(parents=True, exist_ok=True)
net0, tc0 = tv.base_configs(yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["pretrain"])
tc0["epochs"] = int(epochs)
train_set = dataset.TrainingSet.load(processed / "synthetic_train.pt")
train_set = train_set.subset(range(min(int(n_train), len(train_set))))
valid_set = dataset.TrainingSet.load(processed / "synthetic_valid.pt")
hold = holdout.holdout_set(studies_cache_dir, p_max, batch_size, n=holdout_size)
print(f"{len(train_set)} training worlds, {len(valid_set)} validation, holdout {len(hold)}")

# %% [markdown]
# ## Training variants (λ, edge weight, ...)
#
# Each variant's scores per seed, then the means over seeds with the paired difference to
# the first variant (standard error over seeds).

# %%
rows, norm = [], {}
for name in variants:
    net_over, tc_over = tv.VARIANTS[name]
    for s in seeds:
        model = tv.fit({**net0, **net_over}, {**tc0, **tc_over}, train_set, valid_set, s)
        row, norm[name, s] = tv.variant_row(model, hold, grid_reps)
        rows.append({"variant": name, "seed": s, **row})
table = pd.DataFrame(rows)
table.to_csv(out / "training_variants.csv", index=False, float_format="%.6g")
summary = tv.summarise(table, norm)
summary.to_csv(out / "training_variants_summary.csv", float_format="%.6g")
summary

# %% [markdown]
# ## The training p/n range
#
# Worlds drawn with each `ratio_max` (training seed 0, validation seed 1); each fit
# scored on the holdout, on the holdout's wide twin (p/n up to `WIDE_RATIO_MAX`, its
# worlds with p/n > 2) and on the selection and wide grids. The rule of docs/decisions/0011 reads
# this table.

# %%
wide = holdout.wide_holdout_set(studies_cache_dir, p_max, batch_size, n=wide_size)
pn_rows = []
for r in ratio_max:
    cfg = {"p_max": int(p_max), "batch_size": int(batch_size), "ratio_max": float(r)}
    tr = holdout.cached_worlds(
        f"{studies_cache_dir}/worlds_{ratio_train}_0_{r:g}_{p_max}_{batch_size}.pt",
        ratio_train,
        0,
        cfg,
    )
    va = holdout.cached_worlds(
        f"{studies_cache_dir}/worlds_{ratio_valid}_1_{r:g}_{p_max}_{batch_size}.pt",
        ratio_valid,
        1,
        cfg,
    )
    for s in ratio_seeds:
        row, _ = tv.ratio_max_row(tv.fit(net0, tc0, tr, va, s), hold, wide, grid_reps)
        pn_rows.append({"ratio_max": float(r), "seed": s, **row})
pn_range = pd.DataFrame(pn_rows)
pn_range.to_csv(out / "pn_range.csv", index=False, float_format="%.6g")
pn_range.groupby("ratio_max")[["norm_loss", "wide_norm_loss", "grid_fails", "grid_mean_prial"]].agg(
    {"norm_loss": "mean", "wide_norm_loss": "mean", "grid_fails": "sum", "grid_mean_prial": "mean"}
)

# %%
save_metrics(reports / "metrics" / "holdout.json", {
    "variants": {k: float(v) for k, v in summary["norm_loss"].items()},
    "variants_sel_fails": {k: int(v) for k, v in summary.get("sel_fails_all_seeds", pd.Series()).items()},
    "ratio_max_norm_loss": {f"{k:g}": float(v) for k, v in pn_range.groupby("ratio_max")["norm_loss"].mean().items()},
    "ratio_max_grid_fails": {f"{k:g}": int(v) for k, v in pn_range.groupby("ratio_max")["grid_fails"].sum().items()},
})  # fmt: skip

# %%
# NBVAL_CHECK_OUTPUT
print("variants:", list(summary.index), "| seeds:", list(seeds))
print(
    "ratio_max fits:",
    len(pn_range),
    "| columns include wide_norm_loss:",
    "wide_norm_loss" in pn_range,
)
