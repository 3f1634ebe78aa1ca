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
# # 6. Evaluation
#
# Two questions, each answered with its uncertainty.
#
# 1. **Synthetic worlds, known Σ.** On a fixed public grid of scenarios (the
#    Ledoit–Wolf 1/3/10 spectrum at several p/n, a log-normal spectrum, factor
#    models with Gaussian and Student-t returns, Toeplitz, and an S&P-calibrated Σ),
#    how close does each estimator get to the rotation-equivariant oracle FSOPT?
#    The metric is PRIAL (Ledoit & Wolf 2022): 100 = FSOPT, 0 = the sample
#    covariance. Standard errors over the repetitions.
# 2. **Real returns, unknown Σ.** Global minimum-variance portfolios on the 20
#    S&P 500 stocks over the test period 2016-01-01 … 2022-12-28, which no training
#    or model-selection step has seen, rebalanced every 21 days with estimation
#    windows of 60, 120 and 250 days: annualised out-of-sample volatility, turnover,
#    and the difference to Ledoit–Wolf with a stationary-bootstrap interval.
#
# The learned estimator on synthetic worlds is `models/final.pt` (trained on
# synthetic data only), loaded through the scikit-learn interface
# `MLShrinkageCovariance.from_pretrained`, exactly as a user would. On real returns
# both it and the network fine-tuned on pre-2016 returns (`models/finetuned.pt`,
# notebook 3) are shown; the headline's portfolio rows use the fine-tuned one.

# %% tags=["parameters"]
seed = 5
n_reps = 20
windows = [60, 120]
scenarios = [
    {"name": "1/3/10 p=40 n=40", "family": "spectrum_1_3_10", "p": 40, "n": 40},
    {"name": "factor t6 p=20 n=40", "family": "factor", "p": 20, "n": 40, "df": 6},
    {"name": "S&P p=20 n=40 t5", "family": "sp500", "p": 20, "n": 40, "df": 5},
]
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"

# %%
from pathlib import Path

import pandas as pd
import seaborn as sns
import torch

from shrinklab import MLShrinkageCovariance, backtest, evaluate, plots
from shrinklab.network import load_model
from shrinklab.reporting import save_figure, save_metrics

sns.set_theme(style="whitegrid", context="notebook")
torch.manual_seed(seed)
processed, models, reports = Path(processed_dir), Path(models_dir), Path(reports_dir)
figures = reports / "figures" / "06_evaluation"
final = MLShrinkageCovariance.from_pretrained(models / "final.pt")
ensemble_model = load_model(models / "ensemble.pt")
finetuned_model = load_model(models / "finetuned.pt")
print("final model:", final.model_.extra.get("chosen", "?") if hasattr(final, "model_") else "loaded")

# %% [markdown]
# ## 6.1 PRIAL on the scenario grid

# %%
grid = evaluate.evaluate_grid(scenarios, final.model_, n_reps=n_reps, seed=seed, ensemble=ensemble_model)
prial = grid.pivot(index="scenario", columns="estimator", values="prial")
prial.round(1)

# %%
fig = plots.prial_bars(grid)
save_figure(fig, figures / "prial_by_scenario.png")

# %% [markdown]
# ## 6.2 Out-of-sample minimum-variance portfolios, 2016–2022

# %%
returns = pd.read_parquet(processed / "sp500_returns.parquet")
estimators = {**backtest.classical_estimators(),
              "ML (final)": backtest.learned_estimator(final.model_),
              "ML (fine-tuned)": backtest.learned_estimator(finetuned_model)}
results = backtest.gmv_backtest(returns, estimators, windows=tuple(windows))
summary = backtest.summarise(results, benchmark="ledoit_wolf", seed=seed)
summary.table.round(4)

# %%
for window, cum in summary.cumulative_variance.items():
    fig = plots.cumulative_variance(cum, title=f"cumulative out-of-sample variance, window {window}")
    save_figure(fig, figures / f"cumulative_variance_{window}.png")

# %% [markdown]
# ## Headline

# %%
# Real data: the network fine-tuned walk-forward on pre-2016 returns (notebook 3) is
# the learned estimator for portfolios; the synthetic-only final model is in the table above.
headline = evaluate.headline_table(grid, summary.table, backtest_learned="ML (fine-tuned)")
headline

# %%
save_metrics(reports / "metrics" / "evaluation.json", {
    "prial": {s: {e: float(v) for e, v in row.items()} for s, row in prial.iterrows()},
    "backtest": {f"{w}/{e}": {k: (float(v) if not isinstance(v, bool) else v) for k, v in row.items()}
                 for (w, e), row in summary.table.iterrows()},
    "n_reps": int(n_reps),
    "headline": evaluate.headline_json(headline),
})
