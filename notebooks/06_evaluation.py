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
#    or model-selection step has seen, rebalanced every `rebalance` days
#    (`backtest.gmv_backtest`) with the estimation windows of `windows`: annualised out-of-sample volatility, turnover,
#    and the difference to Ledoit–Wolf with a stationary-bootstrap interval.
#
# Every headline row, synthetic and real, reports `models/final.pt`, the model users
# load, through the scikit-learn interface `MLShrinkageCovariance.from_pretrained`,
# exactly as a user would. Which model that is (the synthetic ensemble with family
# experts, or the network fine-tuned on pre-2016 returns) was decided in notebook 5
# by a rule declared before it was run, on pre-2016 cross-universe folds and the
# synthetic validation worlds only (docs/decisions/0021-deploy-rule-cross-universe-folds.md;
# it supersedes 0017, which had switched the portfolio rows to the fine-tuned network
# after seeing the test period). The fold table, final.pt against the best classical
# estimator per fold family and window, is in notebook 5's report (section 5.2) and
# `reports/metrics/compress.json` (`cross_universe_folds`), without the volatility timing
# that `final.pt` applies after the shrinkage (decision 0047 measured it on fresh folds:
# docs/decisions/0047-pre-tested-volatility-timing.md); here every `final.pt` row has it,
# as a user gets it. The fine-tuned network
# (`models/finetuned.pt`) stays as a secondary, clearly labelled row on real returns.
# The learned peer (`models/rie_network.pt`, notebook 5b: RIEnet, Bongiorno, Manolakis
# & Mantegna 2025, trained end to end on pre-2016 realised GMV variance) is one more
# row of the scenario grid and of the backtest: a competitor, not a candidate for final.pt.
#
# A third question is about the goal itself: the multi-target oracle knows each
# replication's Σ; how much of its PRIAL could *any* estimator that cannot tell the
# replications of a scenario apart reach (section 6.5)?

# %% tags=["parameters"]
seed = 5
n_reps = 20
windows = [60, 120]
scenarios = [
    {"name": "1/3/10 p=40 n=40", "family": "spectrum_1_3_10", "p": 40, "n": 40},
    {"name": "factor t6 p=20 n=40", "family": "factor", "p": 20, "n": 40, "df": 6},
    {"name": "S&P p=20 n=40 t5", "family": "sp500", "p": 20, "n": 40, "df": 5, "period": "report"},
]
# scenarios for spectra and heat maps (empty: the first scenario of each family, at most 3)
example_scenarios = []
# the scenario-specialist table of 6.5, written by the specialists study (notebook 11)
# for this grid ("": no specialist yardstick)
specialists_csv = ""
processed_dir = "build/smoke/data"
models_dir = "build/smoke/models"
reports_dir = "build/smoke/reports"
# where the deployed model and its model card are bundled (package data)
weights_dir = "build/smoke/weights"
# 6.7: Ken French's monthly portfolios, estimation windows in months and first backtest month
french_windows = [36]
french_start = "2012-01-01"
ablation_csv = "reports/model_selection/ablation.csv"

# %%
import json

import pandas as pd
from IPython.display import Markdown, display

import shrinklab
from shrinklab import MLShrinkageCovariance
from shrinklab.core.params import notebook_section
from shrinklab.data import universes
from shrinklab.data.returns import load_factor_returns
from shrinklab.evaluation import (
    backtest,
    examples,
    plots,
    tables,
    universe_backtest,
    variance_forecast,
)
from shrinklab.evaluation import feasibility as feasibility_mod
from shrinklab.evaluation import scenarios as scenarios_mod
from shrinklab.evaluation.model_card import bundle_model
from shrinklab.evaluation.reporting import save_figure, save_metrics
from shrinklab.models.registry import load_model
from shrinklab.pipeline import stage_setup

params = notebook_section("evaluate", globals())  # typed and checked: core.params
processed, models, reports, figures = stage_setup(
    "06_evaluation", seed, processed_dir, models_dir, reports_dir
)
final = MLShrinkageCovariance.from_pretrained(models / "final.pt")
ensemble_model = load_model(models / "ensemble.pt")
finetuned_model = load_model(models / "finetuned.pt")
peer_model = load_model(models / "rie_network.pt")  # the learned peer (RIEnet)
print(
    "final model:", final.model_.extra.get("chosen", "?") if hasattr(final, "model_") else "loaded"
)

