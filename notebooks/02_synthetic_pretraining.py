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
# # 2. Pretraining on synthetic worlds
#
# The network of the specification (input batch norm and input dropout
# `input_dropout`, LeakyReLU blocks of widths `hidden_dims` with batch norm, dropout
# `dropout` and residual connections — both rates from params.yaml's `pretrain`
# section, which departs from the specification's rates as
# docs/decisions/0004-dropout-0.1.md records — a sigmoid intensity head α, a softmax
# target-weight head π and a variance head) is trained on synthetic samples whose oracle weights w* are known.
# Its output is *anchored*: a learned gate mixes the free head απ with the
# classical estimators of the family (Ledoit–Wolf, OAS, constant correlation,
# single index, QIS, and multi-target shrinkage over four of the targets —
# Lancewicki & Aladjem 2014), read from the features, so each of them is one point
# the network can reach exactly. With `gate = "sparsemax"` (params.yaml) the gate is a
# Euclidean projection onto the simplex (Martins & Astudillo 2016) instead of a
# softmax: it can put exactly zero on an estimator, so the output can be pure QIS
# where the other targets are far off, instead of keeping a few per cent on them.
#
# The loss is the specification's composite loss: α·intensity MSE + β·Frobenius
# loss of Σ̂ normalised by the sample covariance's loss (a loss of 1 means "no
# better than S"; `best_classical_weight` adds λ times the loss relative to the
# world's best classical estimator, floored at `gap_floor`·d: λ = 0.01 in params.yaml, see
# docs/decisions/0009-loss-l-over-d.md; the edge-case worlds, near-singular and dominant-factor, weigh
# `edge_weight` in it: they are there so that the network stays sane in such worlds,
# and at full weight their very steep losses dominate the gradients) + γ·spectrum loss, plus a Gaussian NLL that trains the uncertainty
# head; the weights, learning rate, weight decay and clipping come
# from the model-selection study (notebook 07). The Frobenius term uses the stored
# K×K quadratic form, so a sample costs O(K²) whatever its p. Adam, cosine
# annealing with warm restarts (each cycle twice as long as the one before,
# `shrinklab.training.config`; params.yaml's `epochs` ends on a cycle), gradient clipping, early stopping that restores the best weights.
# A curriculum (easy worlds first) is available but off in params.yaml's `pretrain`
# section: the model-selection ablation found validation PRIAL higher without it.

# %% tags=["parameters"]
seed = 1
epochs = 4
batch_size = 256
lr = 0.002
weight_decay = 0.0001
hidden_dims = [64, 32, 16]
dropout = 0.3
input_dropout = 0.1
attention = False
gate = "softmax"
curriculum = True
patience = 10
# loss weights and clipping (TrainConfig defaults; params.yaml holds the tuned ones)
intensity_weight = 0.5
matrix_weight = 0.3
spectrum_weight = 0.0
uncertainty_weight = 0.05
clip_norm = 1.0
# per-world normaliser of the Frobenius loss (shrinklab.training.objective.loss_normaliser)
loss_normaliser = "sample"
best_classical_weight = 0.0
# floor of L_best in that term, as a fraction of d (TrainConfig.gap_floor)
gap_floor = 0.01
# weight of the edge-case worlds (near-singular, dominant factor) in the Frobenius term
edge_weight = 1.0
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"

# %%

import matplotlib.pyplot as plt
import pandas as pd

from shrinklab.core.params import notebook_section
from shrinklab.core.targets import TARGET_NAMES, combine
from shrinklab.data import dataset
from shrinklab.evaluation import plots
from shrinklab.evaluation.reporting import save_figure, save_metrics
from shrinklab.evaluation.selection import prial_table
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.models.registry import save_model
from shrinklab.pipeline import run_dir, stage_setup
from shrinklab.training.config import TrainConfig
from shrinklab.training.loop import train
from shrinklab.training.monitor import RunLogger

params = notebook_section("pretrain", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "02_synthetic_pretraining", seed, processed_dir, models_dir, reports_dir
)
train_set = dataset.TrainingSet.load(processed / "synthetic_train.pt")
valid_set = dataset.TrainingSet.load(processed / "synthetic_valid.pt")
print(f"{len(train_set)} training and {len(valid_set)} validation samples, {train_set.features.shape[1]} features")

