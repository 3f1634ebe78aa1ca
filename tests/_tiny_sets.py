"""Tiny TrainingSet-like data for the ensemble/compression tests (fast, no covariance
simulation): random features, a random PSD quadratic form ``(G, c, d)`` per sample
with its exact multi-target oracle ``w*`` (``solve_simplex_qp``), and an intensity that
depends smoothly on the features so that a network can learn it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from shrinklab.core.estimators import solve_simplex_qp

#: The default sizes of a tiny set (features, targets) and names for them.
F, K = 8, 5
FNAMES = [f"f{i}" for i in range(F)]
TNAMES = [f"t{i}" for i in range(K)]


def tiny_set(n: int = 512, n_features: int = F, k: int = K, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    # the ideal intensities: a smooth function of the first features, on the simplex-scaled set
    logits = np.stack([x[:, j % n_features] * (1.0 - 0.2 * j) for j in range(k)], axis=1)
    pi = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    alpha = 1.0 / (1.0 + np.exp(-(x[:, 0] + 0.5 * x[:, 1])))
    w_true = alpha[:, None] * pi
    # a loss with minimiser w_true plus noise: G = AᵀA, c = G w_true + noise
    A = rng.normal(size=(n, 12, k))
    G = np.einsum("nik,nil->nkl", A, A)
    c = np.einsum("nkl,nl->nk", G, w_true) + 0.3 * rng.normal(size=(n, k))
    resid = rng.gamma(2.0, 1.0, size=n)
    d = np.einsum("nk,nkl,nl->n", w_true, G, w_true) + resid + 1.0
    oracle = solve_simplex_qp(torch.as_tensor(G), torch.as_tensor(c)).numpy()
    loss_oracle = np.einsum("nk,nkl,nl->n", oracle, G, oracle) - 2 * (c * oracle).sum(1) + d
    return SimpleNamespace(
        features=x,
        oracle_w=oracle,
        alpha_star=oracle.sum(1),
        G=G,
        c=c,
        d=d,
        loss_fsopt=0.5 * (loss_oracle + d) - 0.1 * resid,  # some reference between oracle and S
    )
