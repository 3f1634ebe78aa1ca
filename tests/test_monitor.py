"""RunLogger (training/monitor.py): TensorBoard + DVCLive files per run, identical
weights with and without it, a one-line no-op without the logger packages."""

from __future__ import annotations

import builtins
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _tiny_sets import F, K, tiny_set

from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.training import monitor as monitor_mod
from shrinklab.training.compression import distill, pruning_sweep
from shrinklab.training.config import TrainConfig
from shrinklab.training.experts import train_family_gate
from shrinklab.training.loop import train
from shrinklab.training.monitor import RunLogger

pytest.importorskip("tensorboard")
pytest.importorskip("dvclive")

ROOT = Path(__file__).resolve().parents[1]
CFG = TrainConfig(epochs=3, batch_size=64, lr=3e-3, patience=10, seed=3, device="cpu")


def _fit(tmp_path, name, logger=None):
    tr, va = tiny_set(256, seed=0), tiny_set(96, seed=1)
    torch.manual_seed(0)
    model = MLShrinkageNetwork(input_dim=F, num_targets=K, hidden_dims=(16, 8))
    history = train(model, tr, va, CFG, out_dir=tmp_path / name, resume=False, logger=logger)
    return model, history


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_logging_leaves_training_bit_identical_and_writes_both_backends(tmp_path):
    plain, h0 = _fit(tmp_path, "plain")
    with RunLogger("pretrain", tmp_path / "reports") as log:
        assert log.active
        logged, h1 = _fit(tmp_path, "logged", log)
    _same_weights(plain, logged)
    assert h0["valid_loss"] == h1["valid_loss"]
    events = list((tmp_path / "reports" / "tensorboard" / "pretrain").glob("events.out.tfevents*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    curve = (
        tmp_path / "reports" / "dvclive" / "pretrain" / "plots" / "metrics" / "valid" / "loss.tsv"
    )
    rows = curve.read_text().strip().splitlines()
    assert rows[0].split("\t")[:2] == ["step", "loss"] and len(rows) == 1 + CFG.epochs
    # only curves in the run's DVCLive folder (dvc.yaml declares whole folders as plots)
    assert not list((tmp_path / "reports" / "dvclive").rglob("*.json"))
    # the event file holds the scalars and the intensity histograms of every epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent), size_guidance={"histograms": 0}).Reload()
    assert [e.step for e in acc.Scalars("valid/loss")] == [0, 1, 2]
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx(h1["lr"], rel=1e-6)
    assert {"alpha", "intensity/0"} <= set(acc.Tags()["histograms"])
    assert len(acc.Histograms("alpha")) == CFG.epochs


def test_gate_and_distillation_identical_with_logger(tmp_path):
    ds = tiny_set(200, seed=2)
    fams = ["a" if v > 0 else "b" for v in ds.features[:, 0]]
    g0 = train_family_gate(ds.features, fams, hidden_dims=(8,), epochs=2, seed=1)
    with RunLogger("gate", tmp_path) as log:
        g1 = train_family_gate(ds.features, fams, hidden_dims=(8,), epochs=2, seed=1, logger=log)
    _same_weights(g0, g1)
    teacher = MLShrinkageNetwork(input_dim=F, num_targets=K, hidden_dims=(8,)).eval()
    s0 = distill(teacher, ds, epochs=2, seed=4)
    with RunLogger("compress/distill", tmp_path) as log:
        s1 = distill(teacher, ds, epochs=2, seed=4, logger=log)
    _same_weights(s0, s1)
    assert (tmp_path / "dvclive" / "compress" / "distill" / "plots" / "metrics" / "train").is_dir()
    assert (
        tmp_path / "dvclive" / "gate" / "plots" / "metrics" / "train" / "cross_entropy.tsv"
    ).is_file()


def test_pruning_fine_tunes_identical_with_a_run_each(tmp_path):
    ds, va = tiny_set(200, seed=2), tiny_set(64, seed=3)
    torch.manual_seed(0)
    student = MLShrinkageNetwork(input_dim=F, num_targets=K, hidden_dims=(8,)).eval()
    kw = {"fine_tune_data": ds, "fine_tune_epochs": 2, "seed": 4}
    torch.manual_seed(1)  # dropout draws from the global generator: the same state for both
    t0, m0 = pruning_sweep(student, [0.5, 0.29], va, **kw)
    torch.manual_seed(1)
    t1, m1 = pruning_sweep(student, [0.5, 0.29], va, monitor=tmp_path, **kw)
    for a in m0:
        _same_weights(m0[a], m1[a])
    assert t0.equals(t1)
    runs = sorted(p.name for p in (tmp_path / "dvclive" / "compress").iterdir())
    assert runs == ["prune_29", "prune_50"]  # rounded percent, not int(28.99…)
    curve = tmp_path / "dvclive" / "compress" / "prune_50" / "plots" / "metrics" / "train"
    assert len((curve / "loss.tsv").read_text().strip().splitlines()) == 1 + 2
    assert list((tmp_path / "tensorboard" / "compress" / "prune_29").glob("events.out.*"))
    pruning_sweep(student, [0.5], va, monitor=tmp_path / "none")  # nothing trained: no run
    assert not (tmp_path / "none").exists()


def test_without_logger_packages_a_noop_with_one_line(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name in ("dvclive", "torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    for mod in [
        m for m in sys.modules if m == "dvclive" or m.startswith("torch.utils.tensorboard")
    ]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", blocked)
    monkeypatch.setattr(monitor_mod, "_MISSING_NOTE", set())
    with RunLogger("x", tmp_path) as log:
        assert not log.active
        _fit(tmp_path, "run", log)
    with RunLogger("y", tmp_path):
        pass
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2  # one line per missing package, once per process
    assert "tensorboard not installed" in err[0] and "dvclive not installed" in err[1]
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "dvclive").exists()


@pytest.mark.parametrize("bad", ["", "/abs", "../up"])
def test_run_name_must_be_relative(bad, tmp_path):
    with pytest.raises(ValueError, match="relative"):
        RunLogger(bad, tmp_path)


def test_every_logging_stage_caches_its_event_files_and_plots_its_curves():
    """A stage whose notebook logs training runs (named ``<stage>`` or ``<stage>/...``)
    declares ``reports/tensorboard/<stage>`` as a DVC-cached out, its DVCLive folder as
    a git-tracked out and as a top-level ``plots:`` entry (``dvc plots show``)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    plots = {next(iter(p)) if isinstance(p, dict) else p for p in dvc["plots"]}
    logging = []
    for name, stage in dvc["stages"].items():
        text = (ROOT / "notebooks" / f"{stage['cmd'].split()[4]}.py").read_text()
        if not re.search(r"RunLogger\(|run_logger\(|monitor=reports", text):
            continue
        logging.append(name)
        for run in re.findall(r'(?:RunLogger|run_logger)\("([^"]+)"', text):
            assert run.split("/")[0] == name, (name, run)
        outs = {next(iter(o)) if isinstance(o, dict) else o: o for o in stage["outs"]}
        assert outs.get(f"reports/tensorboard/{name}") == f"reports/tensorboard/{name}", name
        live = f"reports/dvclive/{name}"
        assert outs[live] == {live: {"cache": False}} and live in plots, name
    assert sorted(logging) == ["compress", "ensemble", "finetune", "peer", "pretrain"]
