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
# # 3. Fine-tuning on real returns (GPU when available)
#
# Real returns have no known Σ, so the synthetic oracle labels are gone. What is
# left is the quantity a portfolio manager cares about: the **realised variance of
# the global minimum-variance portfolio** built from Σ̂ over the holding period after
# each estimation window, relative to the same portfolio built with Ledoit–Wolf
# (Engle & Colacito 2006; Ledoit & Wolf 2017). A ratio below 1 beats Ledoit–Wolf.
#
# The synthetic-pretrained network (the specification's transfer-learning step) is fine-tuned
# walk-forward: for each expanding-window fold it is trained on windows before the
# fold's validation block and early-stopped on that block; the final model uses the
# median best epoch on every window before 2016. With `soup_seeds` above 1 this is done
# once per seed and the networks' weights are averaged (a "model soup", decision 0042), so
# the deployed network does not hang on one seed's luck. The test period 2016–2022 is never
# touched here. On a CUDA machine the same code runs on the GPU with bf16 autocast.

# %% tags=["parameters"]
seed = 2
windows = [60, 120]
epochs = 2
lr = 0.0003
asset_subsets = 0
n_folds = 2
replay_weight = 0.0  # synthetic replay λ (docs/decisions/0025-fine-tuning-with-synthetic-replay.md)
replay_batch = 256
derived_per_stock = 0.0  # derived portfolios per stock (docs/decisions/0041-derived-universes-over-fine-tuning-seeds.md)
soup_seeds = 1  # fine-tuning seeds averaged into finetuned.pt (docs/decisions/0042-seed-soup-fine-tuning.md)
workers = 1  # processes running the seeds' fine-tunings (1: in the kernel)
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"

# %%

import pandas as pd
import torch

from shrinklab.core.params import notebook_section
from shrinklab.data.dataset import TrainingSet
from shrinklab.evaluation import plots
from shrinklab.evaluation.reporting import save_figure, save_metrics
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.models.persistence import load_model_payload
from shrinklab.models.registry import save_model
from shrinklab.pipeline import run_dir, stage_setup
from shrinklab.training.finetune_stage import (
    stage_config,
    stage_finetune_soup,
    stage_returns,
    stage_splits,
)

params = notebook_section("finetune", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "03_gpu_training", seed, processed_dir, models_dir, reports_dir
)
device = "cuda" if torch.cuda.is_available() else "cpu"
print("device:", torch.cuda.get_device_name(0) if device == "cuda" else "CPU", "| amp:", "bf16" if device == "cuda" else "off")

# %%
# the stocks before 2016, plus derived long-only portfolios of them when derived_per_stock > 0
raw_returns = pd.read_parquet(processed / "sp500_returns.parquet")
returns = stage_returns(raw_returns, params)
market = pd.read_parquet(processed / "sp500_market.parquet")
splits = stage_splits(returns.index, params)
pretrained_payload = load_model_payload(models / "pretrained.pt")
pretrained = MLShrinkageNetwork.from_pretrained(models / "pretrained.pt")
pd.DataFrame([{"fold": s.fold, **{k: v.date() for k, v in s.dates(returns.index).items()}} for s in splits])

# %%
config = stage_config(params, device)
# λ · L/d on synthetic training worlds at every step (λ = 0: plain fine-tuning, nothing read or drawn)
replay = replay_weight > 0
replay_data = TrainingSet.load(processed / "synthetic_train.pt") if replay else None  # read once
checkpoints = run_dir("finetune", {**config.to_dict(), "windows": windows, "subsets": asset_subsets, "folds": n_folds,
                                   **({"replay": [replay_weight, replay_batch]} if replay else {}),
                                   **({"derived_per_stock": derived_per_stock} if derived_per_stock else {}),
                                   **({"soup_seeds": soup_seeds} if soup_seeds > 1 else {})},
                      processed / "sp500_returns.parquet", models / "pretrained.pt",
                      *([processed / "synthetic_train.pt"] if replay else []))
# the stage's recipe (shrinklab.training.finetune_stage): one walk-forward fine-tuning per
# seed seed … seed + soup_seeds − 1, their weights averaged (a "model soup") when more than one
finetuned, members = stage_finetune_soup(
    pretrained, raw_returns, market["regime"], params, checkpoints, device=device,
    replay_data=replay_data, monitor=reports,  # TensorBoard + DVCLive: the first seed's runs
)
result = members[0]
folds = result.table()
if soup_seeds > 1:
    print("best epochs per seed:", {seed + i: m.epochs for i, m in enumerate(members)})
folds

# %% [markdown]
# Validation loss per fold before and after fine-tuning (the realised GMV variance
# relative to Ledoit–Wolf; below 1 is better than Ledoit–Wolf).

# %%
fig = plots.finetune_folds(folds)
save_figure(fig, figures / "folds.png")
history = result.final_history
throughput = float(pd.Series(history["samples_per_s"]).median())
print(f"final fit: {result.epochs} epochs on {history['device']}, {throughput:,.0f} windows/s")

# %%
models.mkdir(parents=True, exist_ok=True)
save_model(models / "finetuned.pt", finetuned, pretrained_payload["feature_names"],
           pretrained_payload["target_names"], extra={"epochs": int(result.epochs), "windows": list(windows),
                                                        # the whole recipe (not its process count): notebook 05 fine-tunes experts with it (decision 0045)
                                                        "recipe": {k: getattr(params, k) for k in params.keys() if k != "workers"},
                                                        **({"replay_weight": replay_weight} if replay else {}),
                                                        **({"derived_per_stock": derived_per_stock} if derived_per_stock else {}),
                                                        **({"soup_seeds": soup_seeds} if soup_seeds > 1 else {})})
save_metrics(reports / "metrics" / "finetune.json", {
    "epochs": int(result.epochs),
    **({"member_epochs": [int(m.epochs) for m in members]} if soup_seeds > 1 else {}),
    "device": device,
    "folds": {
        str(k): {c: float(v) for c, v in row.items() if isinstance(v, float)}
        for k, row in folds.iterrows()
    },
    "mean_valid_loss_pretrained": float(folds["valid_loss_pretrained"].mean()),
    "mean_valid_loss_finetuned": float(folds["valid_loss_finetuned"].mean()),
})

# %%
# NBVAL_CHECK_OUTPUT
print(f"final fit: {result.epochs} epochs")
print(folds.drop(columns=["train_end", "val_start", "val_end"]).round(3).to_string())
