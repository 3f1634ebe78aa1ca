"""shrinklab.models.switched: the deployed fund switch (decision 0068) as a model file.

References: the discriminant against scipy's Gaussian log-densities; the switched
prediction against its two gated models' own ``forward`` picked row by row; the NumPy
fast path against ``predict``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _forced_model import gated_model, random_network, randomise_norms
from _one_factor import one_factor_returns
from scipy.stats import multivariate_normal

from shrinklab.core.estimators import sample_covariance
from shrinklab.core.features import FEATURE_NAMES, extract_features, window_sizes
from shrinklab.core.targets import TARGET_NAMES, combine, shrinkage_targets
from shrinklab.models.network import ShrinkageOutput
from shrinklab.models.numpy_forward import numpy_predict
from shrinklab.models.persistence import load_model_payload
from shrinklab.models.registry import load_model, save_model
from shrinklab.models.switched import (
    FeatureDiscriminant,
    SwitchedModel,
    before_switch,
    share_to_qis,
    towards_diagonal,
    towards_qis,
    with_general,
)
from shrinklab.sklearn import MLShrinkageCovariance, load_pretrained

RTOL = 1e-5  # float32 networks against the float64 NumPy path (tests/test_fast_predict.py)


def _kinds(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of one-factor windows and of i.i.d. Gaussian windows (p 10 to 30)."""
    rng = np.random.default_rng(seed)
    one = [one_factor_returns(120, int(rng.integers(10, 31)), seed + s) for s in range(count)]
    iid = [rng.standard_normal((120, int(rng.integers(10, 31)))) for _ in range(count)]
    return (
        np.vstack([extract_features(x).numpy() for x in one]).astype(np.float64),
        np.vstack([extract_features(x).numpy() for x in iid]).astype(np.float64),
    )


@pytest.fixture(scope="module")
def parts():
    one, iid = _kinds(60, 0)
    near = gated_model(np.vstack([one, iid]))
    far = randomise_norms(random_network(seed=21), 21).eval()
    disc = FeatureDiscriminant.fit(one, iid, ridge=0.05)  # positive: more like i.i.d.
    t_one, t_iid = _kinds(6, 100)
    return near, far, disc, np.vstack([t_one, t_iid])


@pytest.fixture(scope="module")
def switched(parts):
    near, far, disc, _ = parts
    return SwitchedModel(near, far, disc, tau=0.0).eval()


