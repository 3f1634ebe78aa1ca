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
  the target as fixed), clipped to [0, 1];
* with ``--spike``, the top eigenvalue of S corrected by the spiked-model shrinker of
  Donoho, Gavish & Johnstone (2018, Annals of Statistics 46(4), "Optimal shrinkage of
  eigenvalues in the spiked covariance model", Frobenius loss): the noise level
  ``σ² = (tr S − λ₁)/(p − 1)``, ``γ = p/(n − 1)``, the spike ``ℓ`` from ``λ₁/σ²`` by
  inverting ``λ = ℓ + γℓ/(ℓ − 1)``, the shrunk value ``σ²(ℓc² + 1 − c²)`` with the
  squared cosine ``c² = (1 − γ/(ℓ−1)²)/(1 + γ/(ℓ−1))`` (λ₁ kept below the bulk edge
  ``(1 + √γ)²``). Columns ``qis+spike`` (QIS with its top eigenvalue replaced by that
  value: a plug-in estimator, no learning) and ``oracle6 spike`` (the multi-target
  oracle with ``S`` so corrected as a sixth target).

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


def spiked_top_value(S: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(λ₁, u₁, shrunk λ₁)`` per matrix: Donoho, Gavish & Johnstone's Frobenius
    shrinker of the top eigenvalue of ``S`` (module docstring), with ``n`` observations."""
    lam, U = torch.linalg.eigh(S)
    top, u = lam[:, -1], U[:, :, -1]
    p = S.shape[-1]
    gamma = p / (n - 1)
    noise = ((torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) - top) / (p - 1)).clamp_min(1e-300)
    x = top / noise
    above = x > (1 + gamma**0.5) ** 2
    xs = torch.where(above, x, torch.full_like(x, (1 + gamma**0.5) ** 2 + 1e-9))
    b = xs + 1 - gamma
    ell = (b + (b * b - 4 * xs).clamp_min(0).sqrt()) / 2
    c2 = ((1 - gamma / (ell - 1) ** 2) / (1 + gamma / (ell - 1))).clamp(0, 1)
    shrunk = torch.where(above, noise * (ell * c2 + 1 - c2), top)
    return top, u, shrunk


def with_top_value(M: torch.Tensor, u: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``M`` with its value along ``u`` (``uᵀMu``) replaced by ``value``: ``M + (value −
    uᵀMu) u uᵀ`` (exact when ``u`` is an eigenvector of ``M``, as for QIS and ``S``)."""
    current = torch.einsum("bi,bij,bj->b", u, M, u)
    return M + (value - current)[:, None, None] * (u[:, :, None] * u[:, None, :])


def _oracle_loss(S, T, sigma, d):
    G, c, _ = quadratic_form(S, T, sigma)
    w = solve_simplex_qp(G, c)
    return torch.einsum("bk,bkl,bl->b", w, G, w) - 2 * (w * c).sum(-1) + d


def scenario_row(spec: dict, reps: int, seed: int, spike: bool = False) -> dict:
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
    if spike:
        _, u, shrunk = spiked_top_value(S, X.shape[-2])
        row["qis"] = classical["qis"]
        row["qis+spike"] = prial(loss(with_top_value(CLASSICAL_ESTIMATORS["qis"](X), u, shrunk)))
        T_spike = with_top_value(S, u, shrunk)
        row["oracle6 spike"] = prial(
            _oracle_loss(S, torch.cat([T5, T_spike[:, None]], 1), sigma, d)
        )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--spike", action="store_true", help="add the top-eigenvalue columns")
    args = ap.parse_args()
    torch.set_num_threads(1)
    grid = [*SELECTION_GRID, *WIDE_GRID]
    rows = [scenario_row(s, args.reps, args.seed, args.spike) for s in grid]
    table = pd.DataFrame(rows).set_index("scenario")
    pd.set_option("display.width", 200)
    print(table.round(1).to_string())
    gain = table["oracle6 kER"] - table["oracle5"]
    print(
        f"\noracle6 kER − oracle5: mean {gain.mean():+.1f}, max {gain.max():+.1f} ({gain.idxmax()})"
    )
    if args.spike:
        gain = table["oracle6 spike"] - table["oracle5"]
        print(f"oracle6 spike − oracle5: mean {gain.mean():+.1f}, max {gain.max():+.1f}")
        print(f"qis+spike − qis: mean {(table['qis+spike'] - table['qis']).mean():+.1f}")


if __name__ == "__main__":
    main()
