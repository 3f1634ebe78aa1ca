"""``python -m shrinklab covariance``: same numbers as the estimator, clear user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _forced_model import random_network, save

from shrinklab.cli import main
from shrinklab.sklearn import MLShrinkageCovariance

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    # a random network: α and π depend on the data, so a wrong input path would show
    return save(random_network(seed=3), tmp_path_factory.mktemp("cli") / "tiny.pt")


def _returns(n: int = 40, p: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) @ rng.standard_normal((p, p)) * 0.01
    dates = pd.bdate_range("2021-01-04", periods=n, name="date")
    return pd.DataFrame(X, index=dates, columns=[f"asset_{j}" for j in range(p)])


def _expected(model: str, df: pd.DataFrame, **params) -> MLShrinkageCovariance:
    return MLShrinkageCovariance(model_path=model, **params).fit(df.to_numpy())


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _check_cov(path: Path, df: pd.DataFrame, expected: np.ndarray) -> None:
    cov = pd.read_csv(path, index_col=0)
    assert list(cov.index) == list(df.columns)
    assert list(cov.columns) == list(df.columns)
    np.testing.assert_allclose(cov.to_numpy(), expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- results
def test_csv_with_date_index_matches_estimator(tmp_path, model, capsys):
    df = _returns()
    df.to_csv(tmp_path / "returns.csv")
    code, _, err = _run(
        ["covariance", tmp_path / "returns.csv", "--model", model, "--out", tmp_path / "cov.csv"],
        capsys,
    )
    assert code == 0, err
    est = _expected(model, df)
    _check_cov(tmp_path / "cov.csv", df, est.covariance_)


def test_json_sidecar_has_alpha_and_weights_per_target(tmp_path, model, capsys):
    df = _returns(seed=1)
    df.to_csv(tmp_path / "r.csv")
    code, _, err = _run(
        [
            "covariance",
            tmp_path / "r.csv",
            "--model",
            model,
            "--out",
            tmp_path / "cov.csv",
            "--json-out",
            tmp_path / "info.json",
        ],
        capsys,
    )
    assert code == 0, err
    info = json.loads((tmp_path / "info.json").read_text())
    est = _expected(model, df)
    assert info["alpha"] == pytest.approx(est.shrinkage_, abs=1e-12)
    assert info["target_weights"].keys() == est.target_weights_.keys()
    for k, w in est.target_weights_.items():
        assert info["target_weights"][k] == pytest.approx(w, abs=1e-12)
    assert sum(info["target_weights"].values()) == pytest.approx(1.0, abs=1e-6)
    assert info["intensities"] == pytest.approx(dict(zip(est.target_weights_, est.intensities_)))
    assert (info["n_samples"], info["n_assets"]) == df.shape


def test_parquet_input(tmp_path, model, capsys):
    pytest.importorskip("pyarrow")
    df = _returns(seed=2)
    df.to_parquet(tmp_path / "r.parquet")  # the date index travels in the file
    code, _, err = _run(
        ["covariance", tmp_path / "r.parquet", "-m", model, "-o", tmp_path / "cov.csv"], capsys
    )
    assert code == 0, err
    _check_cov(tmp_path / "cov.csv", df, _expected(model, df).covariance_)
    # a date *column* (index not stored) is detected as well
    df.reset_index().to_parquet(tmp_path / "r2.parquet", index=False)
    code, _, err = _run(
        ["covariance", tmp_path / "r2.parquet", "-m", model, "-o", tmp_path / "cov2.csv"], capsys
    )
    assert code == 0, err
    _check_cov(tmp_path / "cov2.csv", df, _expected(model, df).covariance_)


def test_parquet_without_pyarrow_is_a_user_error(tmp_path, model, capsys, monkeypatch):
    (tmp_path / "r.parquet").write_bytes(b"PAR1")

    def no_engine(*args, **kwargs):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    msg = _error(["covariance", tmp_path / "r.parquet", "-m", model], capsys)
    assert "reading Parquet needs pyarrow" in msg


def test_csv_without_index_and_stdout(tmp_path, model, capsys):
    df = _returns(seed=4)
    df.to_csv(tmp_path / "r.csv", index=False)
    code, out, err = _run(["covariance", tmp_path / "r.csv", "--model", model], capsys)
    assert code == 0, err
    (tmp_path / "cov.csv").write_text(out)
    _check_cov(tmp_path / "cov.csv", df, _expected(model, df).covariance_)


def test_index_col_and_no_index_options(tmp_path, model, capsys):
    df = _returns(seed=5)
    labelled = df.reset_index(drop=True)
    labelled.insert(0, "obs", [f"w{i}" for i in range(len(df))])  # not dates, not numeric
    labelled.to_csv(tmp_path / "r.csv", index=False)
    code, _, err = _run(["covariance", tmp_path / "r.csv", "-m", model], capsys)
    assert code == 2 and "'obs' is not numeric" in err and "--index-col obs" in err
    code, _, err = _run(
        ["covariance", tmp_path / "r.csv", "-m", model, "--index-col", "obs", "-o", tmp_path / "c"],
        capsys,
    )
    assert code == 0, err
    _check_cov(tmp_path / "c", df, _expected(model, df).covariance_)
    # --no-index: a numeric first column counts as an asset
    df.to_csv(tmp_path / "n.csv", index=False)
    code, _, err = _run(
        ["covariance", tmp_path / "n.csv", "-m", model, "--no-index", "-o", tmp_path / "c2"],
        capsys,
    )
    assert code == 0, err
    _check_cov(tmp_path / "c2", df, _expected(model, df).covariance_)


def test_assume_centered_is_passed_on(tmp_path, model, capsys):
    df = _returns(seed=6) + 0.05
    df.to_csv(tmp_path / "r.csv")
    code, _, err = _run(
        ["covariance", tmp_path / "r.csv", "-m", model, "--assume-centered", "-o", tmp_path / "c"],
        capsys,
    )
    assert code == 0, err
    _check_cov(tmp_path / "c", df, _expected(model, df, assume_centered=True).covariance_)


def test_no_volatility_timing_is_passed_on(tmp_path, capsys):
    from shrinklab.core.features import FEATURE_NAMES
    from shrinklab.core.targets import TARGET_NAMES
    from shrinklab.core.volatility_timing import EXTRA_KEY
    from shrinklab.models.registry import save_model

    timed = str(
        save_model(tmp_path / "timed.pt", random_network(seed=3), FEATURE_NAMES, TARGET_NAMES,
                   extra={EXTRA_KEY: 1.0})
    )  # fmt: skip
    df = _returns(n=200, seed=7)
    df.iloc[100:] *= 2.0  # the volatility doubles: the timing moves the variances
    df.to_csv(tmp_path / "r.csv")
    code, _, err = _run(
        ["covariance", tmp_path / "r.csv", "-m", timed, "-o", tmp_path / "a"], capsys
    )
    assert code == 0, err
    code, _, err = _run(
        ["covariance", tmp_path / "r.csv", "-m", timed, "--no-volatility-timing", "-o", tmp_path / "b"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    _check_cov(tmp_path / "a", df, _expected(timed, df).covariance_)
    _check_cov(tmp_path / "b", df, _expected(timed, df, volatility_timing=False).covariance_)
    a = pd.read_csv(tmp_path / "a", index_col=0).to_numpy()
    b = pd.read_csv(tmp_path / "b", index_col=0).to_numpy()
    assert np.all(np.diag(a) > np.diag(b))  # the timed variances follow the recent doubling


def test_devolatilise_is_passed_on(tmp_path, capsys):
    """``--devolatilise`` gives ``MLShrinkageCovariance(devolatilise=True)``'s estimate,
    which differs from the default one on assets of very different volatility."""
    model = str(save(random_network(seed=4), tmp_path / "m.pt"))
    df = _returns(n=120, seed=8)
    df.iloc[:, ::2] *= 0.1  # every other asset a tenth of the volatility
    df.to_csv(tmp_path / "r.csv")
    code, _, err = _run(
        ["covariance", tmp_path / "r.csv", "-m", model, "--devolatilise", "-o", tmp_path / "d"],
        capsys,
    )
    assert code == 0, err
    _check_cov(tmp_path / "d", df, _expected(model, df, devolatilise=True).covariance_)
    plain = _expected(model, df).covariance_
    got = pd.read_csv(tmp_path / "d", index_col=0).to_numpy()
    assert np.abs(got - plain).max() > 1e-3 * np.abs(plain).max()


# --------------------------------------------------------------------------- user errors
def _error(argv: list, capsys) -> str:
    code, out, err = _run(argv, capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    assert "Traceback" not in err
    return lines[0]


def test_missing_file(tmp_path, model, capsys):
    msg = _error(["covariance", tmp_path / "nope.csv", "--model", model], capsys)
    assert "nope.csv" in msg and "no such file" in msg


def test_without_model_the_bundled_one_is_used(tmp_path, model, capsys, monkeypatch):
    import shutil

    from shrinklab.models import bundled

    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(bundled, "bundled_dir", lambda: weights)
    _returns().to_csv(tmp_path / "r.csv")
    msg = _error(["covariance", tmp_path / "r.csv"], capsys)  # nothing bundled
    assert "no bundled model 'final'" in msg
    shutil.copyfile(model, weights / "final.pt")
    assert _run(["covariance", tmp_path / "r.csv", "--out", tmp_path / "a.csv"], capsys)[0] == 0
    args = ["covariance", tmp_path / "r.csv", "--model", model, "--out", tmp_path / "b.csv"]
    assert _run(args, capsys)[0] == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv"))


def test_missing_and_bad_model_file(tmp_path, capsys):
    _returns().to_csv(tmp_path / "r.csv")
    msg = _error(["covariance", tmp_path / "r.csv", "--model", tmp_path / "none.pt"], capsys)
    assert "no model file" in msg and "none.pt" in msg
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    msg = _error(["covariance", tmp_path / "r.csv", "--model", tmp_path / "junk.pt"], capsys)
    assert "junk.pt is not a shrinklab model file" in msg


def test_non_numeric_column(tmp_path, model, capsys):
    df = _returns().astype(object)
    df.iloc[3, 2] = "n/a?"
    df.to_csv(tmp_path / "r.csv")
    msg = _error(["covariance", tmp_path / "r.csv", "--model", model], capsys)
    assert "'asset_2' is not numeric" in msg and "n/a?" in msg


def test_nan_names_the_column(tmp_path, model, capsys):
    df = _returns()
    df.iloc[[5, 9], 3] = np.nan
    df.to_csv(tmp_path / "r.csv")
    msg = _error(["covariance", tmp_path / "r.csv", "--model", model], capsys)
    assert "'asset_3'" in msg and "NaN" in msg and "2 row(s)" in msg
    assert str(df.index[5].date()) in msg


def test_infinite_value_names_the_column(tmp_path, model, capsys):
    df = _returns()
    df.iloc[2, 1] = np.inf
    df.to_csv(tmp_path / "r.csv")
    msg = _error(["covariance", tmp_path / "r.csv", "--model", model], capsys)
    assert "'asset_1'" in msg and "infinite" in msg


@pytest.mark.parametrize("rows", [0, 1])
def test_too_few_rows(tmp_path, model, capsys, rows):
    _returns().iloc[:rows].to_csv(tmp_path / "r.csv")
    msg = _error(["covariance", tmp_path / "r.csv", "--model", model], capsys)
    assert "too few rows" in msg and "at least 2" in msg


def test_empty_file_and_unwritable_output(tmp_path, model, capsys):
    (tmp_path / "empty.csv").write_text("")
    msg = _error(["covariance", tmp_path / "empty.csv", "--model", model], capsys)
    assert "empty" in msg
    _returns().to_csv(tmp_path / "r.csv")
    msg = _error(
        ["covariance", tmp_path / "r.csv", "-m", model, "-o", tmp_path / "no" / "dir" / "c.csv"],
        capsys,
    )
    assert "cannot write the covariance" in msg


def test_bad_option_is_one_line_exit_2(tmp_path, capsys):
    msg = _error(["covariance", tmp_path / "r.csv", "--frobnicate"], capsys)
    assert "--frobnicate" in msg


# --------------------------------------------------------------------------- python -m shrinklab
def test_python_dash_m(tmp_path, model):
    df = _returns(seed=7)
    df.to_csv(tmp_path / "r.csv")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "shrinklab",
            "covariance",
            "r.csv",
            "--model",
            model,
            "--out",
            "c.csv",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    _check_cov(tmp_path / "c.csv", df, _expected(model, df).covariance_)
    bad = subprocess.run(
        [sys.executable, "-m", "shrinklab", "covariance", "missing.csv", "--model", model],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "missing.csv: no such file" in bad.stderr


def test_help_does_not_import_torch():
    # shrinklab.cli imports the estimator (torch, scikit-learn, pandas) lazily, so --help
    # costs no more than `import shrinklab` itself
    code = (
        "import sys, shrinklab; before = set(sys.modules); "
        "from shrinklab.cli import main; rc = main(['--help']); assert rc == 0, rc; "
        "new = {m.partition('.')[0] for m in set(sys.modules) - before}; "
        "heavy = new & {'torch', 'sklearn', 'pandas', 'numpy', 'scipy'}; "
        "assert not heavy, heavy; assert 'shrinklab.sklearn' not in set(sys.modules) - before"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "covariance" in run.stdout