# %% [markdown]
# ## 6.1 PRIAL on the scenario grid

# %%
grid, scenario_results = scenarios_mod.evaluate_grid(
    scenarios,
    final.model_,
    n_reps=n_reps,
    seed=seed,
    ensemble=ensemble_model,
    return_results=True,
    extra_estimators={"rienet_peer": peer_model.estimate},
)
prial = grid.pivot(index="scenario", columns="estimator", values="prial")
prial.round(1)

# %% [markdown]
# One panel per scenario, one bar per estimator: its PRIAL with ±1 standard error. The
# deployed model (`learned`, final.pt) is red, the learned peer purple, the oracle grey,
# the classical estimators blue; look at whether the red bar reaches the longest blue bar
# in every panel, and how far the oracle bar reaches beyond both.

# %%
fig = plots.prial_bars(grid)
save_figure(fig, figures / "prial_by_scenario.png")

# %% [markdown]
# ## 6.2 Predicted against oracle shrinkage intensity
#
# One point per replication: the learned α̂ against the oracle's α* = Σₖ w*ₖ, coloured
# by scenario, with the predicted standard deviation as error bars. Points on the
# diagonal are perfect; a cloud flat in α* within one colour means the model sets one
# intensity per scenario and does not follow the replication-to-replication changes
# of the oracle.

# %%
per_rep = scenarios_mod.per_replication(scenario_results)
fig = plots.predicted_vs_oracle(
    per_rep["alpha"],
    per_rep["alpha_oracle"],
    uncertainty=per_rep["uncertainty"],
    groups=per_rep["scenario"],
    title="intensity",
)
save_figure(fig, figures / "predicted_vs_oracle_intensity.png")

# %% [markdown]
# ## 6.3 Eigenvalues and matrices of one replication
#
# For a few scenarios, the first replication: the sorted eigenvalues of the true Σ,
# the sample covariance and the estimates. Look at the ends of the spectrum — the
# sample covariance spreads the eigenvalues (largest too large, smallest too small)
# and a good estimate pulls them back towards the true curve. The heat maps show the
# true Σ and the estimates on one colour scale, and below them each estimate's error
# (estimate − Σ): the less structure left in the error, the better.

# %%
for i, example in enumerate(examples.select_examples(scenario_results, example_scenarios)):
    name = example["scenario"]
    mats = examples.example_matrices(example, final.model_, ["ledoit_wolf", "learned", "oracle"])
    estimates = {k: v for k, v in mats.items() if k not in ("sigma", "sample")}
    fig = plots.eigenvalue_spectra(
        mats["sigma"], mats["sample"], estimates, title=f"eigenvalues: {name}"
    )
    save_figure(fig, figures / f"spectra_{i}.png")
    fig = plots.matrix_heatmaps(mats["sigma"], {"sample": mats["sample"], **estimates})
    fig.suptitle(name)
    save_figure(fig, figures / f"heatmaps_{i}.png")

# %% [markdown]
# ## 6.4 Where the learned model loses to the oracle
#
# The shortfall from the oracle in PRIAL points, split into the part due to the
# predicted intensity α̂ (with the oracle's target mix) and the part due to the
# predicted mix π̂; first by scenario family, then by the ratio p/n. A tall intensity
# bar means "right targets, wrong strength"; a tall mix bar "wrong targets".

# %%
for by in ("family", "pn_bucket"):
    decomposition = scenarios_mod.error_decomposition(scenario_results, by=by)
    display(decomposition.round(2))
    label = {"family": "scenario family", "pn_bucket": "p/n"}[by]
    fig = plots.error_decomposition_bars(
        decomposition, title=f"shortfall from the oracle by {label}"
    )
    save_figure(fig, figures / f"error_decomposition_{by}.png")

