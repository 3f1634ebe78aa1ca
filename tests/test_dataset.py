"""Tests of shrinklab.data.dataset: labels, quadratic forms, stored losses, I/O and rebuilding.

References are independent recomputations from the rebuilt matrices
(``‖Σ̂ − Σ‖²_F`` directly, :func:`shrinklab.core.estimators.fsopt`, scikit-learn's
Ledoit–Wolf, a brute-force grid over the simplex).  Tolerances: 1e-9 relative
for float64 identities, 1e-6 relative for float32 features.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf

from shrinklab.core import estimators as estimators_module
from shrinklab.core.estimators import fsopt
from shrinklab.core.features import FEATURE_NAMES, extract_features
from shrinklab.core.targets import TARGET_NAMES, combine, quadratic_form
from shrinklab.data import dataset, labels, synthetic, training_set
from shrinklab.data.dataset import SCHEMA_VERSION, TrainingSet, build_training_set

K = len(TARGET_NAMES)
CONFIG = {"p_min": 5, "p_max": 24, "batch_size": 8, "edge_prob": 0.3, "short_prob": 0.3}


@pytest.fixture(scope="module")
def ts() -> TrainingSet:
    return build_training_set(40, seed=7, config=CONFIG, progress=False)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def test_shapes_dtypes_and_metadata(ts):
    N = len(ts)
    assert N == 40
    assert ts.features.shape == (N, len(FEATURE_NAMES)) and ts.features.dtype == torch.float32
    assert ts.oracle_w.shape == (N, K) and ts.G.shape == (N, K, K) and ts.c.shape == (N, K)
    for name in ("alpha_star", "d", "loss_fsopt", "loss_lw", "p", "n", "df", "difficulty"):
        assert getattr(ts, name).shape == (N,)
    assert ts.intensities.shape == (N, 4) and ts.intensities.dtype == torch.float64
    cols = [FEATURE_NAMES.index(k) for k in ("int_lw", "int_oas", "int_cc", "int_sf")]
    assert torch.allclose(ts.features[:, cols], ts.intensities.float(), rtol=1e-6, atol=1e-7)
    assert ts.sample_seed.dtype == torch.int64
    assert bool(torch.isfinite(ts.features).all())
    assert set(ts.families) <= set(synthetic.FAMILIES)
    assert ts.config["p_max"] == 24 and ts.config["batch_size"] == 8
    assert bool(((ts.p >= 5) & (ts.p <= 24)).all())
    assert bool(((ts.difficulty >= 0) & (ts.difficulty <= 1)).all())


def test_matches_generate_batches(ts):
    """Rows follow generate_batches(n, seed, config) in order (p, n, df, seeds, family)."""
    rows = list(synthetic.generate_batches(40, 7, CONFIG))
    assert torch.equal(ts.sample_seed, torch.cat([b.sample_seed for b in rows]))
    assert torch.equal(ts.p, torch.cat([torch.full((len(b),), b.p) for b in rows]))
    assert torch.equal(ts.n, torch.cat([torch.full((len(b),), b.n) for b in rows]))
    assert ts.families == [f for b in rows for f in b.family]
    assert torch.equal(ts.df, torch.cat([b.df for b in rows]))


def test_oracle_labels_lie_in_the_simplex_and_are_optimal(ts):
    w = ts.oracle_w
    assert bool((w >= -1e-12).all())
    assert bool((w.sum(-1) <= 1 + 1e-9).all())
    assert torch.allclose(ts.alpha_star, w.sum(-1), rtol=0, atol=1e-15)
    best = ts.normalised_loss(w)
    assert bool((best <= 1 + 1e-9).all())  # w = 0 (the sample covariance) is feasible
    # brute force: a grid over {w >= 0, Σw <= 1} with step 1/8 never does better
    grid = (
        torch.tensor(
            [g for g in itertools.product(range(9), repeat=K) if sum(g) <= 8], dtype=torch.float64
        )
        / 8
    )
    for i in range(0, len(ts), 7):
        G, c, d = ts.G[i], ts.c[i], ts.d[i]
        vals = (grid @ G * grid).sum(-1) - 2 * grid @ c + d
        assert float(best[i] * d) <= float(vals.min()) * (1 + 1e-9) + 1e-12


def test_quadratic_form_reproduces_direct_frobenius_loss(ts):
    rng = np.random.default_rng(0)
    idx = list(range(0, 40, 3))
    buckets = ts.rebuild_matrices(idx)
    assert sorted(torch.cat([b.indices for b in buckets]).tolist()) == idx
    assert [b.p for b in buckets] == sorted({int(ts.p[i]) for i in idx})
    for b in buckets:
        m = len(b.indices)
        assert b.S.shape == (m, b.p, b.p) and b.T.shape == (m, K, b.p, b.p)
        G, c, d = quadratic_form(b.S, b.T, b.sigma)
        assert _rel(G, ts.G[b.indices]) < 1e-9
        assert _rel(c, ts.c[b.indices]) < 1e-9
        assert _rel(d, ts.d[b.indices]) < 1e-9
        raw = torch.as_tensor(rng.dirichlet(np.ones(K + 1), size=m)[:, :K])
        for w in (raw, ts.oracle_w[b.indices]):
            direct = ((combine(b.S, b.T, w) - b.sigma) ** 2).sum((-2, -1))
            sub = ts.subset(b.indices)
            assert _rel(sub.quadratic_loss(w), direct) < 1e-9
            assert (
                _rel(sub.normalised_loss(w), direct / ((b.S - b.sigma) ** 2).sum((-2, -1))) < 1e-9
            )


def test_stored_losses_and_features_against_direct_recomputation(ts):
    cfg = synthetic.as_config(ts.config)
    for i in (0, 9, 17, 33):
        sigma, X = synthetic.regenerate(
            int(ts.sample_seed[i]), int(ts.p[i]), int(ts.n[i]), ts.families[i], float(ts.df[i]), cfg
        )
        l_fs = ((fsopt(X, sigma) - sigma) ** 2).sum()
        assert math.isclose(float(ts.loss_fsopt[i]), float(l_fs), rel_tol=1e-8)
        lw = torch.as_tensor(LedoitWolf().fit(X.numpy()).covariance_)
        l_lw = ((lw - sigma) ** 2).sum()
        assert math.isclose(float(ts.loss_lw[i]), float(l_lw), rel_tol=1e-8)
        f = extract_features(X)[0].float()
        assert float((f - ts.features[i]).abs().max()) <= 1e-6 * max(1.0, float(f.abs().max()))
    # FSOPT is the best rotation-equivariant estimator: never worse than LW (which is one)
    assert bool((ts.loss_fsopt <= ts.loss_lw * (1 + 1e-9)).all())


def test_classical_estimators_as_points_of_the_family(ts):

    w = dataset.classical_intensities(ts)
    assert set(w) == {"ledoit_wolf", "oas", "lw_constant_correlation", "lw_single_factor", "qis"}
    assert _rel(ts.quadratic_loss(w["ledoit_wolf"]), ts.loss_lw) < 1e-9
    cfg = synthetic.as_config(ts.config)
    for i in (2, 21):
        sigma, X = synthetic.regenerate(
            int(ts.sample_seed[i]), int(ts.p[i]), int(ts.n[i]), ts.families[i], float(ts.df[i]), cfg
        )
        for name, wk in w.items():
            direct = ((getattr(estimators_module, name)(X) - sigma) ** 2).sum()
            got = ts.subset([i]).quadratic_loss(wk[[i]])[0]
            assert math.isclose(float(got), float(direct), rel_tol=1e-8), name
    assert torch.equal(
        dataset.normalised_frobenius(ts.oracle_w, ts), ts.normalised_loss(ts.oracle_w)
    )
    frame = ts.to_frame()
    assert len(frame) == len(ts) and list(frame["family"]) == ts.families
    assert np.allclose(frame["loss_oracle"] / frame["loss_sample"], ts.normalised_loss(ts.oracle_w))


def test_deterministic_rebuild_of_the_whole_set():
    a = build_training_set(10, seed=3, config=CONFIG, progress=False)
    b = build_training_set(10, seed=3, config=CONFIG, progress=False)
    c = build_training_set(10, seed=4, config=CONFIG, progress=False)
    for k, v in a.tensors().items():
        assert torch.equal(v, getattr(b, k)), k
    assert not torch.equal(a.sample_seed, c.sample_seed)


def test_save_load_round_trip(ts, tmp_path):
    path = ts.save(tmp_path / "sub" / "train.pt")
    back = TrainingSet.load(path)
    for k, v in ts.tensors().items():
        got = getattr(back, k)
        assert got.dtype == v.dtype and torch.equal(got, v), k
    assert back.config == ts.config
    assert back.feature_names == FEATURE_NAMES and back.target_names == TARGET_NAMES
    assert back.families == ts.families
    # the loaded set still rebuilds its matrices
    (b,) = back.rebuild_matrices([5])
    assert _rel(quadratic_form(b.S, b.T, b.sigma)[2], ts.d[[5]]) < 1e-9


def _tamper(path, out, **changes):
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, out)
    return out


def test_schema_mismatch_is_a_clear_error(ts, tmp_path):
    path = ts.save(tmp_path / "train.pt")
    bad = _tamper(path, tmp_path / "f.pt", feature_schema="v1-0123456789")
    with pytest.raises(ValueError, match="feature schema"):
        TrainingSet.load(bad)
    bad = _tamper(path, tmp_path / "v.pt", schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ValueError, match="schema version"):
        TrainingSet.load(bad)
    bad = _tamper(path, tmp_path / "t.pt", target_names=list(TARGET_NAMES[::-1]))
    with pytest.raises(ValueError, match="targets"):
        TrainingSet.load(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a shrinklab training-set file"):
        TrainingSet.load(junk)
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no schema_version"):
        TrainingSet.load(tmp_path / "other.pt")


def test_split_and_subset(ts):
    a, b = ts.split(0.25, seed=1)
    assert len(b) == 10 and len(a) == 30
    sa, sb = set(a.sample_seed.tolist()), set(b.sample_seed.tolist())
    assert not sa & sb and sa | sb == set(ts.sample_seed.tolist())
    a2, b2 = ts.split(0.25, seed=1)
    assert torch.equal(b.sample_seed, b2.sample_seed)
    assert not torch.equal(b.sample_seed, ts.split(0.25, seed=2)[1].sample_seed)
    mask = ts.p > 10
    assert len(ts.subset(mask)) == int(mask.sum())
    with pytest.raises(ValueError, match="fraction"):
        ts.split(1.5)
    with pytest.raises(ValueError, match="out of range"):
        ts.subset([0, 99])
    with pytest.raises(ValueError, match="shape"):
        ts.normalised_loss(torch.zeros(3, K))


def test_validation_and_progress_switch(monkeypatch):
    with pytest.raises(ValueError, match="n_samples"):
        build_training_set(0, seed=0)
    with pytest.raises(ValueError, match="unknown synthetic config"):
        build_training_set(4, seed=0, config={"nope": 1})
    with pytest.raises(ValueError, match="threads"):
        build_training_set(4, seed=0, threads=0)
    before = torch.get_num_threads()
    small = build_training_set(3, seed=0, config=CONFIG, progress=False, threads=1)
    assert len(small) == 3 and torch.get_num_threads() == before
    monkeypatch.setenv("CI", "1")
    assert dataset._progress_enabled(True) is False
    monkeypatch.delenv("CI")
    assert dataset._progress_enabled(False) is False
    with pytest.raises(ValueError, match="features has shape"):
        TrainingSet(
            **{
                k: torch.zeros((2, 3) if k == "features" else (2, K, K) if k == "G" else (2, K))
                if k in ("features", "G", "oracle_w", "c")
                else torch.zeros(2)
                for k in training_set.FIELDS
            }
        )


def test_fsopt_loss_from_eigh_without_cancellation():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    sigma = A @ A.transpose(-1, -2) + torch.eye(6, dtype=torch.float64)
    X = torch.randn(3, 20, 6, generator=g, dtype=torch.float64)
    from shrinklab.core.estimators import sample_covariance

    _, U = torch.linalg.eigh(sample_covariance(X))
    direct = ((fsopt(X, sigma) - sigma) ** 2).sum((-2, -1))
    assert _rel(dataset.fsopt_loss_from_eigh(U, sigma), direct) < 1e-10


def test_chunked_processing_equals_one_batch(monkeypatch):
    b = next(synthetic.generate_batches(5, 11, {**CONFIG, "batch_size": 5}))
    whole = dataset.process_batch(b.X, b.sigma)
    monkeypatch.setattr(labels, "_CHUNK_MIN", 2)
    monkeypatch.setattr(labels, "_CHUNK_MAX", 2)
    assert labels.chunk_size(b.n, b.p) == 2
    timings: dict[str, float] = {}
    chunked = dataset.process_batch(b.X, b.sigma, timings)
    assert set(timings) >= {"cov", "eigh", "targets", "qp", "features", "fsopt"}
    for k, v in whole.items():
        assert chunked[k].shape == v.shape
        assert _rel(chunked[k], v) < 1e-10, k


def test_fsopt_loss_in_the_cancellation_regime():
    """Sample eigenvectors almost those of Σ (FSOPT ≈ Σ, loss ~1e-12 ‖Σ‖²): the
    ‖Σ‖² − Σd² shortcut falls back to the explicit off-diagonal sum of UᵀΣU; compared
    with that sum in extended precision (numpy longdouble) at 1e-6 relative."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 7, 7, generator=g, dtype=torch.float64)
    sigma = A @ A.mT + 5 * torch.eye(7, dtype=torch.float64)
    E = torch.randn(3, 7, 7, generator=g, dtype=torch.float64)
    _, U = torch.linalg.eigh(sigma + 1e-6 * (E + E.mT))
    got = dataset.fsopt_loss_from_eigh(U, sigma)
    Ul, Sl = U.numpy().astype(np.longdouble), sigma.numpy().astype(np.longdouble)
    M = np.swapaxes(Ul, -1, -2) @ Sl @ Ul
    ref = (M**2).sum((-2, -1), where=~np.eye(7, dtype=bool))  # off-diagonal, no cancellation
    assert bool((torch.from_numpy(ref.astype(np.float64)) < 1e-6 * (sigma**2).sum((-2, -1))).all())
    assert np.abs(got.numpy() - ref).max() / ref.max() < 1e-6


