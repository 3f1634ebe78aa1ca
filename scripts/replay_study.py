"""Decision 0025's study: fine-tuning with synthetic replay, λ chosen on validation folds
(docs/decisions/0025-fine-tuning-with-synthetic-replay.md).

For each λ, fine-tunes the pretrained network walk-forward exactly as notebook 03 does
(``params.yaml: finetune`` plus ``replay_weight = λ``), writes it to
``<out>/finetuned_l<λ>.pt`` (kept: a rerun skips the fits already written), then scores
every candidate with decision 0021's machinery (``shrinklab.studies.deploy_rule``, as
``scripts/deploy_rule_folds.py`` does): ``tradeoff_table`` ``gain_kept`` on
``synthetic_valid.pt`` against the ensemble, and one fold backtest (25 cross-universe folds of ``params.yaml: compress``, windows
60/120/250) of the classical estimators, the ensemble and every candidate. Applies the
rule of 0025 and writes ``reports/model_selection/replay_study.csv``.

Reads ``<root>/processed/{sp500_returns,sp500_market,synthetic_train,synthetic_valid}``
and ``<root>/models/{pretrained,ensemble,finetuned}.pt``; every return series is cut
before 2016 on reading (the test period is never read), the public grid is not used.

    OMP_NUM_THREADS=1 nice python scripts/replay_study.py [root] [out]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from shrinklab.core.params import load_section
from shrinklab.data import dataset
from shrinklab.data import returns as data
from shrinklab.evaluation import backtest
from shrinklab.evaluation import universe_backtest as ub
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.models.persistence import load_model_payload
from shrinklab.models.registry import load_model, save_model
from shrinklab.studies.deploy_rule import FoldSpec, load_rule_data, rule_inputs
from shrinklab.training.config import TrainConfig
from shrinklab.training.finetune import walk_forward_finetune
from shrinklab.training.replay import ReplaySpec, synthetic_l_over_d

LAMBDAS = (0.0, 0.1, 0.3, 1.0, 3.0)
CSV = Path("reports/model_selection/replay_study.csv")


def fine_tune_all(root: Path, out: Path, returns, market, train_set) -> dict[float, Path]:
    """One walk-forward fine-tune per λ (notebook 03's call), saved under ``out``."""
    p = load_section("finetune")
    payload = load_model_payload(root / "models" / "pretrained.pt")
    pretrained = MLShrinkageNetwork.from_pretrained(root / "models" / "pretrained.pt")
    splits = data.walk_forward_splits(returns.index)[-p.n_folds :]
    cfg = TrainConfig(
        lr=p.lr, epochs=p.epochs, batch_size=64, patience=5, seed=p.seed, device="cpu",
        set_priors=False,
    )  # fmt: skip
    paths = {}
    for lam in LAMBDAS:
        path = out / f"finetuned_l{lam:g}.pt"
        paths[lam] = path
        if path.exists():
            continue
        t0 = time.time()
        replay = ReplaySpec(train_set, lam, p.replay_batch, p.seed) if lam > 0 else None
        res = walk_forward_finetune(
            pretrained, returns, splits, windows=p.windows, config=cfg,
            out_dir=out / "runs" / f"l{lam:g}", asset_subsets=p.asset_subsets, seed=p.seed,
            regimes=market["regime"], replay=replay,
        )  # fmt: skip
        extra = {"epochs": int(res.epochs), "windows": list(p.windows)}
        if lam > 0:
            extra["replay_weight"] = float(lam)
        save_model(path, res.model, payload["feature_names"], payload["target_names"], extra=extra)
        print(f"λ={lam:g}: {res.epochs} epochs, {time.time() - t0:.0f} s", flush=True)
    return paths


def apply_rule(scores: pd.DataFrame, min_gain_kept: float = 0.9) -> tuple[float | None, str]:
    """0025's choice from per-candidate ``lam``, ``fold_score``, ``gain_kept`` and the paired
    differences ``diff_vs_best``/``diff_vs_best_se`` (candidate − best eligible)."""
    ok = scores[(scores["lam"] > 0) & (scores["gain_kept"] >= min_gain_kept)]
    if ok.empty:
        return None, f"no λ > 0 keeps gain_kept >= {min_gain_kept}: λ stays 0"
    best = ok.loc[ok["fold_score"].idxmin()]
    ties = ok[(ok["lam"] > best["lam"]) & (ok["diff_vs_best"] <= ok["diff_vs_best_se"])]
    if not ties.empty:
        pick = ties.loc[ties["lam"].idxmax()]
        return float(pick["lam"]), (
            f"λ={pick['lam']:g} within one SE of the lowest (λ={best['lam']:g}): the larger λ"
        )
    return float(best["lam"]), f"λ={best['lam']:g}: lowest fold score with gain_kept >= 0.9"


def main(root: str = ".", out: str = "build/replay") -> None:
    t0 = time.time()
    root_p, out_p = Path(root), Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    rule_data = load_rule_data(root_p, cut_test=True)
    train_set = dataset.TrainingSet.load(root_p / "processed" / "synthetic_train.pt")
    paths = fine_tune_all(root_p, out_p, rule_data.returns, rule_data.market, train_set)
    print(f"fine-tunes done at {time.time() - t0:.0f} s", flush=True)

    names = {lam: f"finetuned_l{lam:g}" for lam in LAMBDAS}
    cands = {names[lam]: load_model(paths[lam]) for lam in LAMBDAS}
    deployed_ft = load_model(root_p / "models" / "finetuned.pt")
    same = all(
        torch.equal(a, b)
        for a, b in zip(
            cands[names[0.0]].state_dict().values(), deployed_ft.state_dict().values(), strict=True
        )
    )
    print("λ=0 weights equal to models/finetuned.pt:", same, flush=True)
    ens = load_model(root_p / "models" / "ensemble.pt")
    pre = load_model(root_p / "models" / "pretrained.pt")
    table, rows = rule_inputs(
        rule_data, {"ensemble": ens, "pretrained": pre, **cands}, {"ensemble": ens, **cands},
        folds=FoldSpec.from_section(load_section("compress")), repeats=3,
        rows_file=out_p / "fold_rows.csv",
    )  # fmt: skip
    print(table[["norm_prial", "gain_kept", "gain_kept_worst_family"]].round(3).to_string())
    print(f"fold backtest done at {time.time() - t0:.0f} s", flush=True)
    train_ld = {n: synthetic_l_over_d(m, train_set) for n, m in cands.items()}
    train_ld["pretrained"] = synthetic_l_over_d(pre, train_set)

    per_fold = rows.groupby(["fold", "estimator"])["rel_vol"].mean().unstack("estimator")
    k = len(per_fold)
    kept = table["gain_kept"]
    score = {n: float(per_fold[n].mean()) for n in [*cands, "ensemble"]}
    eligible = [names[lam] for lam in LAMBDAS if lam > 0 and kept[names[lam]] >= 0.9]
    pool = eligible or [names[lam] for lam in LAMBDAS if lam > 0]
    best = min(pool, key=score.get)
    classical = list(backtest.classical_estimators())
    out_rows = []
    for lam in (*LAMBDAS, None):
        n = names[lam] if lam is not None else "ensemble"
        d = per_fold[n] - per_fold[best]
        e = per_fold[n] - per_fold["ensemble"]
        row = {
            "candidate": n,
            "lam": float("nan") if lam is None else lam,
            "fold_score": score[n],
            "fold_score_se": float(per_fold[n].std(ddof=1) / math.sqrt(k)),
            "diff_vs_best": float(d.mean()),
            "diff_vs_best_se": float(d.std(ddof=1) / math.sqrt(k)),
            "diff_vs_ensemble": float(e.mean()),
            "diff_vs_ensemble_se": float(e.std(ddof=1) / math.sqrt(k)),
            "gain_kept": float(kept[n]),
            "gain_kept_worst_family": float(table.loc[n, "gain_kept_worst_family"]),
            "norm_prial_valid": float(table.loc[n, "norm_prial"]),
            "train_l_over_d": train_ld.get(n, float("nan")),
        }
        bc = ub.best_classical_table(rows, n, classical)
        for (fam, win), b in bc.iterrows():
            row[f"vs_best_classical_{fam}_{win}"] = float(b["difference"])
        out_rows.append(row)
    res = pd.DataFrame(out_rows)
    pre_row = {
        "candidate": "pretrained",
        "lam": float("inf"),
        "gain_kept": float(kept["pretrained"]),
    }
    pre_row["gain_kept_worst_family"] = float(table.loc["pretrained", "gain_kept_worst_family"])
    pre_row["norm_prial_valid"] = float(table.loc["pretrained", "norm_prial"])
    pre_row["train_l_over_d"] = train_ld["pretrained"]
    res = pd.concat([res, pd.DataFrame([pre_row])], ignore_index=True)
    lam, why = apply_rule(res[res["candidate"].str.startswith("finetuned_l")])
    print(f"best eligible: {best} (pool: {'gain_kept >= 0.9' if eligible else 'none eligible'})")
    print("RULE:", lam, "-", why)
    CSV.parent.mkdir(parents=True, exist_ok=True)
    res.to_csv(CSV, index=False, float_format="%.6g")
    pd.set_option("display.width", 250)
    print(res.round(3).T.to_string())
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main(*sys.argv[1:3])