# %% [markdown]
# ## 6.5 How much of the oracle is within reach? The best constant weights in hindsight
#
# The oracle w*(Σ) is computed per replication from that replication's true Σ. As a
# yardstick, `constant_oracle` finds the single weight vector w̄ (w ≥ 0, Σw ≤ 1)
# that minimises the loss summed over all replications of a scenario, knowing every
# Σ: no estimator that uses one w for the whole scenario — one that cannot tell its
# replications apart — can do better. The gap between the oracle and w̄ is what
# only *per-replication* information can buy; a learned model has that only through
# what each sample reveals about its own Σ. The table shows both with standard errors,
# the learned model's paired difference to w̄ (positive: it adapts to the sample
# beyond any fixed weight), and the spread of α* within a scenario.
#
# A second yardstick sits between the two: a *scenario specialist*, the same kind of
# network trained only on fresh worlds of one scenario
# (`shrinklab.studies.specialists.specialist_network`) and scored on the same
# replications. It reads only the sample, like the learned model, but it knows the
# scenario — its family, p, n, tails and how its Σ are drawn — which a general model
# cannot. What it reaches is what per-replication information in the sample is worth
# under that narrow prior. The specialists need no pipeline model, so they are trained
# by a study, notebook 11 (`dvc repro studies/dvc.yaml:specialists`, part of `make
# studies`), which commits their table (`evaluate.specialists_csv`); it is read here and
# refused unless it covers exactly this grid's scenarios, seeds and replications.

# %%
specialists = (
    feasibility_mod.read_specialist_table(specialists_csv, scenario_results)
    if specialists_csv
    else None
)
feasibility = feasibility_mod.feasibility_table(scenario_results, specialist=specialists)
feas = feasibility_mod.feasibility_summary(feasibility)
feasibility[
    [
        "prial_oracle",
        "se_oracle",
        "prial_constant_oracle",
        "se_constant_oracle",
        "constant_share",
        "prial_best_classical",
        "prial_learned",
        "learned_minus_constant",
        "learned_minus_constant_se",
        "alpha_oracle_mean",
        "alpha_oracle_sd",
        "alpha_constant",
        *(["prial_specialist", "se_specialist"] if specialists is not None else []),
    ]
].round(2)

# %%
print(feasibility_mod.feasibility_text(feas))

# %% [markdown]
# Per scenario, the bars put the best classical estimator and the learned model next
# to the two yardsticks: where the constant-weight bar is far below the oracle bar,
# the oracle's PRIAL comes from knowing each replication's Σ.

# %%
fig = plots.feasibility_bars(feasibility)
save_figure(fig, figures / "oracle_vs_constant_weights.png")

# %% [markdown]
# ## 6.6 Out-of-sample minimum-variance portfolios, 2016–2022

# %%
returns = pd.read_parquet(processed / "sp500_returns.parquet")
estimators = {
    **backtest.classical_estimators(),
    "ML (final)": backtest.learned_estimator(final.model_),
    "ML (fine-tuned, secondary)": backtest.learned_estimator(finetuned_model),
    "RIEnet peer": backtest.batched(peer_model.estimate),
}
backtest_results = backtest.gmv_backtest(returns, estimators, windows=tuple(windows))
summary = backtest.summarise(backtest_results, benchmark="ledoit_wolf", seed=seed)
# fractions shown in %; diff_vs_rival: minus the lowest of the other estimators
pct = ["ann_vol", "diff_vs_benchmark", "ci_low", "ci_high", "diff_vs_rival", "rival_ci_low",
       "rival_ci_high"]  # fmt: skip
(summary.table.assign(**{c: 100 * summary.table[c] for c in pct})
 .rename(columns={c: f"{c} (%)" for c in pct}).round(3))  # fmt: skip

# %% [markdown]
# Each estimator's volatility minus Ledoit–Wolf's, one panel per estimation window, with
# the 95 % stationary-bootstrap interval of the difference: a bar whose interval stays left
# of zero is a lower volatility than Ledoit–Wolf's beyond sampling noise.

# %%
fig = plots.backtest_volatility(summary.table, benchmark="ledoit_wolf")
save_figure(fig, figures / "backtest_volatility.png")

# %% [markdown]
# Cumulative out-of-sample variance of each portfolio over the test period, one panel
# per estimation window: lower is better, and the slope shows when an estimator gains
# or loses — e.g. whether the learned model's advantage comes from the 2020 crash
# alone or accrues steadily.

# %%
for window, cum in summary.cumulative_variance.items():
    fig = plots.cumulative_variance(
        cum, title=f"cumulative out-of-sample variance, window {window}"
    )
    save_figure(fig, figures / f"cumulative_variance_{window}.png")

