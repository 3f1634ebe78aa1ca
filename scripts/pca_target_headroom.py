"""Exploration: would a k-factor (principal-component) target widen the estimator family?

For each scenario of the selection grid and the wide grid
(:data:`shrinklab.studies.selection_grid.SELECTION_GRID`, ``WIDE_GRID``: selection data,
never the public grid), prints the PRIAL (%, 100 replications) of

* the best classical estimator;
* ``oracle5``: the multi-target oracle of today's family (the five targets of
  :data:`shrinklab.core.targets.TARGET_NAMES`, the weights that minimise the Frobenius
  loss in each replication);
* ``oracle6 kK``: the same oracle with a sixth target, the PCA factor target
  ``T = U_k Λ_k U_kᵀ + diag(S − U_k Λ_k U_kᵀ)`` (the low-rank part of POET, Fan, Liao &
  Mincheva 2013, JRSS-B 75(4), with a diagonal residual), ``k = 3`` or ``k`` by the
  eigenvalue-ratio rule of Ahn & Horenstein (2013, Econometrica 81(3)), ``k ≤ 8``;
* ``plugin kK``: shrinkage towards that target alone, with the intensity
  ``Σ_{i≠j} Var̂(s_ij) / ‖S − T‖²_F`` (Schäfer & Strimmer 2005, SAGMB 4(1), which treats
  the target as fixed), clipped to [0, 1].

    OMP_NUM_THREADS=1 python scripts/pca_target_headroom.py [--reps 100] [--seed 2026]

The oracle columns bound what a network choosing the weights could reach; the gap
``oracle6 − oracle5`` is what the target would add to that bound. 1–2 min on one core.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from shrinklab.core.estimators import CLASSICAL_ESTIMATORS, fsopt
from shrinklab.core.simplex_qp import solve_simplex_qp
from shrinklab.core.targets import TARGET_NAMES, quadratic_form, stack_targets
from shrinklab.core.validation import as_returns, center
from shrinklab.data.synthetic import make_scenario
from shrinklab.studies.selection_grid import SELECTION_GRID, WIDE_GRID


def pca_target(S: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``U_k Λ_k U_kᵀ`` with ``S``'s own diagonal, ``k (B,)`` components per matrix."""
    lam, U = torch.linalg.eigh(S)
    lam, U = lam.flip(-1), U.flip(-1)
    keep = (torch.arange(S.shape[-1]) < k[:, None]).to(S.dtype)  # (B, p)
    T = (U * (lam * keep).unsqueeze(-2)) @ U.transpose(-1, -2)
    idx = torch.arange(S.shape[-1])
    T[:, idx, idx] = S[:, idx, idx]
    return T


def eigenvalue_ratio_k(S: torch.Tensor, k_max: int = 8) -> torch.Tensor:
    """Ahn & Horenstein's ``argmax_k λ_k / λ_{k+1}`` over ``k ≤ k_max``."""
    lam = torch.linalg.eigvalsh(S).flip(-1)
    return (lam[:, :k_max] / lam[:, 1 : k_max + 1].clamp_min(1e-300)).argmax(-1) + 1


def fixed_target_shrinkage(Xc: torch.Tensor, S: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``S + a (T − S)`` with Schäfer & Strimmer's intensity for a target that keeps the
    diagonal (only off-diagonal variances count)."""
    n = Xc.shape[1]
    X2 = Xc * Xc
    var = (X2.transpose(1, 2) @ X2 / n - S**2) / n
    num = var.sum((-1, -2)) - torch.diagonal(var, dim1=-2, dim2=-1).sum(-1)
    a = (num / ((S - T) ** 2).sum((-1, -2)).clamp_min(1e-300)).clamp(0, 1)
    return S + a[:, None, None] * (T - S)


def _oracle_loss(S, T, sigma, d):
    G, c, _ = quadratic_form(S, T, sigma)
    w = solve_simplex_qp(G, c)
    return torch.einsum("bk,bkl,bl->b", w, G, w) - 2 * (w * c).sum(-1) + d


def scenario_row(spec: dict, reps: int, seed: int) -> dict:
    sigma, X = make_scenario({k: v for k, v in spec.items() if k != "name"}, reps, seed)
    Xc, S = center(as_returns(X)[0])
    sigma = sigma.to(S.dtype)

    def loss(est):
        return ((est - sigma) ** 2).sum((-1, -2))

    d, lf = loss(S), loss(fsopt(X, sigma))

    def prial(L):
        return float(100 * (d.mean() - L.mean()) / (d.mean() - lf.mean()))

    classical = {n: prial(loss(f(X))) for n, f in CLASSICAL_ESTIMATORS.items() if n != "sample"}
    best = max(classical, key=classical.get)
    T5 = stack_targets(Xc, S, TARGET_NAMES)
    row = {"scenario": spec["name"], "best classical": f"{best} {classical[best]:.1f}"}
    row["oracle5"] = prial(_oracle_loss(S, T5, sigma, d))
    k_er = eigenvalue_ratio_k(S)
    row["mean k (ratio)"] = float(k_er.float().mean())
    for label, k in (("k3", torch.full((reps,), 3)), ("kER", k_er)):
        Tk = pca_target(S, k)
        row[f"oracle6 {label}"] = prial(_oracle_loss(S, torch.cat([T5, Tk[:, None]], 1), sigma, d))
        row[f"plugin {label}"] = prial(loss(fixed_target_shrinkage(Xc, S, Tk)))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [scenario_row(s, args.reps, args.seed) for s in [*SELECTION_GRID, *WIDE_GRID]]
    table = pd.DataFrame(rows).set_index("scenario")
    pd.set_option("display.width", 200)
    print(table.round(1).to_string())
    gain = table["oracle6 kER"] - table["oracle5"]
    print(
        f"\noracle6 kER − oracle5: mean {gain.mean():+.1f}, max {gain.max():+.1f} ({gain.idxmax()})"
    )


if __name__ == "__main__":
    main()
