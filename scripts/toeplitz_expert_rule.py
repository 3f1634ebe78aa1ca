"""The rule of decisions 0055–0058 (docs/decisions/0055-toeplitz-expert-in-the-soft-mixture.md,
0056-toeplitz-expert-with-other-worlds.md, 0057-toeplitz-expert-where-the-gate-is-sure.md,
0058-toeplitz-expert-sure-and-in-range.md):
does ``final.pt`` do better when the Toeplitz worlds get an expert of their own instead of
the pooled non-market server? With ``--others f`` (0056) the expert's members also train
on a share ``f`` of the other families' worlds, drawn with each member's seed
(:func:`shrinklab.studies.family_mixing.with_others`, decision 0014's mixed experts). With
``--sure τ`` (0057) the expert takes the gate's probability of ``toeplitz`` only where it
exceeds τ; elsewhere the pooled server keeps it, as in A (:func:`guarded`); with
``--in-range`` too (0058), only where p/n is also inside the training worlds' range
(``params.yaml: data_prep.ratio_max``).

Reads ``<root>/data/processed/`` (returns, ``synthetic_{train,valid}.pt``),
``<root>/models/{final,pretrained}.pt`` and the synthetic holdout (6,000 worlds, seed 777;
:func:`shrinklab.studies.deploy_rule.rule_holdout`). A = ``final.pt`` as it was before
decision 0058 (without its guarded expert, :func:`as_before_0058`); B = the same model
with one more module behind its gate, serving the ``toeplitz`` family: an expert trained by
the ensemble stage's recipe (``params.yaml: ensemble``; :func:`toeplitz_expert`), weighed
in the soft mixture by the gate's probability of that family, which the pooled non-market
server no longer receives. B keeps A's volatility timing. Prints the rule's parts and the
verdict:

1. the paired fold difference B − A (per-fold volatility relative to Ledoit–Wolf, mean
   over the windows) on fresh folds of ``--fresh-seed`` and on the compress stage's folds,
   each at most max(1 SE, 0.01) above zero;
2. the normalised PRIAL difference B − A on the holdout and on the validation worlds,
   each at least −1 SE; on the holdout's Toeplitz worlds, positive and above its SE;
3. the selection and wide grids: no more failures, mean PRIAL not lower;
4. a Toeplitz map of ``--map-seed`` (ρ 0.15–0.6, p 60 and 200, p/n ½, 1 and 2; 100
   replications): B behind the best classical estimator by PRIAL in fewer scenarios
   than A;
5. the stress scenarios of ``scripts/stress_scenarios.py`` at ``--stress-seed``: B misses
   by PRIAL in no more scenarios than A.

    OMP_NUM_THREADS=1 python scripts/toeplitz_expert_rule.py <root> --fresh-seed 2099 \\
        --map-seed 2101 --stress-seed 2103                      # 0055
    OMP_NUM_THREADS=1 python scripts/toeplitz_expert_rule.py <root> --others 0.2 \\
        --fresh-seed 2105 --map-seed 2107 --stress-seed 2109     # 0056
    OMP_NUM_THREADS=1 python scripts/toeplitz_expert_rule.py <root> --sure 0.5 \\
        --fresh-seed 2111 --map-seed 2113 --stress-seed 2115     # 0057
    OMP_NUM_THREADS=1 python scripts/toeplitz_expert_rule.py <root> --sure 0.5 --in-range \\
        --fresh-seed 2117 --map-seed 2119 --stress-seed 2121     # 0058
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from shrinklab.core.params import load_section
from shrinklab.evaluation import backtest, compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.experts import GatedExpertModel
from shrinklab.models.network import predict_numpy
from shrinklab.models.registry import load_model
from shrinklab.models.switched import before_switch
from shrinklab.studies import selection_grid
from shrinklab.studies.deploy_rule import FoldSpec, fold_rows, load_rule_data, rule_holdout
from shrinklab.studies.family_mixing import with_others
from shrinklab.training import ensembles, experts
from shrinklab.training.parallel import train_members

FAMILY = "toeplitz"


def _stress_scenarios() -> Any:
    """``scripts/stress_scenarios.py`` as a module (its map and its stress grid)."""
    path = Path(__file__).with_name("stress_scenarios.py")
    spec = importlib.util.spec_from_file_location("stress_scenarios", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toeplitz_expert(root: str, out_dir: Path, workers: int = 2, others: float = 0.0) -> nn.Module:
    """The ``toeplitz`` expert as the ensemble stage would train it with ``toeplitz`` in
    ``ensemble.family_experts``: its members (seeds ``ensemble.seed``, …) on the Toeplitz
    worlds of ``synthetic_train.pt``, early-stopped on those of the stage's validation
    half, with the pretrained network's architecture and training settings; with
    ``others > 0`` each member's training and validation worlds also hold that share of
    the other families' worlds, drawn with the member's seed."""
    s = load_section("ensemble", Path(root) / "params.yaml")
    inputs = ensembles.ensemble_inputs(
        Path(root) / "data" / "processed",
        Path(root) / "models",
        seed=s.seed,
        member_epochs=s.member_epochs,
    )
    jobs = experts.family_expert_jobs(
        inputs.train_set,
        inputs.valid_set,
        [FAMILY],
        out_dir,
        model_config=inputs.pretrained["config"],
        config=inputs.config,
        seed=s.seed,
        n_members=s.expert_members,
    )
    if others > 0:
        jobs = [
            dataclasses.replace(
                job,
                train_set=with_others(inputs.train_set, FAMILY, others, job.seed),
                valid_set=with_others(inputs.valid_set, FAMILY, others, job.seed),
            )
            for job in jobs
        ]
    members = train_members(jobs, workers)
    return experts.group_experts([FAMILY], members, s.expert_members)[FAMILY]


def with_expert(
    model: GatedExpertModel, expert: nn.Module, guard: dict[str, Any] | None = None
) -> GatedExpertModel:
    """``model`` with ``expert`` serving the ``toeplitz`` family (its gate, threshold,
    pooling, mixing, other modules and volatility timing shared or copied), behind
    ``guard`` if given (:data:`shrinklab.models.experts.GUARD_KEYS`)."""
    if not isinstance(model, GatedExpertModel) or model.mixing != "soft":
        raise ValueError("expected final.pt with the soft mixture of decision 0044")
    twin = GatedExpertModel(
        model.general,
        model.expert_map() | {FAMILY: expert},
        model.gate,
        threshold=model.threshold,
        pool_shared=model.pool_shared,
        mixing=model.mixing,
        guards=None if guard is None else {FAMILY: guard},
    ).eval()
    twin.extra = copy.deepcopy(getattr(model, "extra", {}))
    return twin


def as_before_0058(final: GatedExpertModel) -> GatedExpertModel:
    """A: ``final`` without the guarded experts decision 0058 gave it
    (:func:`shrinklab.evaluation.compression.without_guarded_experts`), with its volatility
    timing; a ``final.pt`` from before 0058: itself."""
    a = compression.without_guarded_experts(final).eval()
    a.extra = copy.deepcopy(getattr(final, "extra", {}))
    return a


def guarded(
    model: GatedExpertModel, expert: nn.Module, threshold: float, max_ratio: float | None
) -> GatedExpertModel:
    """``model`` with ``expert`` serving ``toeplitz`` behind a guard (decisions 0057 and
    0058; :func:`shrinklab.evaluation.compression.with_guarded_experts`, as the compress
    stage deploys it): the family's probability counts for the expert only where it
    exceeds ``threshold`` (and, with ``max_ratio``, p/n is at most it); elsewhere for
    ``model``'s module of ``toeplitz`` (the pooled server). Keeps ``model``'s volatility
    timing."""
    spec = {"threshold": threshold, "max_p_over_n": max_ratio}
    twin = compression.with_guarded_experts(model, {FAMILY: (expert, spec)}).eval()
    twin.extra = copy.deepcopy(getattr(model, "extra", {}))
    return twin


def _map_misses(stress: Any, models: dict[str, Any], seed: int) -> dict[str, int]:
    specs = [
        s
        for p in (60, 200)
        for s in stress.map_specs(
            FAMILY, "rho", [0.15, 0.25, 0.35, 0.45, 0.6], [p], [2 * p, p, p // 2]
        )
    ]
    out = {}
    for k, m in models.items():
        table = stress.score(m, specs, 100, seed)
        out[k] = int(table.miss_prial.sum())
        print(f"4. map {k}: {out[k]} misses of {len(specs)}")
        print(stress.format_map(table, specs[:15], "rho"))
        print(stress.format_map(table, specs[15:], "rho"))
    return out


def main(
    root: str,
    fresh_seed: int,
    map_seed: int,
    stress_seed: int,
    others: float = 0.0,
    sure: float | None = None,
    in_range: bool = False,
) -> None:
    t0 = time.time()
    if in_range and sure is None:
        raise ValueError("--in-range goes with --sure")
    a = as_before_0058(before_switch(load_model(f"{root}/models/final.pt")).eval())
    with tempfile.TemporaryDirectory() as tmp:
        expert = toeplitz_expert(root, Path(tmp), others=others)
    if sure is None:
        b = with_expert(a, expert)
    else:
        ratio_max = load_section("data_prep", Path(root) / "params.yaml").ratio_max
        b = guarded(a, expert, sure, ratio_max if in_range else None)
    models = {"A": a, "B": b}
    print(f"expert trained ({time.time() - t0:.0f} s)")
    rule_data = load_rule_data(f"{root}/data", cut_test=True)

    stage = FoldSpec.from_section(load_section("compress", f"{root}/params.yaml"))
    ok: dict[str, bool] = {}
    lw = {"ledoit_wolf": backtest.classical_estimators()["ledoit_wolf"]}
    for spec in (dataclasses.replace(stage, seed=fresh_seed), stage):
        rows = fold_rows(rule_data, models, folds=spec, classical=lw)
        print(ub.fold_table(rows)["mean"].round(3).to_string())
        mean, se, n = compression.fold_delta(rows, "B", "A")
        ok[f"folds {spec.seed}"] = compression.not_worse(mean, se)
        print(f"1. folds seed {spec.seed}: B - A = {mean:+.4f} +- {se:.4f} points over {n} folds")

    holdout = rule_holdout(root)
    for name, worlds in (("holdout", holdout), ("validation worlds", rule_data.valid)):
        w = {k: predict_numpy(m, worlds.features).intensities for k, m in models.items()}
        delta, delta_se = compression.normalised_prial_delta(w["B"], w["A"], worlds)
        ok[name] = delta >= -delta_se
        print(
            f"2. {name} ({len(worlds.d)}): normalised PRIAL B - A = {delta:+.3f} +- {delta_se:.3f}"
        )
        if name == "holdout":  # its Toeplitz worlds, from the same predictions
            idx = np.flatnonzero(np.asarray(worlds.families) == FAMILY)
            sub = worlds.subset(idx.tolist())
            delta, delta_se = compression.normalised_prial_delta(w["B"][idx], w["A"][idx], sub)
            ok["holdout Toeplitz worlds"] = compression.gains(delta, delta_se)
            print(
                f"2. holdout Toeplitz worlds ({len(idx)}): B - A = {delta:+.3f} +- {delta_se:.3f}"
            )

    table, ok["grids"], summary = selection_grid.grid_comparison(models, "A", "B")
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    print(f"3. grids: {summary} ({time.time() - t0:.0f} s)")

    stress = _stress_scenarios()
    misses = _map_misses(stress, models, map_seed)
    ok["map"] = misses["B"] < misses["A"]
    stress_misses = {}
    for k, m in models.items():
        t = stress.score(m, stress.stress_grid(), 100, stress_seed)
        stress_misses[k] = int(t.miss_prial.sum())
        cols = ["prial", "prial_best", "prial_diff", "prial_diff_se", "loss_vs_best", "miss_prial"]
        print(f"5. stress scenarios, {k}:")
        print(t[cols].round(3).to_string())
    ok["stress"] = stress_misses["B"] <= stress_misses["A"]
    print(f"5. stress scenarios, misses by PRIAL: A {stress_misses['A']}, B {stress_misses['B']}")
    for part, holds in ok.items():
        print(f"   {part}: {'holds' if holds else 'fails'}")
    print(f"verdict: {'adopt B' if all(ok.values()) else 'keep A'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=".")
    parser.add_argument("--fresh-seed", type=int, default=2099)
    parser.add_argument("--map-seed", type=int, default=2101)
    parser.add_argument("--stress-seed", type=int, default=2103)
    parser.add_argument("--others", type=float, default=0.0, help="share of other worlds (0056)")
    parser.add_argument("--sure", type=float, default=None, help="gate threshold (0057)")
    parser.add_argument("--in-range", action="store_true", help="p/n in the training range (0058)")
    args = parser.parse_args()
    main(
        args.root,
        args.fresh_seed,
        args.map_seed,
        args.stress_seed,
        args.others,
        args.sure,
        args.in_range,
    )