def test_discriminant_is_the_gaussian_log_likelihood_ratio():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((300, 2))
    b = rng.standard_normal((300, 2)) * 0.5 + [3.0, 0.0]
    c = rng.standard_normal((300, 2)) * 0.5 + [3.0, 2.0]
    d = FeatureDiscriminant.fit(a, b, c, ridge=0.02)
    pooled = np.vstack([a, b, c])
    mu, sd = pooled.mean(0), pooled.std(0)
    x = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 2.0], [3.0, 1.0]])

    def ll(ref):
        Z = (ref - mu) / sd
        cov = np.cov(Z, rowvar=False) + 0.02 * np.eye(2)
        return multivariate_normal(Z.mean(0), cov).logpdf((x - mu) / sd)

    expected = 2 * (ll(b) - np.maximum(ll(a), ll(c)))
    np.testing.assert_allclose(d.score(x), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(d(torch.as_tensor(x)), d.score(x))
    assert d.class_means.dtype == torch.float64 and d.precisions.shape == (3, 2, 2)


def test_discriminant_rejects_bad_input():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 3)), rng.standard_normal((40, 3))
    with pytest.raises(ValueError, match="N > F"):
        FeatureDiscriminant.fit(a, b[:2])
    with pytest.raises(ValueError, match="one F"):
        FeatureDiscriminant.fit(a, b[:, :2])
    with pytest.raises(ValueError, match="finite"):
        FeatureDiscriminant.fit(a, np.full((40, 3), np.nan))
    with pytest.raises(ValueError, match="ridge"):
        FeatureDiscriminant.fit(a, b, ridge=0.0)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        FeatureDiscriminant.fit(a, b).score(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2 classes"):
        FeatureDiscriminant(1, 3)


def test_switched_predict_is_the_far_model_on_the_rows_the_discriminant_picks(parts, switched):
    near, far_general, disc, x = parts
    rows = disc.score(x) > 0.0
    assert 0 < rows.sum() < len(x)  # both kinds in the batch
    far = with_general(near, far_general)
    with torch.no_grad():
        xt = torch.as_tensor(x, dtype=torch.float32)
        a, b = near(xt), far(xt)
    got = switched.predict(x)
    expected = np.where(rows[:, None], b.intensities.numpy(), a.intensities.numpy())
    np.testing.assert_allclose(got.intensities.numpy(), expected, rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(got.log_var.numpy(), a.log_var.numpy(), rtol=RTOL, atol=1e-6)
    assert switched.far_share(x) == pytest.approx(rows.mean())
    # the far model differs from the near one where it serves (the test could fail)
    assert not np.allclose(b.intensities.numpy()[rows], a.intensities.numpy()[rows], atol=1e-3)
    # forward (train-mode graph) agrees with predict in eval mode
    with torch.no_grad():
        np.testing.assert_allclose(
            switched(torch.as_tensor(x, dtype=torch.float32)).intensities.numpy(),
            got.intensities.numpy(),
            rtol=RTOL,
            atol=1e-7,
        )


def test_model_file_round_trip_keeps_one_copy_of_the_shared_modules(switched, parts, tmp_path):
    _, _, _, x = parts
    path = save_model(
        tmp_path / "switched.pt", switched, FEATURE_NAMES, TARGET_NAMES, extra={"chosen": "s"}
    )
    payload = load_model_payload(path)  # weights_only load
    assert payload["kind"] == "domain_switch"
    keys = list(payload["state_dict"])
    assert not any(k.startswith("far.") for k in keys)  # shared with near: saved once
    assert {k.split(".")[0] for k in keys} == {"near", "far_general", "discriminant"}
    back = load_model(path)
    assert isinstance(back, SwitchedModel) and back.extra == {"chosen": "s"}
    assert back.far.general is back.far_general and back.far.gate is back.near.gate
    torch.testing.assert_close(back.predict(x).intensities, switched.predict(x).intensities)
    assert back.discriminant.precisions.dtype == torch.float64
    np.testing.assert_array_equal(back.discriminant.score(x), switched.discriminant.score(x))


def test_numpy_fast_path_equals_predict(switched, parts):
    _, _, disc, x = parts
    got = numpy_predict(switched, x)
    assert got is not None  # the fast path covers the switched model
    ref = [t.double().numpy() for t in switched.predict(x)]
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=1e-6)
    # a deep copy in float64 (what the NumPy path mirrors) agrees too
    with torch.no_grad():
        ref64 = copy.deepcopy(switched).double().predict(torch.from_numpy(x))
    np.testing.assert_allclose(got[0], ref64.alpha.numpy(), rtol=1e-9, atol=1e-10)


def test_estimator_fits_with_a_switched_model_file(switched, tmp_path):
    path = save_model(tmp_path / "s.pt", switched, FEATURE_NAMES, TARGET_NAMES)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((120, 15)) * 0.01  # i.i.d.: a far window
    model = load_pretrained(path)
    assert bool(model.is_far(extract_features(X))[0])
    est = MLShrinkageCovariance(model_path=str(path)).fit(X)
    near_only = SwitchedModel(switched.near, switched.far_general, switched.discriminant, 1e9)
    ref = MLShrinkageCovariance(model_path=str(save_model(tmp_path / "n.pt", near_only,
                                                          FEATURE_NAMES, TARGET_NAMES))).fit(X)  # fmt: skip
    assert est.covariance_.shape == (15, 15)
    assert not np.allclose(est.covariance_, ref.covariance_)  # the switch changed the estimate


def test_with_general_swaps_only_the_general_network(parts):
    near, far, _, x = parts
    near.extra = {"volatility_timing": 0.5}
    try:
        same = with_general(near, near.general)
        torch.testing.assert_close(same.predict(x).intensities, near.predict(x).intensities)
        assert same.extra == near.extra and same.extra is not near.extra
        assert same.gate is near.gate and same.expert_map() == near.expert_map()
        other = with_general(near, far)
        assert not torch.allclose(other.predict(x).intensities, near.predict(x).intensities)
    finally:
        del near.extra
    with pytest.raises(TypeError, match="GatedExpertModel"):
        with_general(far, far)


def test_before_switch_is_the_gated_model_with_the_files_extra(switched, parts, tmp_path):
    near, far, _, x = parts
    path = save_model(tmp_path / "b.pt", switched, FEATURE_NAMES, TARGET_NAMES, extra={"v": 1})
    gated = before_switch(load_model(path))
    assert type(gated).__name__ == "GatedExpertModel" and gated.extra == {"v": 1}
    torch.testing.assert_close(gated.predict(x).intensities, near.predict(x).intensities)
    assert before_switch(far) is far  # not a switched model: itself


def test_far_scale_shrinks_only_the_far_rows_intensity(switched, parts, tmp_path):
    near, far_general, disc, x = parts
    half = SwitchedModel(near, far_general, disc, 0.0, far_scale=0.5).eval()
    rows = disc.score(x) > 0.0
    a, b = switched.predict(x), half.predict(x)
    np.testing.assert_allclose(b.alpha.numpy()[rows], 0.5 * a.alpha.numpy()[rows], rtol=1e-6)
    np.testing.assert_array_equal(b.alpha.numpy()[~rows], a.alpha.numpy()[~rows])
    np.testing.assert_array_equal(b.weights.numpy(), a.weights.numpy())  # π unchanged
    np.testing.assert_allclose(numpy_predict(half, x)[0], b.alpha.numpy(), rtol=RTOL, atol=1e-7)
    assert "far_scale" not in switched.config and half.config["far_scale"] == 0.5
    back = load_model(save_model(tmp_path / "h.pt", half, FEATURE_NAMES, TARGET_NAMES))
    torch.testing.assert_close(back.predict(x).alpha, b.alpha)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="far_scale"):
            SwitchedModel(near, far_general, disc, far_scale=bad)


