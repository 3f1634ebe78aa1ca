"""The package's layers import downward only (see README "Layout").

    core < data < models < training < evaluation < studies < front doors

Checked statically on every module of ``shrinklab``: no import of a higher layer,
no import cycle between modules, no import of another module's private name, and no
``shrinklab`` import hidden inside a function (the way cycles used to be dodged).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "shrinklab"
LAYERS = ["core", "data", "models", "training", "evaluation", "studies"]
FRONT = {"sklearn", "pipeline", "cli", "__main__", "__init__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text()) for p in sorted(PKG.rglob("*.py"))}


def _rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)  # front doors sit on top


def _imports(tree: ast.Module) -> list[tuple[ast.AST, str, list[str]]]:
    """(node, imported module, imported names) for every shrinklab import."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "shrinklab":  # `from shrinklab import core` style
                for a in node.names:
                    out.append((node, f"shrinklab.{a.name}", []))
            elif node.module.startswith("shrinklab."):
                out.append((node, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node, a.name, []) for a in node.names if a.name.startswith("shrinklab.")]
    return out


MODULES = _modules()


def _resolve(target: str, names: list[str]) -> list[str]:
    """Modules an import statement depends on (`from shrinklab.core import targets`
    depends on shrinklab.core.targets)."""
    deps = [target]
    for n in names:
        if f"{target}.{n}" in MODULES:
            deps.append(f"{target}.{n}")
    return deps


def test_every_module_sits_in_a_known_layer():
    for name in MODULES:
        parts = name.split(".")
        assert len(parts) == 1 or parts[1] in LAYERS or parts[1] in FRONT, name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_downward(name):
    for _node, target, names in _imports(MODULES[name]):
        for dep in _resolve(target, names):
            assert _rank(dep) <= _rank(name), f"{name} imports higher layer {dep}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_across_modules(name):
    for _node, target, names in _imports(MODULES[name]):
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{name} imports private {private} from {target}"
    for node in ast.walk(MODULES[name]):  # module._private attribute access
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.value.id in _module_aliases(MODULES[name])
        ):
            raise AssertionError(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")


def _module_aliases(tree: ast.Module) -> set[str]:
    aliases = set()
    for node, target, _names in _imports(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if f"{target}.{a.name}" in MODULES or target == "shrinklab":
                    aliases.add(a.asname or a.name)
        else:
            aliases |= {a.asname or a.name.split(".")[0] for a in node.names}
    return aliases


LAZY_FRONT_DOORS = {"shrinklab", "shrinklab.cli"}
"""Front doors that import lazily on purpose: ``import shrinklab`` and
``python -m shrinklab --help`` stay cheap (no torch)."""


@pytest.mark.parametrize("name", sorted(set(MODULES) - LAZY_FRONT_DOORS))
def test_no_shrinklab_import_inside_functions(name):
    tree = MODULES[name]
    top = set(tree.body)
    for node, target, _ in _imports(tree):
        assert node in top, f"{name}:{node.lineno} imports {target} inside a function"


def test_no_import_cycles():
    graph = {
        name: {d for _, t, ns in _imports(tree) for d in _resolve(t, ns) if d in MODULES}
        for name, tree in MODULES.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if dep == node or dep.count(".") < 2 and dep != "shrinklab.sklearn":
                continue  # a package __init__ (no code) is not a dependency
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " → ".join([*path, node, dep]))
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_checks_catch_a_violation():
    """The layering rules fail on a module that breaks them (so they are not vacuous)."""
    bad = ast.parse(
        "from shrinklab.training.loop import train\n"
        "from shrinklab.core.metrics import _private\n"
        "def f():\n    from shrinklab.core import targets\n"
    )
    imports = _imports(bad)
    assert any(_rank(t) > _rank("shrinklab.core.x") for _, t, _ in imports)
    assert any(n.startswith("_") for _, _, ns in imports for n in ns)
    assert any(node not in set(bad.body) for node, _, _ in imports)