# %% [markdown]
# ### 6.6.1 A second universe in the test period: five factor ETFs and the index
#
# The same backtest on the one other daily universe bundled for 2016–2022: the five
# MSCI factor ETFs of `skfolio` (momentum, quality, size, minimum volatility, value)
# and the S&P 500 index, p = 6 (`shrinklab.data.universes.etf_returns`), a diversified
# universe with a dominant common factor. No model was trained on these assets; their
# 2015 returns are the ETF fold of the cross-universe folds, their 2016–2022 returns are
# read here only, as a report (no choice reads them). With p = 6 every estimator is close
# to the sample covariance, so the differences are small and the intervals wide.

# %%
etf = universes.etf_returns(
    load_factor_returns(), pd.read_parquet(processed / "sp500_market.parquet")["index_return"]
)
etf_results = backtest.gmv_backtest(etf, estimators, windows=tuple(windows))
etf_summary = backtest.summarise(etf_results, benchmark="ledoit_wolf", seed=seed)
(etf_summary.table.assign(**{c: 100 * etf_summary.table[c] for c in pct})
 .rename(columns={c: f"{c} (%)" for c in pct}).round(3))  # fmt: skip

# %%
fig = plots.backtest_volatility(etf_summary.table, benchmark="ledoit_wolf")
save_figure(fig, figures / "backtest_volatility_etf.png")

# %% [markdown]
# ### 6.6.2 The level of risk: variance forecasts
#
# Minimum-variance weights ignore a common scale of Σ̂, so the backtests above cannot
# tell whether an estimator forecasts the level of volatility well. Here each asset's
# forecast (the diagonal of Σ̂ on a rebalance date) is scored against the mean squared
# return of the 21 days that follow by Patton's QLIKE (0 = perfect;
# `shrinklab.evaluation.variance_forecast`), in both universes of the test period; the
# difference to Ledoit–Wolf's carries its SE over the rebalance dates (a rough guide:
# volatility clusters from one holding period to the next).

# %%
variance_forecasts = pd.concat(
    {
        "20 stocks": variance_forecast.variance_forecast_table(returns, backtest_results),
        "factor ETFs + index": variance_forecast.variance_forecast_table(etf, etf_results),
    },
    names=["universe"],
)
variance_forecasts.drop(columns="dates").unstack("window").round(4)

# %% [markdown]
# ## 6.7 Real universes not built from the bundled stocks: Ken French's monthly portfolios
#
# Every other real universe of the repository is made of the 20 bundled stocks, on which
# the network was fine-tuned, or is the six factor ETFs of 2015. Here the universes are of
# another kind, era and frequency: Ken French's monthly value-weighted portfolios
# (`shrinklab.data.french_portfolios`, from the `linearmodels` wheel), 12 industries, nine
# size × value and nine size × momentum portfolios, and all 30 together — diversified
# universes with a strong common factor, the kind a user brings. GMV portfolios rebalanced
# every month from `french_start` to 2015-12, each estimate from the `french_windows`
# months before (pre-2016 data, like the cross-universe folds; no choice of the pipeline
# reads them). The difference to the best classical estimator of each universe and window
# carries the stationary bootstrap's SE over months (blocks of 12, 2,000 replications).

# %%
french_estimators = {
    **backtest.classical_estimators(),
    "ML (final)": backtest.learned_estimator(final.model_),
    "RIEnet peer": backtest.batched(peer_model.estimate),
}
french_rows, french_tables = universe_backtest.french_portfolio_tables(
    french_estimators, ["ML (final)", "RIEnet peer"], french_windows, start=french_start, seed=seed
)
french_peer = french_tables["RIEnet peer"]
french_vs_classical = french_tables["ML (final)"].assign(
    **{"RIEnet peer": french_peer["RIEnet peer"], "peer difference": french_peer["difference"]}
)
french_vs_classical.round(3)

# %% [markdown]
# One panel per universe and window: each estimator's volatility relative to
# Ledoit–Wolf's (%); the deployed model is red. A red bar left of every blue one is a win.

# %%
fig = plots.fold_small_multiples(
    french_rows,
    highlight=["ML (final)"],
    title=f"Ken French's monthly portfolios, {french_start[:4]}–2015: volatility vs Ledoit–Wolf's",
    period="month",
)
save_figure(fig, figures / "french_portfolios.png")

