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
# # 11. Study: scenario specialists, the yardstick of notebook 6
#
# A study, not a stage of `make repro` (`make studies` reproduces `studies/dvc.yaml`;
# alone: `dvc repro studies/dvc.yaml:specialists`). It reads no pipeline model: only
# the public scenario grid of the evaluation (`evaluate.scenarios`, `evaluate.seed`,
# `evaluate.n_reps` in `params.yaml`).
#
# A *scenario specialist* (`shrinklab.studies.specialists`) is the network of the
# pipeline trained only on `specialist_draws` fresh worlds of one scenario (plus a
# quarter as many for early stopping, from seeds derived from and distinct from the
# scenario's), with the normalised Frobenius loss alone, and scored on exactly the
# replications of that scenario that notebook 6 scores every estimator on. It reads
# only the sample, like the deployed model, but it knows the scenario (family, p, n,
# tails, how Σ is drawn), which a general model cannot: what it reaches is what
# per-replication information in the sample is worth under that narrow prior. PRIAL
# as in Ledoit & Wolf (2022): 100 = FSOPT, 0 = the sample covariance.
#
# The table is written with exact floats to `reports/specialists/specialists.csv`
# (committed); notebook 6, section 6.5, reads it and refuses a table whose scenarios,
# seeds or replications are not those of its grid.

# %% tags=["parameters"]
# the grid's scenarios, seed and replications come from the `evaluate` section of this
# params file when it is set (the full run); empty: the values below (notebook 6's
# smoke-size defaults)
evaluate_params = ""
scenarios = [
    {"name": "1/3/10 p=40 n=40", "family": "spectrum_1_3_10", "p": 40, "n": 40},
    {"name": "factor t6 p=20 n=40", "family": "factor", "p": 20, "n": 40, "df": 6},
    {"name": "S&P p=20 n=40 t5", "family": "sp500", "p": 20, "n": 40, "df": 5, "period": "report"},
]
seed = 5
n_reps = 20
# fresh worlds per scenario that its specialist is trained on, and its epochs
specialist_draws = 64
epochs = 60
# processes that train the specialists (the same table for any number)
workers = 1
reports_dir = "build/smoke/reports"

# %%
import pandas as pd

from shrinklab.core.params import load_section, notebook_section
from shrinklab.evaluation import feasibility as feasibility_mod
from shrinklab.evaluation import scenarios as scenarios_mod
from shrinklab.evaluation.reporting import save_metrics
from shrinklab.evaluation.scenarios import FSOPT, ORACLE
from shrinklab.pipeline import stage_setup
from shrinklab.studies import specialists as specialists_mod

params = notebook_section("specialists", globals())  # typed and checked: core.params
if evaluate_params:  # the full run: the public grid of the evaluate section
    evaluate = load_section("evaluate", evaluate_params)
    scenarios, seed, n_reps = evaluate.scenarios, evaluate.seed, evaluate.n_reps
_, _, reports, _ = stage_setup("11_specialists", seed, ".", ".", reports_dir)
table_path = reports / "specialists" / "specialists.csv"
print(f"{len(scenarios)} scenarios, {n_reps} replications each, grid seed {seed}")

# %% [markdown]
# ## The grid's replications
#
# The classical estimators only (no model): this gives the replications' quadratic forms
# and the FSOPT losses that the specialists are scored with, the same numbers notebook 6
# computes for them.

# %%
grid, results = scenarios_mod.evaluate_grid(
    scenarios, None, n_reps=n_reps, seed=seed, return_results=True
)
grid.pivot(index="scenario", columns="estimator", values="prial").round(1)

# %% [markdown]
# ## One specialist per scenario
#
# PRIAL ± SE of each scenario's specialist, next to the best classical estimator and the
# multi-target oracle (which knows each replication's Σ) on the same replications.

# %%
specialists = specialists_mod.specialist_table(
    results, n_draws=specialist_draws, epochs=epochs, workers=workers
)
feasibility_mod.write_specialist_table(specialists, table_path)
assert feasibility_mod.read_specialist_table(table_path, results).equals(
    specialists[list(feasibility_mod.SPECIALIST_COLUMNS)]
), "the CSV does not read back exactly"
summary = pd.DataFrame(
    {
        "best classical": [r["prial"][r["best_classical"]] for r in results],
        "specialist": specialists["prial_specialist"].to_numpy(),
        "specialist se": specialists["se_specialist"].to_numpy(),
        "oracle": [r["prial"][ORACLE] for r in results],
        FSOPT: [r["prial"][FSOPT] for r in results],
    },
    index=specialists.index,
)
summary.round(2)

# %%
save_metrics(
    reports / "metrics" / "specialists.json",
    {
        "table": str(table_path),
        "specialist_draws": int(specialist_draws),
        "epochs": int(epochs),
        "n_reps": int(n_reps),
        "prial_specialist": {s: float(v) for s, v in specialists["prial_specialist"].items()},
        "se_specialist": {s: float(v) for s, v in specialists["se_specialist"].items()},
    },
)

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(specialists)} specialists, {specialist_draws} worlds each; table {table_path.name}")
print(specialists[["n_draws", "n_reps"]].to_string())