def test_switched_model_rejects_bad_parts(parts):
    near, far, disc, _ = parts
    with pytest.raises(ValueError, match="tau"):
        SwitchedModel(near, far, disc, tau=float("nan"))
    with pytest.raises(TypeError, match="GatedExpertModel"):
        SwitchedModel(far, far, disc)
    wrong = FeatureDiscriminant.fit(*(np.random.default_rng(1).standard_normal((2, 40, 3))))
    with pytest.raises(ValueError, match="3 features"):
        SwitchedModel(near, far, wrong)


def test_towards_diagonal_is_the_convex_step_to_the_diagonal_of_s():
    """Decision 0071: on the picked rows the family member of the new intensities is
    ``(1 − c) Σ̂ + c·diag(S)``, computed here from the covariances themselves."""
    rng = np.random.default_rng(5)
    X = torch.as_tensor(rng.standard_normal((4, 60, 8)) @ rng.standard_normal((8, 8)))
    S, T = sample_covariance(X), shrinkage_targets(X)
    alpha = torch.tensor([0.3, 0.0, 0.9, 0.5], dtype=torch.float64)
    weights = torch.softmax(torch.as_tensor(rng.standard_normal((4, 5))), dim=-1)
    out = ShrinkageOutput(alpha, weights, torch.zeros(4, dtype=torch.float64))
    rows = torch.tensor([True, True, True, False])
    got = towards_diagonal(out, rows, 0.25)
    before = combine(S, T, out.intensities)
    expected = 0.75 * before + 0.25 * torch.diag_embed(torch.diagonal(S, dim1=-2, dim2=-1))
    after = combine(S, T, got.intensities)
    torch.testing.assert_close(after[:3], expected[:3], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(after[3], before[3])  # a row not picked: unchanged
    torch.testing.assert_close(got.weights.sum(-1), torch.ones(4, dtype=torch.float64))
    assert torch.all(got.weights >= 0) and torch.all(got.alpha <= 1)
    same = towards_diagonal(out, rows, 0.0)
    torch.testing.assert_close(same.intensities, out.intensities)
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            towards_diagonal(out, rows, bad)


def test_stock_part_shrinks_only_the_stock_rows_that_are_not_far(parts, tmp_path):
    near, far_general, disc, x = parts
    one, iid = _kinds(40, 7)
    stock = FeatureDiscriminant.fit(iid, one, ridge=0.05)  # positive: more like one factor
    base = SwitchedModel(near, far_general, disc, 0.0).eval()
    model = SwitchedModel(near, far_general, disc, 0.0, stock=stock, stock_tau=0.0,
                          stock_strength=0.3).eval()  # fmt: skip
    rows = (stock.score(x) > 0.0) & ~(disc.score(x) > 0.0)
    assert 0 < rows.sum() < len(rows)  # some rows of each kind
    np.testing.assert_array_equal(model.is_stock(x).numpy(), rows)
    a, b = base.predict(x), model.predict(x)
    ref = towards_diagonal(a, torch.as_tensor(rows), 0.3)
    torch.testing.assert_close(b.intensities, ref.intensities)
    torch.testing.assert_close(model(torch.as_tensor(x, dtype=torch.float32)).intensities,
                               b.intensities.float(), rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(b.alpha.numpy()[~rows], a.alpha.numpy()[~rows])
    fast = numpy_predict(model, x)
    np.testing.assert_allclose(fast[0] [:, None] * fast[1], b.intensities.numpy(), rtol=RTOL,
                               atol=1e-6)  # fmt: skip
    assert "stock" not in base.config and model.config["stock"]["strength"] == 0.3
    back = load_model(save_model(tmp_path / "st.pt", model, FEATURE_NAMES, TARGET_NAMES))
    torch.testing.assert_close(back.predict(x).intensities, b.intensities)
    assert back.stock_tau == 0.0 and back.stock.precisions.dtype == torch.float64
    for kw, match in (({"stock_strength": 2.0}, "stock_strength"),
                      ({"stock_tau": float("inf")}, "stock_tau")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            SwitchedModel(near, far_general, disc, stock=stock, **kw)
    narrow = FeatureDiscriminant.fit(*(np.random.default_rng(1).standard_normal((2, 40, 3))))
    with pytest.raises(ValueError, match="stock discriminant"):
        SwitchedModel(near, far_general, disc, stock=narrow)


def test_towards_qis_moves_a_share_of_the_identity_intensity_to_qis():
    """Decision 0073: on the picked rows ``Σ̂' = Σ̂ + s α π_identity (T_qis − T_identity)``,
    computed here from the targets themselves."""
    rng = np.random.default_rng(6)
    X = torch.as_tensor(rng.standard_normal((3, 80, 10)) @ rng.standard_normal((10, 10)))
    S, T = sample_covariance(X), shrinkage_targets(X)
    out = ShrinkageOutput(
        torch.tensor([0.4, 0.8, 0.6], dtype=torch.float64),
        torch.softmax(torch.as_tensor(rng.standard_normal((3, 5))), dim=-1),
        torch.zeros(3, dtype=torch.float64),
    )
    rows = torch.tensor([True, False, True])
    got = towards_qis(out, rows, 0.5)
    i, q = TARGET_NAMES.index("identity"), TARGET_NAMES.index("qis")
    w_id = (out.alpha * out.weights[:, i])[:, None, None]
    expected = combine(S, T, out.intensities) + 0.5 * w_id * (T[:, q] - T[:, i])
    after = combine(S, T, got.intensities)
    torch.testing.assert_close(after[rows], expected[rows], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(after[1], combine(S, T, out.intensities)[1])  # not picked
    torch.testing.assert_close(got.alpha, out.alpha)
    torch.testing.assert_close(got.weights.sum(-1), torch.ones(3, dtype=torch.float64))
    full = towards_qis(out, rows, 1.0)
    assert torch.all(full.weights[rows, i] == 0) and torch.all(full.weights >= 0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="share"):
            towards_qis(out, rows, bad)


def test_gaussian_part_moves_identity_to_qis_on_the_rows_the_pretest_calls_gaussian(
    parts, tmp_path
):
    from shrinklab.core.tail_pretest import gaussian_rows

    near, far_general, disc, x = parts
    rng = np.random.default_rng(9)
    heavy = np.vstack([extract_features(rng.standard_t(3, size=(120, 15))).numpy()
                       for _ in range(4)]).astype(np.float64)  # fmt: skip
    x = np.vstack([x, heavy])
    base = SwitchedModel(near, far_general, disc, 0.0).eval()
    model = SwitchedModel(near, far_general, disc, 0.0, gauss_share=0.5, gauss_z=2.0,
                           gauss_se=1.0).eval()  # fmt: skip
    rows = gaussian_rows(x, 2.0, 1.0)
    assert 0 < rows.sum() < len(rows) and not rows[-4:].any()  # the t(3) windows: not picked
    np.testing.assert_array_equal(model.is_gaussian(x).numpy(), rows)
    assert not base.is_gaussian(x).any()
    a, b = base.predict(x), model.predict(x)
    torch.testing.assert_close(
        b.intensities, towards_qis(a, torch.as_tensor(rows), 0.5).intensities
    )
    torch.testing.assert_close(model(torch.as_tensor(x, dtype=torch.float32)).intensities,
                               b.intensities.float(), rtol=1e-5, atol=1e-6)  # fmt: skip
    fast = numpy_predict(model, x)
    np.testing.assert_allclose(fast[0][:, None] * fast[1], b.intensities.numpy(), rtol=RTOL,
                               atol=1e-6)  # fmt: skip
    assert "gaussian" not in base.config and model.config["gaussian"] == {
        "share": 0.5,
        "z": 2.0,
        "se": 1.0,
    }
    back = load_model(save_model(tmp_path / "g.pt", model, FEATURE_NAMES, TARGET_NAMES))
    torch.testing.assert_close(back.predict(x).intensities, b.intensities)
    for kw, match in (({"gauss_share": -0.5}, "gauss_share"),
                      ({"gauss_z": float("nan")}, "gauss_z")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            SwitchedModel(near, far_general, disc, **kw)


def test_share_to_qis_moves_a_share_of_every_weight_to_qis():
    """Decision 0074: on the picked rows ``Σ̂' = S + α[(1 − s) Σ_k π_k (T_k − S) +
    s (T_qis − S)]``, computed here from the targets themselves."""
    rng = np.random.default_rng(8)
    X = torch.as_tensor(rng.standard_normal((3, 90, 8)) @ rng.standard_normal((8, 8)))
    S, T = sample_covariance(X), shrinkage_targets(X)
    out = ShrinkageOutput(
        torch.tensor([0.3, 0.7, 0.9], dtype=torch.float64),
        torch.softmax(torch.as_tensor(rng.standard_normal((3, 5))), dim=-1),
        torch.zeros(3, dtype=torch.float64),
    )
    rows = torch.tensor([True, True, False])
    got = share_to_qis(out, rows, 0.25)
    q = TARGET_NAMES.index("qis")
    a = out.alpha[:, None, None]
    expected = S + a * (0.75 * (combine(S, T, out.weights) - S) + 0.25 * (T[:, q] - S))
    after = combine(S, T, got.intensities)
    torch.testing.assert_close(after[rows], expected[rows], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(after[2], combine(S, T, out.intensities)[2])  # not picked
    torch.testing.assert_close(got.alpha, out.alpha)
    torch.testing.assert_close(got.weights.sum(-1), torch.ones(3, dtype=torch.float64))
    full = share_to_qis(out, rows, 1.0)
    torch.testing.assert_close(full.weights[rows], torch.eye(5, dtype=torch.float64)[[q, q]])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="share"):
            share_to_qis(out, rows, bad)


def test_long_fund_part_moves_weight_to_qis_on_long_far_rows_only(parts, tmp_path):
    near, far_general, disc, x = parts
    rng = np.random.default_rng(12)
    short = np.vstack([extract_features(rng.standard_normal((60, 15))).numpy()
                       for _ in range(4)]).astype(np.float64)  # fmt: skip
    x = np.vstack([x, short])
    np.testing.assert_array_equal(window_sizes(x)[0], [120] * (len(x) - 4) + [60] * 4)
    score = disc.score(x)  # some long windows far, some near, a short one far
    tau = float(min(np.median(score[:-4]), score[-4:].max() - 1e-9))
    base = SwitchedModel(near, far_general, disc, tau).eval()
    model = SwitchedModel(near, far_general, disc, tau, long_n=100, long_share=0.5).eval()
    far = base.is_far(x).numpy()
    rows = far & (window_sizes(x)[0] >= 100)
    assert 0 < rows.sum() < far[:-4].sum() + 1 and (~far[:-4]).any()  # near rows: not moved
    assert far[-4:].any() and not rows[-4:].any()  # short far windows: not moved
    np.testing.assert_array_equal(model.is_long_fund(x).numpy(), rows)
    assert not base.is_long_fund(x).any()
    a, b = base.predict(x), model.predict(x)
    torch.testing.assert_close(
        b.intensities, share_to_qis(a, torch.as_tensor(rows), 0.5).intensities
    )
    torch.testing.assert_close(model(torch.as_tensor(x, dtype=torch.float32)).intensities,
                               b.intensities.float(), rtol=1e-5, atol=1e-6)  # fmt: skip
    fast = numpy_predict(model, x)
    np.testing.assert_allclose(fast[0][:, None] * fast[1], b.intensities.numpy(), rtol=RTOL,
                               atol=1e-6)  # fmt: skip
    assert "long_fund_qis" not in base.config
    assert model.config["long_fund_qis"] == {"n": 100.0, "share": 0.5}
    back = load_model(save_model(tmp_path / "l.pt", model, FEATURE_NAMES, TARGET_NAMES))
    torch.testing.assert_close(back.predict(x).intensities, b.intensities)
    for kw, match in (({"long_share": 1.5}, "long_share"), ({"long_n": -1.0}, "long_n"),
                      ({"long_n": float("inf")}, "long_n")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            SwitchedModel(near, far_general, disc, **kw)
    with pytest.raises(ValueError, match="features must be"):
        window_sizes(x[:, :5])


def test_with_changes_keeps_every_other_part(parts):
    near, far_general, disc, x = parts
    one, iid = _kinds(40, 7)
    stock = FeatureDiscriminant.fit(iid, one, ridge=0.05)
    model = SwitchedModel(near, far_general, disc, 0.5, 0.8, stock=stock, stock_tau=1.0,
                          stock_strength=0.2, gauss_share=0.3, gauss_z=1.5,
                          gauss_se=0.04, long_n=150, long_share=0.4)  # fmt: skip
    model.extra = {"volatility_timing": 0.5}
    changed = model.with_changes(far_scale=0.6)
    assert changed.far_scale == 0.6 and not changed.training
    for name in ("near", "far_general", "discriminant", "stock"):
        assert getattr(changed, name) is getattr(model, name)
    for name in (
        "tau",
        "stock_tau",
        "stock_strength",
        "gauss_share",
        "gauss_z",
        "gauss_se",
        "long_n",
        "long_share",
    ):
        assert getattr(changed, name) == getattr(model, name)
    assert changed.extra == model.extra and changed.extra is not model.extra
    torch.testing.assert_close(
        model.with_changes().predict(x).intensities, model.eval().predict(x).intensities
    )
    with pytest.raises(TypeError, match="unknown arguments"):
        model.with_changes(gauss=0.1)
    with pytest.raises(ValueError, match="far_scale"):
        model.with_changes(far_scale=2.0)