def test_workers_give_identical_training_set():
    """workers=2 (spawned processes, one thread each) == one process with one thread."""
    cfg = {**CONFIG, "batch_size": 8}
    one = build_training_set(24, seed=5, config=cfg, progress=False, threads=1)
    two = build_training_set(24, seed=5, config=cfg, progress=False, threads=1, workers=2)
    for k, v in one.tensors().items():
        assert torch.equal(v, getattr(two, k)), k
    assert one.config == two.config
    with pytest.raises(ValueError, match="workers"):
        build_training_set(4, seed=0, workers=0)


def _assert_rows_match_public_functions(out, X, sigma) -> torch.Tensor:
    """The builder's rows equal the public functions computed independently (1e-9):
    G, c, d from the explicit target matrices, the FSOPT loss, the OAS / CC / SF
    intensities and the features. Returns the sample covariances S."""
    from shrinklab.core.estimators import lw_constant_correlation, lw_single_factor, oas
    from shrinklab.core.targets import shrinkage_targets

    T = shrinkage_targets(X)
    S = torch.stack([torch.cov(x.T, correction=0) for x in X])
    G, c, d = quadratic_form(S, T, sigma)
    assert _rel(out["G"], G) < 1e-9 and _rel(out["c"], c) < 1e-9 and _rel(out["d"], d) < 1e-9
    direct = ((fsopt(X, sigma) - sigma) ** 2).sum((-2, -1))
    assert _rel(out["loss_fsopt"], direct) < 1e-9
    for k, f in enumerate([oas, lw_constant_correlation, lw_single_factor], start=1):
        assert _rel(out["intensities"][:, k], f(X, return_shrinkage=True)[1]) < 1e-9
    assert _rel(out["features"], extract_features(X)) < 1e-9
    return S


