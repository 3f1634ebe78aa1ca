"""Decisions 0038 and 0039: fine-tuning checked on stocks it never saw
(docs/decisions/0038-fine-tuning-on-unseen-stocks.md,
docs/decisions/0039-fine-tuning-on-derived-universes.md;
:mod:`shrinklab.studies.disjoint_finetune`).

Reads ``<root>/params.yaml``, ``<root>/data/processed/`` and
``<root>/models/{pretrained,ensemble,final}.pt`` (``root``: a pipeline run's repository
root). For each of the ``2 · n_splits`` fits, fine-tunes the pretrained network on one half
of the 20 stocks as the finetune stage does (one fine-tuning per ``--variant
name=[derived_per_stock][:replay_weight][:soup]``, an empty value keeping the section's; default
``final_fit=``, the deployed recipe) and backtests it,
assembled as ``final.pt`` is, on universes built from the other half only (dates before
2016). Writes the fold rows to ``<out>/rows.csv`` (a rerun reads them back) and prints
the per-family tables and the paired differences (a variant ``name=:::sp500`` fine-tunes
the S&P expert's members too, ``name=:::none`` no expert; by default the compress
section's ``finetune_experts``, decision 0045; ``name=::::diversified`` lets the non-market
server also serve the diversified worlds); the rule's pair is the last variant
against the first (against the ensemble with one variant). ``--full`` also fine-tunes
each variant on all the stocks and prints its ``gain_kept`` on the synthetic validation
worlds (decision 0021's part (b)), after checking that the section's own recipe gives
``models/finetuned.pt`` back bit for bit.

    OMP_NUM_THREADS=1 python scripts/disjoint_finetune.py <root> --out build/studies/disjoint_finetune
    OMP_NUM_THREADS=1 python scripts/disjoint_finetune.py <root> --seed 2039 --out <dir> \\
        --variant A_fit=0 --variant B_fit=1 --full [--finetune-seeds 6,7,8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shrinklab.data.dataset import TrainingSet, classical_intensities
from shrinklab.evaluation import compression
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.studies.disjoint_finetune import (
    DisjointSpec,
    RunInputs,
    Variant,
    half_splits,
    run_split,
    seed_average,
)
from shrinklab.training.parallel import map_in_processes

CLASSICAL = ["sample", "ledoit_wolf", "oas", "constant_correlation", "single_factor", "qis"]


def _families(value: str) -> tuple[str, ...] | None:
    """``+``-separated families; empty: ``None`` (the section's), ``none``: ``()``."""
    return None if not value else tuple(f for f in value.split("+") if f != "none")


def _variants(items: list[str]) -> dict[str, Variant]:
    """``name=[derived_per_stock][:replay_weight][:soup][:experts][:server]`` items as
    ``{name: Variant}`` (an empty value keeps the section's; ``soup``: seeds averaged,
    decision 0042; ``experts``: ``+``-separated families whose expert is fine-tuned too,
    decision 0045, empty for the compress section's ``finetune_experts`` and ``none`` for
    none; ``server``: families the non-market server also serves, empty or ``none`` for
    none, as in ``final.pt``)."""
    out = {}
    for item in items or ["final_fit="]:
        name, _, value = item.partition("=")
        derived, _, rest = value.partition(":")
        weight, _, rest = rest.partition(":")
        soup, _, rest = rest.partition(":")
        experts, _, server = rest.partition(":")
        out[name] = Variant(
            float(derived) if derived else None,
            float(weight) if weight else None,
            soup=int(soup) if soup else None,
            experts=_families(experts),
            server=_families(server) or (),
        )
    return out


def is_section_recipe(variant: Variant, settings) -> bool:
    """Whether ``variant`` fine-tunes exactly as the ``finetune`` section does."""
    own = (settings.derived_per_stock, settings.replay_weight, settings.seed, settings.soup_seeds)
    return all(v is None or v == s for v, s in zip(variant[:4], own, strict=True))


def full_check(
    root: str, variants: dict[str, Variant], out_dir: Path, seeds: list[int] | None = None
) -> None:
    """Each variant fine-tuned on all the stocks (once per fine-tuning seed of ``seeds``,
    default: the section's): ``gain_kept`` on the validation worlds, with its mean and
    standard deviation over the seeds."""
    run = RunInputs.load(root, workers=2)  # here nothing else runs beside the soup's seeds
    stage = MLShrinkageNetwork.from_pretrained(run.models_dir / "finetuned.pt")
    models = {"ensemble": run.teacher, "finetuned (stage)": stage}
    for name, variant in variants.items():
        for seed in seeds or [None]:
            label = name if seed is None else f"{name}@{seed}"
            v = variant._replace(seed=seed)
            m = run.finetune(run.returns.columns, out_dir / "full" / label, v)
            if is_section_recipe(v, run.settings):
                diff = max(
                    float((a - b).abs().max())
                    for a, b in zip(
                        m.state_dict().values(), stage.state_dict().values(), strict=True
                    )
                )
                print(
                    f"{label} on all stocks against models/finetuned.pt: max |Δ weight| = {diff:.3g}"
                )
            models[label] = m
    valid = TrainingSet.load(Path(root) / "data" / "processed" / "synthetic_valid.pt")
    lw = classical_intensities(valid)["ledoit_wolf"]
    table = compression.tradeoff_table(
        models, valid, lw_intensities=lw, reference="ensemble", repeats=1
    )
    cols = [c for c in table.columns if c in ("norm_prial", "prial", "gain_kept")]
    print(table[cols].round(4).to_string())
    if seeds:
        for name in variants:
            g = table.loc[[f"{name}@{s}" for s in seeds], "gain_kept"]
            print(
                f"{name}: gain_kept {g.mean():.3f} ± {g.std(ddof=1):.3f} (sd over {len(g)} seeds)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--out", default="build/studies/disjoint_finetune")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=DisjointSpec.seed)
    ap.add_argument(
        "--variant",
        action="append",
        help="name=[derived_per_stock][:replay_weight][:soup][:experts][:server]",
    )
    ap.add_argument(
        "--finetune-seeds",
        default="",
        help="comma-separated fine-tuning seeds: each variant is fine-tuned once per seed "
        "and scored by its mean over the seeds (default: the section's seed only)",
    )
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    seeds = [int(x) for x in args.finetune_seeds.split(",") if x.strip()]
    t0 = time.time()
    torch.set_num_threads(1)
    spec = DisjointSpec(seed=args.seed)
    variants = _variants(args.variant)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_file = out_dir / "rows.csv"
    if rows_file.exists():
        rows = pd.read_csv(rows_file)
    else:
        columns = pd.read_parquet(f"{args.root}/data/processed/sp500_returns.parquet").columns
        splits = half_splits(columns, spec.n_splits, np.random.default_rng(spec.seed))
        for s in splits:
            print(f"{s.name}: fit {', '.join(s.fit)} | held out {', '.join(s.held_out)}")
        fits = variants
        if seeds:
            fits = {f"{n}@{s}": v._replace(seed=s) for n, v in variants.items() for s in seeds}
        jobs = [(args.root, s, spec, str(out_dir), fits) for s in splits]
        rows = pd.concat(map_in_processes(run_split, jobs, args.workers), ignore_index=True)
        rows.to_csv(rows_file, index=False)
    if seeds:  # each recipe's score: the mean over its fine-tuning seeds
        members = {n: [f"{n}@{s}" for s in seeds] for n in variants}
        members |= {f"{n}_network": [f"{n}@{s}_network" for s in seeds] for n in variants}
        rows = seed_average(rows, members)
    pd.set_option("display.width", 200)
    names = list(variants)
    vol = ub.fold_table(rows)["mean"]
    print("\nOut-of-sample GMV volatility (annualised %), mean over the held-out folds:")
    print(vol[CLASSICAL + ["ensemble", *names, "final"]].round(2).to_string())
    for model in [*names, "ensemble"]:
        print(f"\n{model} against the best classical estimator (paired over folds):")
        print(ub.best_classical_table(rows, model, CLASSICAL).round(3).to_string())
    print("\nPer fold, mean over windows of the volatility relative to Ledoit–Wolf (%), paired:")
    pairs = [(n, "ensemble") for n in names] + [(f"{n}_network", "ensemble") for n in names]
    pairs += [(n, names[0]) for n in names[1:]]
    pairs += [("final", names[0])]
    for model, ref in pairs:
        d, se, k = compression.fold_delta(rows, model, ref)
        print(f"  {model} − {ref}: {d:+.4f} ± {se:.4f} ({k} folds)")
    a, b = (names[0], names[-1]) if len(names) > 1 else ("ensemble", names[0])
    d, se, _ = compression.fold_delta(rows, b, a)
    tol = max(se, 0.01)
    verdict = "lower" if d < -tol else "higher" if d > tol else "within the tolerance"
    print(f"\nrule pair {b} − {a} = {d:+.4f} ± {se:.4f}, tolerance {tol:.4f}: {verdict}")
    if args.full:
        full_check(args.root, variants, out_dir, seeds)
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
