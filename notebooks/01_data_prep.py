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
# # 1. Data: real returns and synthetic worlds with known truth
#
# The learned shrinkage needs two kinds of data.
#
# * **Real returns** — daily prices of 20 S&P 500 stocks (1990–2022) and the index,
#   shipped inside the `skfolio` wheel. They are cleaned (stale prices, missing
#   values, outliers), labelled with a market regime, and split by time. The years
#   2016–2022 are a **test period** that no training or model-selection step sees.
# * **Synthetic worlds** — covariance matrices Σ from several families (factor
#   models, spectra, Toeplitz, blocks, S&P-calibrated) with Gaussian or Student-t
#   returns, for which the *oracle* shrinkage weights are known. Each sample stores
#   p-agnostic features, the oracle label and the K×K quadratic form of the
#   Frobenius loss, so training costs O(K²) per sample whatever p is.

# %% tags=["parameters"]
seed = 0
n_train = 3000
n_valid = 600
n_test = 600
p_max = 60
# samples per drawn p, n design: smaller = more distinct designs
batch_size = 32
ratio_max = 4.0  # largest p/n of the training worlds (the p/n-range study, shrinklab.studies.holdout)
workers = 1  # processes building the synthetic samples (same result for any number)
family_weights = {}  # relative weight per world family; {}: the library's default mix
processed_dir = "build/smoke/data"
reports_dir = "build/smoke/reports"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from shrinklab.core.params import notebook_section
from shrinklab.core.targets import TARGET_NAMES
from shrinklab.data import dataset
from shrinklab.data import returns as data
from shrinklab.evaluation.reporting import save_figure, save_metrics

params = notebook_section("data_prep", globals())  # typed and checked: core.params
sns.set_theme(style="whitegrid", context="notebook")
processed = Path(processed_dir)
processed.mkdir(parents=True, exist_ok=True)
figures = Path(reports_dir) / "figures" / "01_data_prep"
metrics = {}

# %% [markdown]
# ## 1.1 Real returns
#
# Cleaning is documented in `shrinklab.data.returns`: stale runs of at least
# `stale_run` identical prices and missing prices are imputed by log-linear
# interpolation (flagged), returns are log returns, and returns beyond `mad_k` robust
# standard deviations are winsorised (flagged); both thresholds are that module's
# defaults. The table counts what was changed per asset.

# %%
cleaned = data.clean_returns(data.load_prices())
returns = cleaned.returns
index_returns = data.load_index_returns()
regimes = data.market_regimes(data.load_index_prices()).reindex(returns.index)
summary = cleaned.summary()
summary

# %%
# NBVAL_CHECK_OUTPUT
from shrinklab.pipeline import checksum

print("returns:", returns.shape, returns.index[0].date(), "to", returns.index[-1].date())
print("imputed cells:", int(summary["imputed"].sum()), "| winsorised cells:", int(summary["winsorised"].sum()))
print("regime days:", {data.REGIME_NAMES[k]: int(v) for k, v in regimes.value_counts().sort_index().items()})
print("checksum of dates, tickers and returns (8 decimals):",
      checksum(returns.index, returns.columns, returns.to_numpy(), decimals=8))

# %%
market = pd.DataFrame({"index_return": index_returns.reindex(returns.index), "regime": regimes})
returns.to_parquet(processed / "sp500_returns.parquet")
market.to_parquet(processed / "sp500_market.parquet")

# %% [markdown]
# The index with its regimes (calm / volatile / crisis from trailing volatility and
# drawdown, using past data only): the crisis labels fall on 1998, 2001–02,
# 2008–09 and 2020 as they should.

# %%
fig, ax = plt.subplots(figsize=(10, 3.5))
level = np.exp(market["index_return"].fillna(0).cumsum())
ax.plot(level.index, level.values, color="black", lw=0.8)
colors = {1: "#f4a261", 2: "#e63946"}
for code, color in colors.items():
    mask = (market["regime"] == code).to_numpy()
    ax.fill_between(level.index, 0, level.max() * 1.05, where=mask, color=color, alpha=0.3,
                    lw=0, label=data.REGIME_NAMES[code])
ax.axvspan(data.TEST_START, data.TEST_END, color="grey", alpha=0.15, label="test period")
ax.set(yscale="log", ylabel="S&P 500 (growth of 1)", title="Market regimes")
ax.legend(loc="upper left")
save_figure(fig, figures / "regimes.png")

