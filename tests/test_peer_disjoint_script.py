"""scripts/peer_disjoint.py: the paired summary against a direct computation, per fit, and
the run files it checks for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests._scripts import load_script

peer_disjoint = load_script("scripts/peer_disjoint.py")


def test_summary_pairs_match_a_direct_computation():
    rng = np.random.default_rng(0)
    names = ["final_fit", "peer_fit", "ledoit_wolf", "ensemble", "final", "peer_all"]
    rows = pd.DataFrame(
        [
            {"fold": f"f{f}", "window": w, "estimator": e, "rel_vol": float(rng.normal())}
            for f in range(6)
            for w in (60, 250)
            for e in names
        ]
    )
    table = peer_disjoint.summary(rows).set_index(["model", "reference"])
    per_fold = rows.groupby(["fold", "estimator"])["rel_vol"].mean().unstack()
    for model, ref in peer_disjoint.PAIRS:
        d = per_fold[model] - per_fold[ref]
        got = table.loc[(model, ref)]
        assert got["delta"] == pytest.approx(d.mean(), abs=1e-12)
        assert got["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), abs=1e-12)
        assert got["folds"] == 6


def test_missing_files_names_what_a_run_root_lacks(tmp_path):
    assert set(peer_disjoint.missing_files(tmp_path)) == {"params.yaml", *peer_disjoint.NEEDED}
    (tmp_path / "params.yaml").write_text("x: 1\n")
    (tmp_path / "models").mkdir()
    for f in peer_disjoint.NEEDED[:3]:
        (tmp_path / f).write_bytes(b"")
    assert peer_disjoint.missing_files(tmp_path) == ["models/rie_network.pt"]


def test_by_fit_scores_each_split_on_its_own_folds():
    names = ["final_fit", "peer_fit", "ledoit_wolf"]
    shift = {"s0a": 1.0, "s0b": -3.0}  # the peer's fits differ
    rows = pd.DataFrame(
        [
            {
                "split": s,
                "fold": f"{s}-f{f}",
                "window": w,
                "estimator": e,
                "rel_vol": {"final_fit": -1.0, "peer_fit": shift[s], "ledoit_wolf": 0.0}[e]
                + 0.1 * f,
            }
            for s in shift
            for f in range(3)
            for w in (60, 250)
            for e in names
        ]
    )
    fits = peer_disjoint.by_fit(rows)
    assert list(fits.index) == ["s0a", "s0b"]
    assert fits.loc["s0a", "ours_minus_peer"] == pytest.approx(-2.0)
    assert fits.loc["s0b", "ours_minus_peer"] == pytest.approx(2.0)
    assert fits["ours_minus_lw"].tolist() == pytest.approx([-1.0, -1.0])
    assert fits["peer_minus_lw"].tolist() == pytest.approx([1.0, -3.0])