# %% [markdown]
# ## 6.8 Ablations (from the model-selection run)
#
# What each component of the model is worth (from the model-selection run): each row removes or changes
# one thing against the full model — the deployed member configuration trained for fewer
# epochs (decision 0024); the caption names the base configuration and the epochs the
# table was trained with. The table is written by notebook 07
# (`make model-selection`, a stage of `studies/dvc.yaml`, not part of `make repro`) and
# shown here when it exists.

# %%
ablation = tables.ablation_table(ablation_csv)
if ablation is None:
    display(
        Markdown(f"Ablations not yet run: `make model-selection` (expected at `{ablation_csv}`).")
    )
else:
    display(Markdown(ablation.attrs["caption"]))
    display(ablation)

# %% [markdown]
# ## Headline

# %%
# Every learned row reports final.pt (decision 0021), next to the learned peer's
# portfolio rows (a competitor), on the test period and on Ken French's portfolios
# (section 6.7); the fine-tuned network's portfolio rows follow in a separate, secondary
# table (not the headline).
headline = tables.headline_table(
    grid,
    summary.table,
    backtest_learned="ML (final)",
    peers=["RIEnet peer"],
    universe_rows=french_rows,  # section 6.7: universes not built from the 20 stocks
    universe_setting=f"GMV Ken French portfolios {french_start[:4]}–2015 (monthly)",
)
headline.attrs["caption"] += " " + feasibility_mod.feasibility_text(feas)  # the README says it too
headline

# %%
secondary = tables.headline_table(
    grid, summary.table, backtest_learned="ML (fine-tuned, secondary)"
)
secondary = secondary[secondary["setting"].str.startswith("GMV")]
display(
    Markdown(
        "Secondary (not the headline, not deployed unless it is final.pt): the fine-tuned network."
    )
)
secondary


# %%
def backtest_metrics(table: pd.DataFrame) -> dict:
    """A backtest summary's rows as ``{"window/estimator": {column: value}}`` (numbers as
    floats; flags and the rival's name as they are)."""
    return {
        f"{w}/{e}": {k: (v if isinstance(v, (bool, str)) else float(v)) for k, v in row.items()}
        for (w, e), row in table.iterrows()
    }


save_metrics(
    reports / "metrics" / "evaluation.json",
    {
        "prial": {s: {e: float(v) for e, v in row.items()} for s, row in prial.iterrows()},
        "prial_se": {
            s: {e: float(v) for e, v in row.items()}
            for s, row in grid.pivot(index="scenario", columns="estimator", values="se").iterrows()
        },
        "backtest": backtest_metrics(summary.table),
        "backtest_etf": backtest_metrics(etf_summary.table),
        "variance_forecast": {
            f"{u}/{w}/{e}": {k: float(v) for k, v in row.items()}
            for (u, w, e), row in variance_forecasts.iterrows()
        },
        "n_reps": int(n_reps),
        "headline": tables.headline_json(headline),
        "french_portfolios": {
            f"{f}/{w}": {k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}
            for (f, w), row in french_vs_classical.iterrows()
        },
        "prial_constant_oracle": {
            "by_scenario": {
                s: {
                    "prial": float(row["prial_constant_oracle"]),
                    "se": float(row["se_constant_oracle"]),
                    "share_of_oracle": float(row["constant_share"]),
                    **(
                        {
                            "prial_specialist": float(row["prial_specialist"]),
                            "se_specialist": float(row["se_specialist"]),
                        }
                        if specialists is not None
                        else {}
                    ),
                }
                for s, row in feasibility.iterrows()
            },
            "average": {k: float(v) for k, v in feas.items()},
        },
    },
)

# %%
# NBVAL_CHECK_OUTPUT
print(
    headline[["setting", "best classical", "learned", "learned − best", "goal met"]].to_string(
        index=False
    )
)

# %% [markdown]
# ## The bundled model
#
# The deployed model is copied, byte for byte, into the package
# (`shrinklab/weights/final.pt`), with its model card `final.md` beside it: training
# data, feature schema, sha256, the metrics above with their standard errors, intended
# use and limits. `MLShrinkageCovariance()` with no argument uses it.

# %%
bundled, card = bundle_model(
    models / "final.pt",
    weights_dir,
    json.loads((reports / "metrics" / "evaluation.json").read_text()),
    version=shrinklab.__version__,
)
print(f"bundled {bundled.name} and {card.name}")
