"""scripts/pca_target_headroom.py's spiked-model shrinker (Donoho, Gavish & Johnstone
2018) against the closed form on a matrix whose spike and bulk are known."""

from __future__ import annotations

import math

import torch

from tests._scripts import load_script


def test_the_shrinker_inverts_the_spike_bias_and_shrinks_by_the_cosine():
    m = load_script("scripts/pca_target_headroom.py")
    p, n, ell, noise = 50, 101, 10.0, 2.0
    gamma = p / (n - 1)
    sample_spike = ell + gamma * ell / (ell - 1)  # where a spike ell lands (noise units)
    rng = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=rng, dtype=torch.float64))
    lam = torch.full((p,), noise, dtype=torch.float64)
    lam[0] = noise * sample_spike
    S = (Q * lam) @ Q.T
    top, u, shrunk = m.spiked_top_value(S[None], n)
    c2 = (1 - gamma / (ell - 1) ** 2) / (1 + gamma / (ell - 1))
    assert math.isclose(float(top), noise * sample_spike, rel_tol=1e-10)
    assert math.isclose(float(shrunk), noise * (ell * c2 + 1 - c2), rel_tol=1e-8)
    assert math.isclose(abs(float(u[0] @ Q[:, 0])), 1.0, rel_tol=1e-10)
    # the corrected matrix keeps every other direction and has the shrunk top value
    T = m.with_top_value(S[None], u, shrunk)[0]
    ev = torch.linalg.eigvalsh(T)
    torch.testing.assert_close(ev[:-1], lam[1:], rtol=1e-10, atol=1e-10)
    assert math.isclose(float(ev[-1]), float(shrunk), rel_tol=1e-10)
    # below the bulk edge the top eigenvalue is kept
    lam[0] = noise * (1 + math.sqrt(gamma)) ** 2 * 0.99
    _, _, kept = m.spiked_top_value(((Q * lam) @ Q.T)[None], n)
    assert math.isclose(float(kept), float(lam[0]), rel_tol=1e-10)
