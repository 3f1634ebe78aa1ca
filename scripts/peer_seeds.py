"""The learned peer over its own training seeds, on the 2016–2022 test period (a report)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/peer_seeds.py <root> [--seeds 0-29] [--french] \
        [--out build/studies/peer_seeds] [--workers 2]

The README's headline compares ``final.pt`` with one fit of the learned peer (RIEnet), the
pipeline's, at the ``peer`` section's seed. This retrains the peer at each seed of
``--seeds`` (``a-b`` or a comma list) by that section, everything else unchanged, and
backtests every fit, ``final.pt`` and the classical estimators on the test period of the
20 stocks and of the factor ETFs + index (:mod:`shrinklab.studies.peer_seeds`). ``root``
is a pipeline run's repository root (``params.yaml``, ``data/processed/``,
``models/final.pt``, ``models/rie_network.pt``). Writes ``<out>/seeds.csv`` and
``<out>/reference.csv`` (a rerun reads them back, and trains only the seeds not in them;
``--french`` adds Ken French's universes before 2016 to both, and a folder written with
it is not read without it, nor the other way round) and prints per universe and window the peer's mean ± SE over the seeds, its range, how
many seeds are below ``final.pt``, and the same on the peer's pre-2016 validation block.
It chooses nothing: the test period is a report, and the pipeline's peer keeps its seed.
About 20 s per seed on one core (25 s with ``--french``): 296 s for 30 seeds with two
workers on the 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from shrinklab.studies.peer_seeds import french_means, reference_rows, seed_rows, seed_summary
from shrinklab.training.parallel import map_in_processes

NEEDED = ("params.yaml", "models/final.pt", "models/rie_network.pt",
          "data/processed/sp500_returns.parquet", "data/processed/sp500_market.parquet")  # fmt: skip


def parse_seeds(text: str) -> list[int]:
    """``"0-19"`` → 0 … 19; ``"8,11,12"`` → those; a mix of both, in order, without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            if int(b) < int(a):
                raise ValueError(f"empty seed range {part!r}")
            new = range(int(a), int(b) + 1)
        else:
            new = [int(part)]
        seeds += [s for s in new if s not in seeds]
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def has_french(rows: pd.DataFrame) -> bool:
    """Whether ``rows`` (of ``reference.csv`` or ``seeds.csv``) hold Ken French's universes."""
    return bool(rows["universe"].astype(str).str.startswith("french ").any())


def _seed_job(job: tuple[str, int, bool]) -> pd.DataFrame:
    root, seed, french = job
    return seed_rows(root, seed, french)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--seeds", default="0-29")
    ap.add_argument("--out", default="build/studies/peer_seeds")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--french", action="store_true", help="also Ken French's universes (pre-2016)")
    args = ap.parse_args()
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as err:
        ap.error(str(err))
    if missing := [f for f in NEEDED if not (Path(args.root) / f).is_file()]:
        ap.error(f"{args.root} lacks {', '.join(missing)} (run the pipeline's stages first)")
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref_file, seeds_file = out / "reference.csv", out / "seeds.csv"
    if ref_file.exists():
        reference = pd.read_csv(ref_file)
        if has_french(reference) != args.french:
            ap.error(
                f"{out} was written {'without' if args.french else 'with'} --french: use another --out"
            )
    else:
        reference = reference_rows(args.root, french=args.french)
        reference.to_csv(ref_file, index=False)
    done = pd.read_csv(seeds_file) if seeds_file.exists() else pd.DataFrame(columns=["seed"])
    todo = [s for s in seeds if s not in set(done["seed"])]
    if todo:
        jobs = [(args.root, s, args.french) for s in todo]
        new = map_in_processes(_seed_job, jobs, args.workers)
        done = pd.concat([done, *new] if len(done) else new, ignore_index=True)
        done.to_csv(seeds_file, index=False)
    rows = done[done["seed"].isin(seeds)]
    pd.set_option("display.width", 220)
    table = seed_summary(rows, reference)
    print(
        f"Annualised GMV volatility (%), test period 2016–2022; the peer over {len(seeds)} seeds:"
    )
    print(table.round(2).to_string())
    valid = rows[rows["universe"] == "validation"].pivot_table(
        index="window", columns="estimator", values="ann_vol", aggfunc=["mean", "std", "min", "max"]
    )
    print("\nThe peer's pre-2016 validation block (early stopping), over the seeds:")
    print(valid.round(2).to_string())
    if args.french:
        means = french_means(rows, reference)
        peers = means[means.index.str.startswith("peer ")]
        final = means.loc["final", "mean"]
        print("\nKen French's cells, volatility vs Ledoit–Wolf's (%), mean over the cells:")
        print(means[~means.index.str.startswith("peer ")].round(2).to_string())
        print(f"the peer over {len(peers)} seeds: {peers['mean'].mean():+.2f} ± "
              f"{peers['mean'].std(ddof=1) / len(peers) ** 0.5:.2f} "
              f"[{peers['mean'].min():+.2f}, {peers['mean'].max():+.2f}], "
              f"below final.pt's {final:+.2f} at {(peers['mean'] < final).sum()} seeds")  # fmt: skip
    epochs = rows.groupby("seed")["best_epoch"].first()
    print(f"\nbest epochs: {epochs.value_counts().sort_index().to_dict()}")
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
