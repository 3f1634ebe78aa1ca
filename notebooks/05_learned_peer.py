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
# # 5b. The learned peer: rotation-invariant eigenvalue cleaning (RIEnet)
#
# A baseline from the literature for the learned shrinkage model: our own PyTorch
# implementation of RIEnet (Bongiorno, Manolakis & Mantegna 2025, arXiv:2507.01918).
# It keeps the eigenvectors of the (lag-weighted) sample correlation matrix, cleans its
# spectrum with a small bidirectional GRU, corrects the marginal volatilities with a
# per-asset head, and is trained end to end on the realised variance of its
# global minimum-variance portfolio over the `horizon` days after each window — no
# known Σ, no synthetic pretraining. Its parameter count (`parameters` in
# `reports/metrics/peer.json`) is the same for every p and n.
#
# Only returns before 2016 are used: windows whose holding period ends before
# `val_start` are the training set (the full universe plus random asset subsets on
# every date), the block from `val_start` to the end of 2015 is the validation set for
# early stopping. The 2016–2022 test period is left to notebook 6, where the peer is
# a row of the backtest and of the scenario grid.
#
# What to expect there: the peer's covariance is made for GMV portfolios. The GMV
# loss hardly depends on the largest eigenvalues (the portfolio avoids those
# directions), so nothing teaches the network to keep them; it compresses the
# market eigenvalue, which costs little in portfolio variance and a great deal in
# the Frobenius loss behind PRIAL — in factor worlds its PRIAL can be far below zero.

# %% tags=["parameters"]
seed = 8
windows = [60]
horizon = 21
step = 63
asset_subsets = 0
val_start = "2013-01-01"
epochs = 2
patience = 8
lr = 0.003
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"

# %%
import pandas as pd

from shrinklab.core.params import notebook_section
from shrinklab.evaluation import plots
from shrinklab.evaluation.reporting import save_figure, save_metrics
from shrinklab.models.registry import save_model
from shrinklab.pipeline import stage_setup
from shrinklab.training.monitor import RunLogger
from shrinklab.training.rie_network import peer_config, train_rie_network

params = notebook_section("peer", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "05_learned_peer", seed, processed_dir, models_dir, reports_dir
)
returns = pd.read_parquet(processed / "sp500_returns.parquet")

# %%
config = peer_config(params)  # the section's settings, the network's sizes by default
with RunLogger("peer", reports) as log:  # TensorBoard + DVCLive: reports/{tensorboard,dvclive}/peer
    result = train_rie_network(returns, config, logger=log)
print(f"{result.n_train} training and {result.n_valid} validation windows; "
      f"best epoch {result.best_epoch}; {result.seconds:.0f} s")

# %% [markdown]
# Training and validation loss (annualised realised second moment of the GMV
# portfolio, averaged over windows) per epoch; the kept state is the one with the
# lowest validation loss. The training loss is higher because the training years
# include 2008 and the other crises.

# %%
fig = plots.training_curves(
    {**result.history.to_dict("list"), "best_epoch": result.best_epoch}
)
save_figure(fig, figures / "training_curve.png")

# %% [markdown]
# On the pre-2016 validation block (full universe), the annualised volatility of
# the GMV portfolio built with the peer and with Ledoit–Wolf, per estimation window.

# %%
result.validation.round(4)

# %%
models.mkdir(parents=True, exist_ok=True)
save_model(models / "rie_network.pt", result.model, [], [], extra=result.model.extra)
save_metrics(reports / "metrics" / "peer.json", {
    "best_epoch": int(result.best_epoch),
    "epochs_run": int(result.history["epoch"].max()),
    "seconds": float(result.seconds),
    "n_train": int(result.n_train),
    "n_valid": int(result.n_valid),
    "parameters": int(sum(p.numel() for p in result.model.parameters())),
    "validation": {
        str(int(row["window"])): {"peer_vol": float(row["peer_vol"]),
                             "ledoit_wolf_vol": float(row["ledoit_wolf_vol"])}
        for _, row in result.validation.iterrows()
    },
})

# %%
# NBVAL_CHECK_OUTPUT
print(f"windows: train {result.n_train}, valid {result.n_valid}")
print(result.validation[["window", "n_windows"]].to_string(index=False))
