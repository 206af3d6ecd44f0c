"""No import cycle among xlt's modules.

The graph has an edge A -> B for every ``import xlt...`` / ``from xlt... import ...`` statement in
module A, at module level or inside a function (a function-level import that runs back up is still a
circle, only a lazier one); imports under ``if TYPE_CHECKING:`` never run and are left out.
``from P import name`` points at the submodule ``P.name`` when there is one, else at ``P`` itself;
importing ``P.name`` also runs the ``__init__`` of ``P`` (and of its parents), so those are edges too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xlt"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (a package's name is its ``__init__``'s)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _packages_run_first(target: str, importer: str, modules: dict[str, Path]) -> Iterator[str]:
    """The packages whose ``__init__`` an import of ``target`` runs first (``import a.b.c`` runs
    ``a`` and ``a.b``), except the importer's own packages, already being initialised when it runs."""
    parts = target.split(".")
    for i in range(1, len(parts)):
        package = ".".join(parts[:i])
        if package in modules and package != importer and not importer.startswith(package + "."):
            yield package


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the xlt modules its import statements name."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join([*package, base] if base else package)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # `import xlt.a.b.Name`-style: the module part
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == root.name and target != name:
                    graph[name].add(target)
                    graph[name].update(_packages_run_first(target, name, modules))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles one after another, each time removing the edge that closed the last one (every circle
    shows up at least once)."""
    graph = {k: set(v) for k, v in graph.items()}
    cycles = []
    while (cycle := find_cycle(graph)) is not None:
        cycles.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return cycles


def test_no_import_cycle() -> None:
    cycles = all_cycles(import_graph())
    if cycles:
        pytest.fail(
            f"{len(cycles)} import cycle(s) among xlt's modules:\n"
            + "\n".join(" -> ".join(c) for c in cycles),
            pytrace=False,
        )


def test_the_check_sees_cycles(tmp_path: Path) -> None:
    """The graph sees module-level, function-level and relative imports, and skips TYPE_CHECKING ones."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b  # plugin loaded by its package\n")
    (pkg / "a.py").write_text("from pkg.sub.b import thing\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert graph["pkg.a"] == {"pkg.sub.b", "pkg.sub"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set()
    (pkg / "d.py").write_text("import pkg.sub.b\n")  # runs pkg/sub/__init__.py first
    assert import_graph(pkg)["pkg.d"] == {"pkg.sub.b", "pkg.sub"}
    (pkg / "d.py").unlink()
    assert all_cycles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.a"]]
    (pkg / "sub" / "b.py").write_text("thing = 1\n")
    assert all_cycles(import_graph(pkg)) == []


# The run's orchestration and command lines: the only modules that validate a config.
VALIDATORS = {"xlt.train", "xlt.orchestration.run", "xlt.evaluate", "xlt.export", "xlt.audit", "xlt.plan.cli"}


def test_validation_is_imported_only_from_above() -> None:
    """xlt.config imports what it checks with (tasks, the model tables, the planner); nothing it
    checks with, nor any other layer, imports it back (issue 26: validation depended upward, hence
    26 re-exported names). Every layer reads the shared names from xlt.schema."""
    import xlt.config

    importers = {name for name, targets in import_graph().items() if "xlt.config" in targets}
    assert importers <= VALIDATORS, (
        f"modules below the orchestration import xlt.config: {importers - VALIDATORS}"
    )
    assert not hasattr(xlt.config, "__all__")
    for name in ("MemberConfig", "StageConfig", "CONF_DIR", "LoraConfig", "SEQ_LENGTH_NEEDS", "to_container"):
        assert not hasattr(xlt.config, name), f"xlt.config re-exports {name}"


def test_the_mixtures_module_reaches_no_task_family() -> None:
    """xlt.tasks.mixtures registers mixtures of tasks the package ``__init__`` registered first: it
    imports the registry and the spec only, not the task families through the package (issue 26)."""
    assert import_graph()["xlt.tasks.mixtures"] <= {
        "xlt.tasks.registry",
        "xlt.tasks.spec",
        "xlt.registry",
        "xlt",
    }
    assert not (PACKAGE / "bucc.py").exists() and (PACKAGE / "evaluation" / "bucc.py").exists()
