"""The typed sections of params.yaml (shrinklab.core.params) against params.yaml, the
notebooks' ``parameters`` cells and the stage commands, and the loader's errors."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from shrinklab.core import params as P
from shrinklab.data.synthetic import SyntheticConfig
from shrinklab.models.network import MLShrinkageNetwork
from shrinklab.pipeline.deps import DVC_FILES
from shrinklab.pipeline.notebooks import notebook_parameters, read_notebook
from shrinklab.training.config import TrainConfig
from shrinklab.training.rie_network import PeerConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
PATH_KEYS = [f.name for f in dataclasses.fields(P.Paths)]


def _stage_notebooks() -> dict[str, str]:
    """section -> notebook, from every stage command of dvc.yaml and studies/dvc.yaml."""
    out = {}
    for dvc_file in DVC_FILES:
        for stage in yaml.safe_load((ROOT / dvc_file).read_text())["stages"].values():
            cmd = " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"]
            notebook, section = re.search(r"pipeline run (\S+) (\S+)", cmd).groups()
            out[section] = notebook
    return out


STAGES = _stage_notebooks()


def _yaml() -> dict:
    return yaml.safe_load(PARAMS.read_text())


@pytest.mark.parametrize("name", sorted(P.section_names()))
def test_every_section_round_trips_through_its_dataclass(name):
    raw = _yaml()
    section = P.load_section(name, PARAMS)
    if name == P.SHARED_SECTION:
        assert dataclasses.asdict(section) == raw[name]
        return
    values = {k: getattr(section, k) for k in section.keys()}
    assert values == raw[name]  # the same keys, in the same order, the same values
    assert list(values) == list(raw[name])
    assert dataclasses.asdict(section.paths) == raw[P.SHARED_SECTION]


def test_params_yaml_has_no_section_without_a_dataclass():
    assert set(_yaml()) == set(P.section_names())


def test_every_stage_runs_a_known_section_and_every_section_has_a_stage():
    assert set(STAGES) == set(P.section_names()) - {P.SHARED_SECTION}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_notebook_parameters_cell_names_exactly_its_section(name):
    cls = P.section_class(name)
    cell = notebook_parameters(read_notebook(STAGES[name], ROOT))
    own = set(cell) - set(PATH_KEYS) - set(P.notebook_only(name))
    assert own == set(cls.keys())
    for key in P.notebook_only(name):
        assert key in cell, f"{name}: documented notebook-only {key} is not in the notebook"
    # the dataclass's defaults are the notebook's smoke-size defaults
    defaults = cls()
    for key in cls.keys():
        assert getattr(defaults, key) == cell[key], (name, key)
    for key in set(cell) & set(PATH_KEYS):
        assert getattr(defaults.paths, key) == cell[key], (name, key)
    # the same section built from the notebook's variables, as its first cell does
    built = P.notebook_section(name, dict(cell))
    assert built == defaults


def test_dvc_params_name_the_shared_paths_each_notebook_declares():
    for dvc_file in DVC_FILES:
        for stage in yaml.safe_load((ROOT / dvc_file).read_text())["stages"].values():
            notebook, section = re.search(r"pipeline run (\S+) (\S+)", stage["cmd"]).groups()
            cell = notebook_parameters(read_notebook(notebook, ROOT))
            declared = {p.split(".", 1)[1] for p in stage["params"] if p.startswith("paths.")}
            assert declared == set(cell) & set(PATH_KEYS), notebook


def _write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "name, edit, message",
    [
        ("finetune", lambda p: p["finetune"].update(epoch=3), r"unknown keys \['epoch'\]"),
        ("finetune", lambda p: p["finetune"].pop("n_folds"), r"missing keys \['n_folds'\]"),
        ("finetune", lambda p: p["finetune"].update(epochs="10"), r"epochs = '10' is not int"),
        ("finetune", lambda p: p["finetune"].update(epochs=True), r"epochs = True is not int"),
        ("finetune", lambda p: p["finetune"].update(lr=None), r"lr = None is not float"),
        ("finetune", lambda p: p["finetune"].update(windows=[60, "x"]), r"windows = \[60, 'x'\]"),
        ("finetune", lambda p: p["finetune"].update(replay_weight=-0.1), r"replay_weight = -0.1"),
        (
            "finetune",
            lambda p: p["finetune"].update(replay_weight=float("nan")),
            "replay_weight = nan",
        ),
        ("finetune", lambda p: p["finetune"].update(replay_batch=0), r"replay_batch = 0 must be"),
        (
            "finetune",
            lambda p: p["finetune"].update(derived_per_stock=-1),
            r"derived_per_stock = -1 must be",
        ),
        ("compress", lambda p: p["compress"].update(fold_start=1991), r"fold_start = 1991"),
        (
            "compress",
            lambda p: p["compress"].update(finetune_experts=["sp500", "sp500"]),
            "finetune_experts = .* repeats a family",
        ),
        (
            "compress",
            lambda p: p["compress"].update(gate_mixing="hard"),
            "finetune_experts needs gate_mixing = 'soft'",
        ),
        (
            "compress",
            lambda p: p["compress"].update(gaussian_move_share=1.5),
            r"gaussian_move_share = 1.5 must be in \[0, 1\]",
        ),
        (
            "compress",
            lambda p: p["compress"].update(gaussian_move_se=0.0),
            "gaussian_move_se must be > 0",
        ),
        (
            "data_prep",
            lambda p: p["data_prep"]["family_weights"].update(factor="1"),
            "family_weights = ",
        ),
        ("finetune", lambda p: p["finetune"].update(models_dir="m"), r"\['models_dir'\] set here"),
    ],
)
def test_load_section_refuses_a_bad_section(tmp_path, name, edit, message):
    params = _yaml()
    edit(params)
    path = _write(tmp_path, params)
    with pytest.raises(ValueError, match=f"params section '{name}': {message}") as err:
        P.load_section(name, path)
    assert str(err.value).startswith(f"{path}: ")  # the message names the file


def test_load_section_refuses_bad_shared_paths_and_a_missing_section(tmp_path):
    params = _yaml()
    params["paths"].pop("models_dir")
    with pytest.raises(ValueError, match=r"section 'paths': missing keys \['models_dir'\]"):
        P.load_section("finetune", _write(tmp_path, params))
    params = _yaml()
    params.pop("finetune")
    with pytest.raises(ValueError, match="no section 'finetune'"):
        P.load_section("finetune", _write(tmp_path, params))


def test_load_section_accepts_an_integer_for_a_float_and_keeps_it(tmp_path):
    params = _yaml()
    params["finetune"]["lr"] = 1
    section = P.load_section("finetune", _write(tmp_path, params))
    assert section.lr == 1 and isinstance(section.lr, int)


def test_unknown_section_name_and_a_non_mapping_section(tmp_path):
    with pytest.raises(ValueError, match="unknown params section 'pretrian'"):
        P.load_section("pretrian", PARAMS)
    params = _yaml()
    params["peer"] = [1, 2]
    with pytest.raises(ValueError, match="section 'peer' is not a mapping"):
        P.load_section("pretrain", _write(tmp_path, params))


def test_notebook_section_checks_the_notebook_variables():
    ns = {
        k: getattr(P.section_class("finetune")(), k) for k in P.section_class("finetune").keys()
    } | {"models_dir": "m"}
    assert P.notebook_section("finetune", ns).paths.models_dir == "m"
    with pytest.raises(ValueError, match=r"'finetune': n_folds = 2.5 is not int"):
        P.notebook_section("finetune", {**ns, "n_folds": 2.5})
    with pytest.raises(ValueError, match=r"'finetune': the notebook does not define \['lr'\]"):
        P.notebook_section("finetune", {k: v for k, v in ns.items() if k != "lr"})
    with pytest.raises(ValueError, match=r"'paths': models_dir = 3 is not str"):
        P.notebook_section("finetune", {**ns, "models_dir": 3})


def test_sections_are_frozen():
    section = P.section_class("finetune")()
    with pytest.raises(dataclasses.FrozenInstanceError):
        section.lr = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    "value, hint, ok",
    [
        (1, float, True),
        (1.5, int, False),
        (True, float, False),
        ((1, 2), list[int], True),
        ([1, None], list[int], False),
        ({"a": [1]}, dict[str, list[int]], True),
        ({1: 1.0}, dict[str, float], False),
        (None, int | None, True),
        ("x", int | None, False),
    ],
)
def test_check_value(value, hint, ok):
    assert P.check_value(value, hint) is ok


# A knob keeps its name from params.yaml to the code that uses it. The one exception:
# the sections' `attention` is the network's `use_attention` (renaming the network's
# argument would change the configuration stored in every saved model).
SECTION_TO_NETWORK = {"attention": "use_attention"}


def test_one_name_per_knob():
    train = {f.name for f in dataclasses.fields(TrainConfig)}
    network = set(inspect.signature(MLShrinkageNetwork).parameters)
    for key in P.section_class("pretrain").keys():
        assert key in train or SECTION_TO_NETWORK.get(key, key) in network, key
    assert set(P.section_class("peer").keys()) <= {f.name for f in dataclasses.fields(PeerConfig)}
    synthetic = {f.name for f in dataclasses.fields(SyntheticConfig)}
    for section in (
        P.section_class("data_prep"),
        P.section_class("selection_grid"),
        P.section_class("holdout"),
    ):  # the world generator's knobs
        assert {"p_max", "batch_size"} <= synthetic & set(section.keys())
    assert {"ratio_max", "family_weights"} <= synthetic & set(P.section_class("data_prep").keys())
