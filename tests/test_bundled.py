"""The model bundled with the package: the default of the estimator, named by
``from_pretrained``, identical to the pipeline's deployed model, with its model card."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from _forced_model import FEATURE_NAMES, TARGET_NAMES, random_network, save

from shrinklab.evaluation.model_card import bundle_model, model_card, sha256_of
from shrinklab.models import bundled
from shrinklab.models.registry import save_model
from shrinklab.sklearn import MLShrinkageCovariance

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "shrinklab" / "weights"


@pytest.fixture()
def bundle(tmp_path, monkeypatch):
    """A bundled-weights folder holding one small model, as the package would."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(bundled, "bundled_dir", lambda: folder)
    return folder


def _X(n=60, p=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, p)) * 0.01


def test_default_estimator_uses_the_bundled_model(bundle, tmp_path):
    path = save(random_network(seed=3), tmp_path / "m.pt")
    shutil.copyfile(path, bundle / "final.pt")
    X = _X()
    default = MLShrinkageCovariance().fit(X).covariance_
    named = MLShrinkageCovariance.from_pretrained("final").fit(X).covariance_
    by_file = MLShrinkageCovariance.from_pretrained(path).fit(X).covariance_
    np.testing.assert_array_equal(default, by_file)
    np.testing.assert_array_equal(named, by_file)