def test_shared_eigh_pipeline_matches_independent_recomputation():
    """process_batch (one eigh of S shared by QIS, FSOPT and features; O(np + p²)
    intensities) equals the public functions computed independently (1e-9)."""
    from shrinklab.core.estimators import qis
    from shrinklab.core.targets import shrinkage_targets

    b = next(synthetic.generate_batches(6, 21, {**CONFIG, "batch_size": 6, "p_min": 20}))
    out = dataset.process_batch(b.X, b.sigma)
    assert _rel(shrinkage_targets(b.X)[:, 4], qis(b.X)) < 1e-12
    _assert_rows_match_public_functions(out, b.X, b.sigma)


def test_float32_handoff_pieces_and_numpy_eigh_match_the_float64_path(monkeypatch):
    """The builder's fast path: X handed over in float32 (exact: the draws are float32
    products) gives bit-identical rows; reducing the returns one sample per piece
    equals one piece for the chunk (1e-12); at p >= 128 (numpy/OpenBLAS eigh) the rows
    equal the public functions computed independently (1e-9, as at small p)."""

    cfg = {**CONFIG, "batch_size": 3, "p_min": 130, "p_max": 140, "short_prob": 0.0}
    cfg.update(ratio_min=0.5, ratio_max=0.9)
    (plan,) = synthetic.plan_batches(3, 4, cfg)
    c = synthetic.as_config(cfg)
    b32 = dataset._chunk_batch(plan, c)
    b64 = synthetic.build_batch(plan, c)
    assert b32.X.dtype == torch.float32 and torch.equal(b32.X.double(), b64.X)
    assert plan.p >= labels._NUMPY_EIGH_MIN_P
    one = dataset.process_batch(b32.X, b32.sigma)
    ref = dataset.process_batch(b64.X, b64.sigma)
    for k, v in ref.items():
        assert torch.equal(one[k], v), k
    monkeypatch.setattr(labels, "_STATS_ELEMENTS", 1 << 30)  # the whole chunk in one piece
    whole = dataset.process_batch(b64.X, b64.sigma)
    for k, v in ref.items():
        assert _rel(whole[k], v) < 1e-12, k
    S = _assert_rows_match_public_functions(ref, b64.X, b64.sigma)
    evals, U = labels._eigh(S)
    torch.testing.assert_close(
        evals, torch.linalg.eigvalsh(S), rtol=0, atol=1e-12 * float(evals.max())
    )
    torch.testing.assert_close(
        U @ torch.diag_embed(evals) @ U.mT, S, rtol=0, atol=1e-12 * float(evals.max())
    )