# %% [markdown]
# ## 1.2 Walk-forward splits
#
# Expanding training windows, two-year validation blocks after them, and nothing
# that reaches the test period (the specification's forward-walk validation).

# %%
splits = data.walk_forward_splits(returns.index)
split_table = pd.DataFrame([{"fold": s.fold, **{k: v.date() for k, v in s.dates(returns.index).items()}} for s in splits])
split_table

# %%
# NBVAL_CHECK_OUTPUT
print(split_table.to_string(index=False))

# %% [markdown]
# ## 1.3 Synthetic training samples
#
# Worlds are drawn from the documented distribution of `shrinklab.data.synthetic`
# (p up to `p_max`, p/n up to `ratio_max`, Gaussian or Student-t returns, edge
# cases on purpose). The samples of a batch of `batch_size` share one (p, n) design
# (batched linear algebra), so the training set covers `n_train / batch_size`
# designs. Since decision 0023 the mix (`family_weights`) adds three market-like
# families (`shrinklab.data.worlds_market`): a market factor over sector blocks, worlds
# whose Σ moves between the estimation window and the holding period (the label and the
# loss then target the holding-period Σ) and block-bootstrapped real returns from before
# `worlds_market.RESAMPLE_END`. Since decision 0026 it also draws diversified worlds (funds,
# ETFs: a dominant market factor, dense style factors, little idiosyncratic variance).
# Each sample's label is the multi-target oracle
# w* = argmin ‖S + Σ w_k (T_k − S) − Σ‖_F over w ≥ 0, Σ w ≤ 1.

# %%
config = {"p_max": p_max, "batch_size": batch_size, "ratio_max": ratio_max}
if family_weights:
    config["family_weights"] = dict(family_weights)
sets = {}
for offset, (name, size) in enumerate({"train": n_train, "valid": n_valid, "test": n_test}.items()):
    sets[name] = dataset.build_training_set(size, seed=seed * 1000 + offset, config=config, workers=workers)
    sets[name].save(processed / f"synthetic_{name}.pt")
train = sets["train"]

# %%
# NBVAL_CHECK_OUTPUT
for name, ts in sets.items():
    print(f"{name}: {len(ts)} samples, {ts.features.shape[1]} features, mean α* {float(ts.alpha_star.mean()):.3f}, "
          f"checksum of p, n, family, seed: {checksum(ts.p, ts.n, ts.family, ts.sample_seed)}")

# %%
frame = train.to_frame()
frame["p/n"] = frame["p"] / frame["n"]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
axes[0].scatter(frame["n"], frame["p"], s=3, alpha=0.4)
axes[0].set(xscale="log", yscale="log", xlabel="n", ylabel="p", title="sizes drawn")
sns.histplot(frame["alpha_star"], bins=40, ax=axes[1])
axes[1].set(title="oracle intensity α* = Σ w*", xlabel="α*")
mean_w = train.oracle_w.mean(0).numpy()
axes[2].bar(range(len(TARGET_NAMES)), mean_w)
axes[2].set_xticks(range(len(TARGET_NAMES)), TARGET_NAMES, rotation=30, ha="right")
axes[2].set(title="mean oracle weight per target")
fig.tight_layout()
save_figure(fig, figures / "synthetic_labels.png")

# %% [markdown]
# How much is there to gain? The sample covariance's Frobenius loss is `d`, the
# oracle's is the quadratic form at w*; the gap is what the network can learn.

# %%
oracle_loss = dataset.normalised_frobenius(train.oracle_w, train)
metrics["real"] = {
    "n_days": int(returns.shape[0]),
    "n_assets": int(returns.shape[1]),
    "imputed_cells": int(summary["imputed"].sum()),
    "winsorised_cells": int(summary["winsorised"].sum()),
    "n_folds": len(splits),
}
metrics["synthetic"] = {
    name: {"n_samples": len(ts), "mean_alpha_star": float(ts.alpha_star.mean())} for name, ts in sets.items()
}
metrics["synthetic"]["train"]["mean_oracle_normalised_loss"] = float(oracle_loss.mean())
save_metrics(Path(reports_dir) / "metrics" / "data_prep.json", metrics)
pd.json_normalize(metrics, sep=" / ").T[0].map(lambda v: f"{v:.3f}" if isinstance(v, float) else v).to_frame("value")
