"""Every DVC stage depends on every ``shrinklab`` module its notebook runs.

A stage whose notebook imports a module (directly or through other modules, lazy
imports inside functions included) but does not list it in ``dvc.yaml`` would not
rerun when that module changes, and ``dvc.lock`` would no longer describe the code
that produced the committed reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shrinklab.pipeline.deps import (
    RUNNER,
    loaded_model_modules,
    module_closure,
    stage_code_deps,
    stage_deps,
)

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# the studies kept out of `make repro` (`make studies`) follow the same rule
STUDIES = yaml.safe_load((ROOT / "studies" / "dvc.yaml").read_text())["stages"]
STAGES = {**PIPELINE, **STUDIES}


def _notebook_of(cmd: str) -> str | None:
    m = re.search(r"pipeline run (\S+)", cmd)
    return m.group(1) if m else None


def test_closure_follows_imports(tmp_path):
    """The closure of a one-line import reaches modules two imports away."""
    closure = module_closure("from shrinklab.sklearn import MLShrinkageCovariance\n")
    assert "shrinklab/sklearn.py" in closure
    assert "shrinklab/core/features.py" in closure  # imported by sklearn
    assert "shrinklab/__init__.py" in closure


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_every_module_it_runs(stage):
    spec = STAGES[stage]
    nb = _notebook_of(spec["cmd"])
    assert nb is not None, f"stage {stage} does not run a notebook"
    source = (ROOT / "notebooks" / f"{nb}.py").read_text()
    # the command line that runs the notebook (its stage runner and index writer)
    needed = module_closure(source) | module_closure(RUNNER)
    assert "shrinklab/pipeline/runner.py" in needed
    deps = [Path(d) for d in spec.get("deps", [])]
    # a directory dependency covers every file below it
    missing = sorted(n for n in needed if not any(Path(n).is_relative_to(d) for d in deps))
    assert not missing, f"dvc.yaml stage {stage!r} lacks deps {missing}"


def test_studies_are_separate_and_run_in_the_repository_root():
    """`dvc repro dvc.yaml` (make repro) never runs a study; a study's paths are the root's."""
    assert not set(PIPELINE) & set(STUDIES)
    assert all(spec.get("wdir") == ".." for spec in STUDIES.values())


def test_lazy_exports_count_only_where_used():
    """`import shrinklab` does not run shrinklab.sklearn; `from shrinklab import
    MLShrinkageCovariance` does."""
    assert "shrinklab/sklearn.py" not in module_closure("from shrinklab.core import targets\n")
    assert "shrinklab/sklearn.py" in module_closure("from shrinklab import MLShrinkageCovariance\n")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_lists_exactly_the_modules_it_runs(stage):
    """No stage reruns for a module it never imports (`python -m shrinklab.pipeline deps`
    rewrites the lists)."""
    listed = [d for d in STAGES[stage]["deps"] if d.startswith("shrinklab/")]
    assert listed == stage_deps(stage, STAGES)


def test_a_stage_that_loads_a_model_file_depends_on_its_kinds_module():
    """load_model imports a file's class by its kind's name: the selection grid loads
    final.pt (kind domain_switch) and the evaluation the peer's file (rie_network) without
    importing their modules; both list them, through the stages that write the files."""
    notebook_only = stage_code_deps(STAGES["selection_grid"]["cmd"])
    assert "shrinklab/models/switched.py" not in notebook_only
    assert "shrinklab/models/switched.py" in loaded_model_modules("selection_grid", STAGES)
    assert "shrinklab/models/rie_network.py" in loaded_model_modules("evaluate", STAGES)
    # a stage that loads nothing another stage wrote gains nothing
    assert loaded_model_modules("data_prep", STAGES) == set()
    # only the writers' model modules and what they import
    writer = set(stage_code_deps(STAGES["peer"]["cmd"], params=STAGES["peer"].get("params", [])))
    assert "shrinklab/models/rie_network.py" in writer


def _section_of(cmd: str) -> str:
    return re.search(r"pipeline run \S+ (\S+)", cmd).group(1)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_the_sections_it_reads_only(stage):
    """A stage depends on its own section's module (the runner loads it by name, which
    no import shows) and not on the module of a section it never reads: a new key in the
    `finetune` section reruns the finetune stage, not the studies."""
    spec = STAGES[stage]
    listed = {d for d in spec["deps"] if d.startswith("shrinklab/core/params/")}
    assert f"shrinklab/core/params/{_section_of(spec['cmd'])}.py" in listed
    assert "shrinklab/core/params/__init__.py" in listed
    # compress types the recipe recorded in finetuned.pt with the section's dataclass, to
    # fine-tune the experts the same way (decision 0045); it already depends on finetuned.pt
    if stage not in ("finetune", "compress"):
        assert "shrinklab/core/params/finetune.py" not in listed


def test_named_sections_finds_literal_section_loads():
    from shrinklab.pipeline.deps import named_sections

    source = (
        "from shrinklab.core import params\n"
        "a = notebook_section('pretrain', globals())\n"
        "b = params.load_section('evaluate', path)\n"
        "c = load_section(name)\n"  # not a literal: the caller's business
    )
    assert named_sections(source) == {"pretrain", "evaluate"}


def test_data_stage_does_not_depend_on_training_or_the_estimator():
    listed = STAGES["data_prep"]["deps"]
    assert not [
        d for d in listed if d.startswith(("shrinklab/training", "shrinklab/models/network"))
    ]
    assert "shrinklab/sklearn.py" not in listed


def test_rewriting_the_deps_touches_nothing_else(tmp_path):
    """`pipeline deps` on a dvc.yaml whose stage outs live under shrinklab/ keeps them."""
    import shutil

    from shrinklab.pipeline.deps import write_stage_deps

    for sub in ("shrinklab", "notebooks"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    write_stage_deps(tmp_path)
    assert (tmp_path / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()
    assert "shrinklab/weights/final.pt" in [
        next(iter(o)) if isinstance(o, dict) else o for o in STAGES["evaluate"]["outs"]
    ]