def test_fsopt_loss_from_the_generator_roots_for_every_family():
    """uᵀΣu from the roots the builder keeps (trmm on a lower-triangular L, O(p²k) on
    factors (B, d)) gives the FSOPT loss of estimators.fsopt computed directly from the
    matrices (1e-10 relative), for every family, and process_batch with the roots
    equals process_batch without them (1e-10)."""
    cfg = {"batch_size": 36, "p_min": 70, "p_max": 80, "short_prob": 0.0, "edge_prob": 0.3}
    cfg.update(ratio_min=0.5, ratio_max=1.5)  # p > n included
    c = synthetic.as_config(cfg)
    (plan,) = synthetic.plan_batches(36, 3, c)
    b = dataset._chunk_batch(plan, c)
    assert plan.p >= labels._ROOT_FSOPT_MIN_P
    kinds = {type(r).__name__ for r in b.roots}
    assert kinds == {"Tensor", "tuple"}, kinds
    X = b.X.double()
    _, U = torch.linalg.eigh(torch.stack([torch.cov(x.T, correction=0) for x in X]))
    direct = ((fsopt(X, b.sigma) - b.sigma) ** 2).sum((-2, -1))
    assert _rel(dataset.fsopt_loss_from_eigh(U, b.sigma, b.roots), direct) < 1e-10
    with_roots = dataset.process_batch(b.X, b.sigma, roots=b.roots)
    without = dataset.process_batch(b.X, b.sigma)
    for k, v in without.items():
        assert _rel(with_roots[k], v) < 1e-10, k
    with pytest.raises(ValueError, match="roots"):
        dataset.process_batch(b.X, b.sigma, roots=b.roots[:3])