# %%
config = TrainConfig(
    lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
    patience=patience, curriculum=curriculum, seed=seed, device="cpu",
    intensity_weight=intensity_weight, matrix_weight=matrix_weight, spectrum_weight=spectrum_weight,
    uncertainty_weight=uncertainty_weight, clip_norm=clip_norm,
    loss_normaliser=loss_normaliser, best_classical_weight=best_classical_weight,
    gap_floor=gap_floor, edge_weight=edge_weight,
)
model = MLShrinkageNetwork(
    input_dim=train_set.features.shape[1], num_targets=len(TARGET_NAMES),
    hidden_dims=hidden_dims, dropout=dropout, input_dropout=input_dropout,
    use_attention=attention, gate=gate,
)
print(model)

# %% [markdown]
# Checkpoints go to a run folder keyed by the parameters and the data, so a
# killed run resumes where it stopped and a changed run starts afresh.

# %%
checkpoints = run_dir("pretrain", config.to_dict(), processed / "synthetic_train.pt")
log = RunLogger("pretrain", reports)  # reports/tensorboard/pretrain and reports/dvclive/pretrain
history = train(model, train_set, valid_set, config, out_dir=checkpoints, logger=log)
print(f"best epoch {history['best_epoch']}, best validation loss {history['best_valid_loss']:.4f}")

# %%
curve = pd.DataFrame({k: history[k] for k in ("epoch", "train_loss", "valid_loss", "valid_frobenius", "lr", "grad_norm_mean", "alpha_mean")})
(reports / "plots").mkdir(parents=True, exist_ok=True)
curve.to_csv(reports / "plots" / "pretrain_curve.csv", index=False)
fig = plots.training_curves(history)
save_figure(fig, figures / "training_curves.png")

# %% [markdown]
# ## Does it shrink where it should?
#
# PRIAL on the held-out validation worlds (100 = as good as the rotation-
# equivariant oracle FSOPT, 0 = no better than S). Every classical estimator of
# the family is one point w of it, so its loss comes from the same quadratic form.

# %%
table = prial_table({"network": model}, valid_set, extra_intensities=dataset.classical_intensities(valid_set))
table = table.sort_values("prial", ascending=False).reset_index(drop=True)
table

# %%
out = model.predict(valid_set.features)
fig = plots.predicted_vs_oracle(out.alpha.numpy(), valid_set.alpha_star.numpy())
save_figure(fig, figures / "predicted_vs_oracle.png")

# %%
# TensorBoard images: true vs sample vs predicted matrices and their spectra, for the
# first validation world of the smallest and of the largest dimension
for bucket in valid_set.rebuild_matrices([0, len(valid_set) - 1]):
    i, S, sigma = int(bucket.indices[0]), bucket.S[0].double(), bucket.sigma[0].double()
    sigma_hat = combine(S, bucket.T[0].double(), out.intensities[i].double())
    for tag, fig in ((f"matrices/world_{i}", plots.matrix_heatmaps(sigma, {"sample S": S, "network": sigma_hat})),
                     (f"spectra/world_{i}", plots.eigenvalue_spectra(sigma, S, {"network": sigma_hat}))):
        log.log_figure(tag, fig)
        plt.close(fig)
log.close()

# %%
models.mkdir(parents=True, exist_ok=True)
save_model(models / "pretrained.pt", model, train_set.feature_names, TARGET_NAMES,
           extra={"train_config": config.to_dict(), "best_epoch": int(history["best_epoch"])})
prial = dict(zip(table["model"], table["prial"], strict=True))
save_metrics(reports / "metrics" / "pretrain.json", {
    "best_epoch": int(history["best_epoch"]),
    "best_valid_loss": float(history["best_valid_loss"]),
    "epochs_run": len(history["epoch"]),
    "valid_prial": prial,
})

# %%
# NBVAL_CHECK_OUTPUT
n_parameters = sum(t.numel() for t in model.parameters())
print(f"{n_parameters} parameters; {len(history['epoch'])} epochs run, best epoch {history['best_epoch']}, "
      f"best validation loss {history['best_valid_loss']:.3f}")
print("validation PRIAL %:", {k: round(float(v), 1) for k, v in prial.items()})
