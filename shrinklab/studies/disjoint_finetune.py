"""studies.disjoint_finetune: fine-tuning checked on stocks it never saw (decision 0038).

The cross-universe folds of :mod:`shrinklab.data.universes` reuse the 20 stocks on whose
pre-2016 windows the deployed network was fine-tuned, so for a fine-tuned network they
are partly in-sample (the bias that docs/decisions/0021-deploy-rule-cross-universe-folds.md
accepts). Here the stocks are cut into two halves: the pretrained network is fine-tuned
on one half exactly as the finetune stage does (:func:`finetune_half`), assembled as
notebook 05 assembles ``final.pt`` (:func:`deployed_structure`), and backtested on
universes built from the *other* half only (:func:`held_out_universes`: the half, derived
portfolios of its stocks, mixtures of both). Each half is in turn the fit half, so
``n_splits`` permutations give ``2 · n_splits`` fits and ``2 · n_splits · (1 + portfolio
sizes + mixture sizes)`` folds. Every date is before 2016.

The backtest is :func:`shrinklab.evaluation.universe_backtest.fold_backtest` (GMV,
rebalance 21 days); the paired per-fold score is
:func:`shrinklab.evaluation.compression.fold_delta` (mean over windows of the volatility
relative to Ledoit–Wolf), as in 0021. The folds share dates, so their standard error
measures the spread across universes, not sampling error over time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from torch import nn

from shrinklab.core.params import load_section
from shrinklab.data import returns as data
from shrinklab.data import universes
from shrinklab.data.dataset import TrainingSet
from shrinklab.evaluation import backtest, compression, universe_backtest
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.models.registry import load_model
from shrinklab.training.finetune_stage import (
    stage_finetune_expert,
    stage_finetune_soup,
    with_derived_portfolios,
)

__all__ = [
    "DisjointSpec",
    "HalfSplit",
    "RunInputs",
    "DEPLOYED",
    "Variant",
    "deployed_structure",
    "finetune_half",
    "half_splits",
    "held_out_universes",
    "recipe_settings",
    "run_split",
    "seed_average",
    "split_rows",
    "with_derived_portfolios",
]


@dataclass(frozen=True)
class DisjointSpec:
    """The asset-disjoint folds of decision 0038."""

    seed: int = 2033
    n_splits: int = 3
    portfolio_sizes: tuple[int, ...] = (5, 10, 20, 50)
    mixture_sizes: tuple[int, ...] = (10, 30)
    windows: tuple[int, ...] = (60, 120, 250)
    start: Any = universes.STOCK_START


class Variant(NamedTuple):
    """One fine-tuning recipe of the study: derived portfolios per stock (0: the stocks
    only), replay weight, seed and ``soup`` (the number of fine-tuning seeds ``seed``,
    ``seed + 1``, … whose networks are averaged, decision 0042), each replacing the
    ``finetune`` section's ``derived_per_stock``, ``replay_weight``, ``seed`` and
    ``soup_seeds`` (``None``: keep it); ``experts``: the families whose expert is
    fine-tuned as well, member by member with the same recipe (decision 0045,
    :func:`shrinklab.training.finetune_stage.stage_finetune_expert`; ``None``: the
    ``compress`` section's ``finetune_experts``, as ``final.pt`` is built; ``()``: none);
    ``server``: families the non-market server also serves in the assembly
    (:func:`shrinklab.evaluation.compression.with_server_families_added`; ``final.pt``
    has none: the research log's "pretrained ensemble for the diversified worlds")."""

    derived_per_stock: float | None = None
    replay_weight: float | None = None
    seed: int | None = None
    soup: int | None = None
    experts: tuple[str, ...] | None = None
    server: tuple[str, ...] = ()


DEPLOYED = Variant()
"""The deployed recipe: the ``finetune`` section as it is."""


@dataclass(frozen=True)
class HalfSplit:
    """One fit: fine-tune on ``fit``, validate on universes of ``held_out`` (disjoint)."""

    name: str
    fit: tuple[str, ...]
    held_out: tuple[str, ...]


def half_splits(columns: Sequence[str], n_splits: int, rng: np.random.Generator) -> list[HalfSplit]:
    """``2 · n_splits`` fits: each random permutation of ``columns`` cut into two halves,
    each half in turn the fit half (``s<k>a`` fits the first half, ``s<k>b`` the second)."""
    columns = list(columns)
    if n_splits < 1 or len(columns) < 4:
        raise ValueError(
            f"need n_splits >= 1 and at least 4 assets, got {n_splits}, {len(columns)}"
        )
    if len(set(columns)) != len(columns):
        raise ValueError("asset names must be unique")
    out = []
    for k in range(n_splits):
        perm = rng.permutation(len(columns))
        half = len(perm) // 2
        a = tuple(columns[i] for i in np.sort(perm[:half]))
        b = tuple(columns[i] for i in np.sort(perm[half:]))
        out += [HalfSplit(f"s{k}a", a, b), HalfSplit(f"s{k}b", b, a)]
    return out


def held_out_universes(
    returns: pd.DataFrame, split: HalfSplit, spec: DisjointSpec, rng: np.random.Generator
) -> list[universes.Universe]:
    """The validation universes of ``split``, built from its held-out stocks only: the
    half itself (family ``halves``), ``derived_portfolios`` of its stocks of every size in
    ``spec.portfolio_sizes`` (``portfolios``), and the half plus ``m`` such portfolios for
    ``m`` in ``spec.mixture_sizes`` (``mixtures``); dates before 2016 only."""
    if len(split.held_out) < 6:
        raise ValueError(
            f"need at least 6 held-out stocks (sector portfolios hold up to 6), got {len(split.held_out)}"
        )
    stocks = data.before_test(returns.loc[:, list(split.held_out)])
    if stocks.isna().any().any():
        raise ValueError("the held-out stocks have missing returns before 2016")
    start = pd.Timestamp(spec.start)
    name = split.name
    out = [universes.Universe("halves", f"{name} half p={stocks.shape[1]}", stocks, start)]
    for p in spec.portfolio_sizes:
        r = universes.derived_portfolios(stocks, p, rng)
        out.append(universes.Universe("portfolios", f"{name} portfolios p={p}", r, start))
    for m in spec.mixture_sizes:
        r = pd.concat([stocks, universes.derived_portfolios(stocks, m, rng)], axis=1)
        out.append(universes.Universe("mixtures", f"{name} mixtures p={r.shape[1]}", r, start))
    return out


def recipe_settings(settings: Any, variant: Variant) -> Any:
    """The ``finetune`` section ``settings`` with the fields that ``variant`` sets replaced."""
    fields = {
        "derived_per_stock": variant.derived_per_stock,
        "replay_weight": variant.replay_weight,
        "seed": variant.seed,
        "soup_seeds": variant.soup,
    }
    return dataclasses.replace(settings, **{k: v for k, v in fields.items() if v is not None})


def finetune_half(
    pretrained: nn.Module,
    returns: pd.DataFrame,
    regimes: pd.Series,
    settings: Any,
    out_dir: str | Path,
    replay_data: Any = None,
    variant: Variant = DEPLOYED,
) -> nn.Module:
    """A copy of ``pretrained`` fine-tuned on the raw ``returns`` (the fit half's stocks)
    exactly as notebook 03 fine-tunes it
    (:func:`shrinklab.training.finetune_stage.stage_finetune_soup`: the stocks before 2016
    plus derived portfolios, one walk-forward fine-tuning per seed, their weight soup):
    ``settings`` is the ``finetune`` section of ``params.yaml``
    (:class:`shrinklab.core.params.finetune.Finetune`) with the fields ``variant`` sets
    replaced (:func:`recipe_settings`; decisions 0039–0042), ``replay_data`` the synthetic
    training set when the replay is on."""
    model, _ = stage_finetune_soup(
        pretrained,
        returns,
        regimes,
        recipe_settings(settings, variant),
        out_dir,
        replay_data=replay_data,
    )
    return model.eval()


def deployed_structure(
    finetuned: nn.Module,
    teacher: Any,
    mixing: str,
    experts: Mapping[str, nn.Module] | None = None,
    extra_server: Sequence[str] = (),
    guarded_experts: Mapping[str, Any] | None = None,
) -> Any:
    """``finetuned`` assembled as ``final.pt`` is (notebook 05, decisions 0033, 0036, 0043
    and 0044): with the family experts of ``teacher`` (the ensemble stage's model) and its
    general model serving the worlds the gate calls non-market
    (:func:`shrinklab.evaluation.compression.with_ensemble_for_non_market`), the modules
    combined by ``mixing`` (the ``compress`` section's ``gate_mixing``); ``experts``
    ``{family: module}`` replace the teacher's experts of those families (decision 0045:
    fine-tuned ones, :func:`shrinklab.evaluation.compression.with_experts_replaced`); the
    non-market server also serves the families of ``extra_server``
    (:func:`shrinklab.evaluation.compression.with_server_families_added`); the
    ``guarded_experts`` ``{family: (module, guard)}`` serve behind their guards (decision
    0058, :func:`shrinklab.evaluation.compression.with_guarded_experts`; the studies that
    call this predate it and pass none)."""
    gated = compression.with_ensemble_for_non_market(
        compression.with_experts_of(finetuned, teacher), teacher
    )
    return compression.deployed_form(gated, mixing, experts, extra_server, guarded_experts).eval()


def split_rows(
    returns: pd.DataFrame,
    split: HalfSplit,
    spec: DisjointSpec,
    models: Mapping[str, Any],
    *,
    classical: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Fold-backtest rows of the ``classical`` estimators (default: all; Ledoit–Wolf, the
    benchmark, must be one) and ``models`` on the held-out universes of ``split``, with a
    ``split`` column. The universes' random portfolios come from a generator seeded by
    ``spec.seed`` and the split's name, so every model sees the same universes."""
    rng = np.random.default_rng([spec.seed, *map(ord, split.name)])
    folds = held_out_universes(returns, split, spec, rng)
    estimators = {
        **(backtest.classical_estimators() if classical is None else dict(classical)),
        **{name: backtest.learned_estimator(m) for name, m in models.items()},
    }
    rows = universe_backtest.fold_backtest(folds, estimators, spec.windows)
    rows.insert(0, "split", split.name)
    return rows


@dataclass(frozen=True)
class RunInputs:
    """What the fine-tunings of a pipeline run read: ``root`` a repository root holding
    ``params.yaml`` (the ``finetune`` section, and the ``compress`` section's
    ``gate_mixing`` and ``finetune_experts``), ``data/processed/`` (returns, market
    regimes, synthetic training worlds for the replay) and ``models/``."""

    models_dir: Path
    settings: Any
    returns: pd.DataFrame
    regimes: pd.Series
    replay_data: Any
    pretrained: nn.Module
    teacher: Any
    gate_mixing: str = "hard"
    tuned_expert_families: tuple[str, ...] = ()

    @classmethod
    def load(cls, root: str | Path, *, workers: int = 1) -> RunInputs:
        """The run's inputs; the soup's fine-tunings run in ``workers`` processes (default
        1: the study already runs its splits in processes, and the networks are the same
        for any number)."""
        root = Path(root)
        processed = root / "data" / "processed"
        settings = load_section("finetune", root / "params.yaml")
        settings = dataclasses.replace(settings, workers=int(workers))
        market = data.before_test(pd.read_parquet(processed / "sp500_market.parquet"))
        compress = load_section("compress", root / "params.yaml")
        replay = None
        if settings.replay_weight > 0:
            replay = TrainingSet.load(processed / "synthetic_train.pt")
        return cls(
            models_dir=root / "models",
            settings=settings,
            returns=pd.read_parquet(processed / "sp500_returns.parquet"),
            regimes=market["regime"],
            replay_data=replay,
            pretrained=MLShrinkageNetwork.from_pretrained(root / "models" / "pretrained.pt"),
            teacher=load_model(root / "models" / "ensemble.pt"),
            gate_mixing=compress.gate_mixing,
            tuned_expert_families=tuple(compress.finetune_experts),
        )

    def finetune(
        self, stocks: Sequence[str], out_dir: str | Path, variant: Variant = DEPLOYED
    ) -> nn.Module:
        """:func:`finetune_half` of the pretrained network on ``stocks`` with ``variant``."""
        if variant.soup is not None and variant.soup < 1:
            raise ValueError(f"soup must be >= 1, got {variant.soup}")
        return finetune_half(
            self.pretrained,
            self.returns.loc[:, list(stocks)],
            self.regimes,
            self.settings,
            out_dir,
            self.replay_data,
            variant,
        )

    def finetune_experts(
        self, stocks: Sequence[str], out_dir: str | Path, variant: Variant
    ) -> dict[str, nn.Module]:
        """``{family: the teacher's expert of the family fine-tuned on stocks}`` for each
        family of ``variant.experts`` (``None``: of :attr:`tuned_expert_families`, the
        compress section's ``finetune_experts``), by
        :func:`shrinklab.training.finetune_stage.stage_finetune_expert` with the section's
        recipe as ``variant`` changes it; checkpoints in ``out_dir/<family>``."""
        families = self.tuned_expert_families if variant.experts is None else variant.experts
        experts = compression.expert_modules(self.teacher, families)
        settings = recipe_settings(self.settings, variant)
        return {
            f: stage_finetune_expert(
                experts[f],
                f,
                self.returns.loc[:, list(stocks)],
                self.regimes,
                settings,
                Path(out_dir) / f,
                replay_data=self.replay_data,
            )
            for f in families
        }


def run_split(job: tuple) -> pd.DataFrame:
    """One fit of decisions 0038 / 0039 from a pipeline run's outputs: ``job = (root,
    split, spec, out_dir[, variants])`` with ``root`` a repository root holding
    ``params.yaml``, ``data/processed/`` and ``models/{pretrained,ensemble,final}.pt``, and
    ``variants`` ``{name: Variant}`` (default ``{"final_fit": DEPLOYED}``). Each variant is fine-tuned on the fit half (checkpoints in
    ``out_dir/<split>/<name>``, :func:`finetune_half`) and assembled as ``final.pt``
    (:func:`deployed_structure`, column ``<name>``; its bare network ``<name>_network``).
    Returns :func:`split_rows` of those, ``ensemble`` (E, never fine-tuned) and ``final``
    (the deployed model, fine-tuned on all 20 stocks: the held-out stocks are in-sample
    for it). Variants that differ only in ``experts`` and ``server`` share one fine-tuned
    network, and those that differ only in ``server`` their fine-tuned experts too (each
    fine-tuned once, under the first of them). A module-level function, so that
    :func:`shrinklab.training.parallel.map_in_processes` can run the fits side by side."""
    root, split, spec, out_dir = job[:4]
    variants = dict(job[4]) if len(job) > 4 else {"final_fit": DEPLOYED}
    run = RunInputs.load(root)
    teacher = run.teacher
    models: dict[str, Any] = {"ensemble": teacher}
    networks: dict[Variant, nn.Module] = {}
    tuned: dict[Variant, dict[str, nn.Module]] = {}
    for name, variant in variants.items():
        folder = Path(out_dir) / split.name / name
        recipe = variant._replace(experts=None, server=())
        if recipe not in networks:
            networks[recipe] = run.finetune(list(split.fit), folder, variant)
        finetuned = networks[recipe]
        fine_tuning = variant._replace(server=())
        if fine_tuning not in tuned:
            tuned[fine_tuning] = run.finetune_experts(list(split.fit), folder / "experts", variant)
        models[name] = deployed_structure(
            finetuned, teacher, run.gate_mixing, tuned[fine_tuning], variant.server
        )
        models[f"{name}_network"] = finetuned
    models["final"] = load_model(run.models_dir / "final.pt")
    return split_rows(run.returns, split, spec, models)


def seed_average(rows: pd.DataFrame, members: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Fold rows with each ``name`` of ``members`` added as the mean, per fold and window,
    of its member estimators' ``ann_vol`` and ``rel_vol`` (e.g. one recipe fine-tuned with
    several seeds: the recipe's score, not one seed's). Every member must be on every
    fold and window of the rows."""
    keys = ["split", "family", "fold", "p", "window"]
    keys = [k for k in keys if k in rows.columns]
    added = []
    for name, names in members.items():
        names = list(names)
        if not names or name in set(rows["estimator"]):
            raise ValueError(f"{name!r}: needs members and a name not already in the rows")
        sub = rows[rows["estimator"].isin(names)]
        counts = sub.groupby(keys).size()
        if len(counts) == 0 or (counts != len(names)).any():
            raise ValueError(f"{name!r}: every member {names} must be on every fold and window")
        mean = sub.groupby(keys, sort=False)[["ann_vol", "rel_vol"]].mean().reset_index()
        mean["estimator"] = name
        added.append(mean[rows.columns])
    return pd.concat([rows, *added], ignore_index=True)