def test_center_squares_is_center_and_its_squares():
    """_center_squares equals _validation.center(X, cov=False) bit for bit, with Xc∘Xc
    and its column sums, on ordinary returns and on samples with constant columns (where the squares of the
    zeroed columns are exactly 0)."""
    from shrinklab.core.validation import center

    g = torch.Generator().manual_seed(3)
    X = torch.randn(4, 30, 7, generator=g, dtype=torch.float64) * 3 + 1
    X[1, :, 2] = 0.37  # constant columns with a non-representable value
    X[3, :, 0] = -5.1
    for data in (X[[0, 2]], X):
        Xc, Y2, ssq = labels._center_squares(data)
        ref, _ = center(data, cov=False)
        assert torch.equal(Xc, ref)
        assert torch.equal(Y2, ref * ref)
        assert torch.equal(ssq, (ref * ref).sum(-2))
    assert bool((labels._center_squares(X)[1][1, :, 2] == 0).all())


def test_spectral_quadratic_form_equals_the_explicit_targets():
    """Without forming the QIS target (its G row and c entry from the shared eigh) G, c, d
    and the FSOPT loss equal the Gram of the K explicit target matrices (1e-10 relative to
    the largest entry), p < n and p > n; a batch with a constant column takes the explicit
    path and still equals the public functions (1e-9)."""
    from shrinklab.core.targets import market_parts, shrinkage_targets

    for ratio in (0.3, 1.6):
        cfg = {**CONFIG, "batch_size": 6, "p_min": 30, "p_max": 40, "short_prob": 0.0}
        cfg.update(ratio_min=ratio, ratio_max=ratio)
        b = next(synthetic.generate_batches(6, 13, cfg))
        X = b.X
        Xc = labels._center_squares(X)[0]
        S = torch.stack([torch.cov(x.T, correction=0) for x in X])
        eig = torch.linalg.eigh(S)
        parts = market_parts(Xc)
        ex1: dict = {}
        ex2: dict = {}
        clock = labels._Clock(None, lambda: 0.0)
        G1, c1, d1 = labels._quadratic_form_explicit(S, b.sigma, b.n, parts, eig, ex1, clock)
        G2, c2, d2, l2 = labels._quadratic_form_spectral(
            S, b.sigma, b.n, parts, eig, ex2, clock, None
        )
        assert _rel(G2, G1) < 1e-10 and _rel(c2, c1) < 1e-10 and _rel(d2, d1) < 1e-12
        assert _rel(l2, dataset.fsopt_loss_from_eigh(eig[1], b.sigma)) < 1e-12
        assert torch.equal(ex1["rbar"], ex2["rbar"])
    X = b.X.clone()
    X[2, :, 5] = 0.25  # a constant column
    out = dataset.process_batch(X, b.sigma)
    G, c, d = quadratic_form(
        torch.stack([torch.cov(x.T, correction=0) for x in X]), shrinkage_targets(X), b.sigma
    )
    assert _rel(out["G"], G) < 1e-9 and _rel(out["c"], c) < 1e-9 and _rel(out["d"], d) < 1e-9
    assert _rel(out["features"], extract_features(X)) < 1e-9


def test_build_reports_progress_in_tenths(tmp_path, monkeypatch):
    """About one progress line per tenth of the samples, the last at the total."""
    from shrinklab.core import progress

    log = tmp_path / "progress.log"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(log))
    cfg = {"p_min": 5, "p_max": 8, "batch_size": 4, "short_prob": 0.0}
    build_training_set(200, seed=3, config=cfg, progress=False)
    lines = log.read_text().splitlines()
    assert 5 <= len(lines) <= 11, lines
    assert lines[-1].endswith("training set: 200/200 samples (1 worker(s))")
    counts = [int(x.split("training set: ")[1].split("/")[0].replace(",", "")) for x in lines]
    assert counts == sorted(counts) and counts[0] > 0