def test_unknown_or_missing_bundled_model_is_a_clear_error(bundle):
    with pytest.raises(ValueError, match=r"no bundled model 'final'.*bundled: none"):
        MLShrinkageCovariance().fit(_X())
    (bundle / "other.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"no bundled model 'nope'.*\['other'\]"):
        MLShrinkageCovariance.from_pretrained("nope")
    with pytest.raises(ValueError, match="no model file"):
        MLShrinkageCovariance.from_pretrained("missing/dir/model.pt")


METRICS = {
    "n_reps": 100,
    "headline": {
        "columns": ["setting", "metric", "best classical", "learned", "learned − best"],
        "rows": [
            ["1/3/10 p=200 n=100", "PRIAL %", "oas 98.9 ± 0.0", "99.2 ± 0.0", "0.353 ± 0.011"],
            ["GMV S&P 500, window 60: ML (fine-tuned)", "ann. vol %", "lw 16.1", "15.4", "x"],
        ],
    },
    "backtest": {
        "60/ML (final)": {
            "ann_vol": 0.158,
            "diff_vs_benchmark": -0.0012,
            "ci_low": -0.0036,
            "ci_high": 0.0009,
            "p_value": 0.263,
        },
        "60/ledoit_wolf": {"ann_vol": 0.1614},
    },
}


def test_bundle_copies_bytes_and_writes_a_card(tmp_path):
    src = save(random_network(seed=4), tmp_path / "final.pt")
    pt, card = bundle_model(src, tmp_path / "w", METRICS, version="9.9")
    assert pt.read_bytes() == Path(src).read_bytes()
    text = card.read_text()
    assert hashlib.sha256(pt.read_bytes()).hexdigest() in text
    assert "| 1/3/10 p=200 n=100 | 99.2 ± 0.0 | oas 98.9 ± 0.0 | 0.353 ± 0.011 |" in text
    assert "| 60 | 15.80 | 16.14 | -0.12 [-0.36, +0.09] | 0.263 |" in text
    assert "fine-tuned" not in text  # the card reports the bundled model only
    for heading in ("## Training data", "## Intended use", "## Limits", "Feature schema"):
        assert heading in text
    assert model_card(pt, METRICS, "9.9") == text


def _locked_md5(path: str) -> str | None:
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return out["md5"]
    return None


def test_bundled_file_is_the_deployed_model_of_dvc_lock():
    """The committed shrinklab/weights/final.pt has the bytes of models/final.pt as
    recorded in the committed dvc.lock, and its card names its sha256."""
    locked = _locked_md5("models/final.pt")
    if locked is None or not (WEIGHTS / "final.pt").exists():
        pytest.skip("no bundled model in this checkout yet (written by `make repro`)")
    assert hashlib.md5((WEIGHTS / "final.pt").read_bytes()).hexdigest() == locked
    assert _locked_md5("shrinklab/weights/final.pt") == locked
    assert sha256_of(WEIGHTS / "final.pt") in (WEIGHTS / "final.md").read_text()


def test_model_card_names_the_real_data_of_a_fine_tuned_deployment(tmp_path):
    """The card's training data follow the deployed candidate: a fine-tuned network names
    the pre-2016 real returns it was trained on; the synthetic model says it saw none."""
    tuned = save_model(
        tmp_path / "tuned.pt",
        random_network(seed=5),
        FEATURE_NAMES,
        TARGET_NAMES,
        extra={"chosen": "finetuned"},
    )
    text = model_card(tuned, METRICS, "9.9")
    assert "fine-tuned on the realised out-of-sample GMV variance" in text
    assert "before 2016" in text and "no real returns" not in text
    assert "Family experts" not in text
    gated = save_model(
        tmp_path / "gated.pt",
        random_network(seed=5),
        FEATURE_NAMES,
        TARGET_NAMES,
        extra={"chosen": "finetuned_experts"},
    )
    text = model_card(gated, METRICS, "9.9")
    assert "fine-tuned on the realised out-of-sample GMV variance" in text
    assert "Family experts" in text and "0033" in text and "0035" not in text
    served = save_model(
        tmp_path / "served.pt",
        random_network(seed=5),
        FEATURE_NAMES,
        TARGET_NAMES,
        extra={"chosen": "finetuned_experts_ensemble"},
    )
    text = model_card(served, METRICS, "9.9")
    assert "Family experts" in text and "pretrained ensemble" in text and "0035" in text
    assert "fine-tuned on the realised out-of-sample GMV variance" in text
    assert "0043" not in text and "added up" not in text
    # a server that fires on the pooled non-market probability (decision 0043) says so
    from shrinklab.evaluation.compression import NON_MARKET_FAMILIES, with_server_for
    from shrinklab.models.experts import FamilyGate, GatedExpertModel

    gate = FamilyGate(len(FEATURE_NAMES), ["factor", *NON_MARKET_FAMILIES], hidden_dims=(4,))
    base = GatedExpertModel(random_network(seed=5), {"factor": random_network(seed=6)}, gate, 0.7)
    for pooled in (False, True):
        model = with_server_for(base, random_network(seed=7), NON_MARKET_FAMILIES, pooled=pooled)
        path = save_model(
            tmp_path / f"pooled_{pooled}.pt",
            model,
            FEATURE_NAMES,
            TARGET_NAMES,
            extra={"chosen": "finetuned_experts_ensemble"},
        )
        text = model_card(path, METRICS, "9.9")
        assert ("added up" in text and "0043" in text) == pooled
    # the soft mixture (decision 0044): every module joins, weighted by the gate
    from shrinklab.evaluation.compression import with_mixing

    path = save_model(
        tmp_path / "soft.pt",
        with_mixing(model, "soft"),
        FEATURE_NAMES,
        TARGET_NAMES,
        extra={"chosen": "finetuned_experts_ensemble"},
    )
    text = model_card(path, METRICS, "9.9")
    assert "0044" in text and "weigh with" in text and "pretrained ensemble" in text
    assert "70 %" not in text and "0045" not in text
    # with an expert fine-tuned on real returns (decision 0045) the card says which
    path = save_model(
        tmp_path / "tuned.pt",
        with_mixing(model, "soft"),
        FEATURE_NAMES,
        TARGET_NAMES,
        extra={"chosen": "finetuned_experts_ensemble", "finetuned_experts": ["sp500"]},
    )
    text = model_card(path, METRICS, "9.9")
    assert "members of the sp500 expert were then fine-tuned" in text and "0045" in text
    assert "0058" not in text
    # with a guarded expert (decision 0058) the card names its family, threshold and range
    from shrinklab.evaluation.compression import with_guarded_experts

    guard = {"threshold": 0.5, "max_p_over_n": 4.0}
    guarded = with_guarded_experts(
        with_mixing(model, "soft"), {"toeplitz": (random_network(seed=8), guard)}
    )
    path = save_model(
        tmp_path / "guarded.pt",
        guarded,
        FEATURE_NAMES,
        TARGET_NAMES,
        extra={"chosen": "finetuned_experts_ensemble"},
    )
    text = model_card(path, METRICS, "9.9")
    assert "expert for the toeplitz worlds" in text and "exceeds 0.5" in text
    assert "p/n is at most 4 " in text and "module that served it before" in text
    assert "0058" in text
    synthetic = save_model(
        tmp_path / "ens.pt",
        random_network(seed=5),
        FEATURE_NAMES,
        TARGET_NAMES,
        extra={"chosen": "ensemble"},
    )
    assert "no real returns" in model_card(synthetic, METRICS, "9.9")


def test_model_card_describes_the_fund_switch(tmp_path):
    """A ``domain_switch`` file (decision 0068): the card reads the gated model's config
    inside it (its soft mixture) and says which windows the pretrained network serves."""
    from shrinklab.evaluation.compression import with_mixing
    from shrinklab.models.experts import FamilyGate, GatedExpertModel
    from shrinklab.models.switched import FeatureDiscriminant, SwitchedModel

    gate = FamilyGate(len(FEATURE_NAMES), ["factor", "sp500"], hidden_dims=(4,))
    near = with_mixing(
        GatedExpertModel(random_network(seed=5), {"factor": random_network(seed=6)}, gate, 0.7),
        "soft",
    )
    rng = np.random.default_rng(0)
    disc = FeatureDiscriminant.fit(
        rng.standard_normal((80, len(FEATURE_NAMES))),
        rng.standard_normal((80, len(FEATURE_NAMES))) + 1.0,
    )
    info = {"share_valid_worlds": 0.02, "synthetic_families": ["diversified", "resampled"]}
    path = save_model(
        tmp_path / "switched.pt",
        SwitchedModel(near, random_network(seed=7), disc),
        FEATURE_NAMES,
        TARGET_NAMES,
        extra={"chosen": "finetuned_experts", "fund_switch": info},
    )
    text = model_card(path, METRICS, "9.9")
    assert "`domain_switch`" in text and "0068" in text and "2.0 %" in text
    assert "diversified, resampled families" in text
    assert "weigh with" in text and "0044" in text  # the near model's soft mixture
    assert "0069" not in text  # no far scale
    half = SwitchedModel(near, random_network(seed=7), disc, far_scale=0.75)
    path = save_model(tmp_path / "half.pt", half, FEATURE_NAMES, TARGET_NAMES, extra={})
    assert "multiplied by 0.75 (docs/decisions/0069)" in model_card(path, METRICS, "9.9")


def test_model_card_reports_the_etf_backtest_and_variance_forecasts_when_present(tmp_path):
    path = save(random_network(seed=4), tmp_path / "final.pt")
    assert "Variance forecasts" not in model_card(path, METRICS, "9.9")  # older metrics
    assert "factor ETFs" not in model_card(path, METRICS, "9.9")
    more = {
        **METRICS,
        "backtest_etf": {
            "60/ML (final)": {
                "ann_vol": 0.156,
                "diff_vs_benchmark": -0.0031,
                "ci_low": -0.005,
                "ci_high": -0.001,
                "p_value": 0.004,
            },
            "60/ledoit_wolf": {"ann_vol": 0.1591},
        },
        "variance_forecast": {
            "20 stocks/60/ML (final)": {
                "qlike": 0.393,
                "difference": -0.0317,
                "difference se": 0.0302,
            },
            "20 stocks/60/ledoit_wolf": {"qlike": 0.4247, "difference": 0.0, "difference se": 0.0},
        },
    }
    text = model_card(path, more, "9.9")
    assert "| 60 | 15.60 | 15.91 | -0.31 [-0.50, -0.10] | 0.004 |" in text
    assert "| 20 stocks | 60 | 0.393 | -0.032 ± 0.030 |" in text
    assert "ledoit_wolf | " not in text.split("## Variance forecasts")[1]


def test_model_card_says_how_to_leave_the_timing_out(tmp_path):
    from shrinklab.core.volatility_timing import EXTRA_KEY, PRETEST_KEY

    timed = save_model(
        tmp_path / "timed.pt", random_network(seed=4), FEATURE_NAMES, TARGET_NAMES,
        extra={EXTRA_KEY: 0.5, PRETEST_KEY: "split"},
    )  # fmt: skip
    plain = save_model(tmp_path / "plain.pt", random_network(seed=4), FEATURE_NAMES, TARGET_NAMES)
    text = model_card(timed, METRICS, "9.9")
    assert "half-life 0.5 × the window" in text and "(`split`)" in text
    assert "volatility_timing=False" in text and "--no-volatility-timing" in text
    assert "volatility_timing=False" not in model_card(plain, METRICS, "9.9")


def test_model_card_line_on_the_gaussian_move_follows_the_file():
    """Decision 0073's line: written from a ``domain_switch`` file's ``gaussian`` config
    and the share of validation worlds in its ``extra``; absent without the step."""
    from shrinklab.evaluation.model_card import _gaussian_move

    payload = {
        "kind": "domain_switch",
        "config": {"gaussian": {"share": 0.25, "z": 2.0, "se": 0.025}},
        "extra": {"gaussian_move": {"share_valid_worlds": 0.0503}},
    }
    (line,) = _gaussian_move(payload)
    for part in ("(5.0 % of the synthetic validation worlds)", "move 0.25 of", "at most 2 ",
                 "at most 0.025", "docs/decisions/0073"):  # fmt: skip
        assert part in line
    assert _gaussian_move({**payload, "config": {}}) == []
    assert _gaussian_move({**payload, "kind": "gated_experts"}) == []


def test_model_card_line_on_the_long_fund_step_follows_the_file():
    """Decision 0074's line: written from a ``domain_switch`` file's ``long_fund_qis``
    config; absent without the step."""
    from shrinklab.evaluation.model_card import _long_fund_qis

    payload = {"kind": "domain_switch", "config": {"long_fund_qis": {"n": 200.0, "share": 0.5}}}
    (line,) = _long_fund_qis(payload)
    for part in ("at least 200 observations", "move 0.5 of every target weight",
                 "docs/decisions/0074"):  # fmt: skip
        assert part in line
    assert _long_fund_qis({**payload, "config": {}}) == []
    assert _long_fund_qis({**payload, "kind": "gated_experts"}) == []
