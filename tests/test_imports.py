"""Every module of structgen imports, and the module-level import graph has no cycle.

The graph is read from the source (ast), not from what Python happens to have loaded: an edge A -> B is an import of
B that runs when A is imported (module level, class bodies, module-level if/try blocks). Imports inside functions
are deliberate lazy imports and do not count; neither do imports under `if TYPE_CHECKING:`, which never run.
Importing a package's submodule also runs the package's __init__, but that is no edge: the parent is always
already being imported when its child runs, so it cannot close a cycle by itself.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import structgen

ROOT = "structgen"


def _modules(package) -> dict[str, Path]:
    """name -> source file of the package and every module under it."""
    found = {package.__name__: Path(package.__file__)}
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        spec = info.module_finder.find_spec(info.name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            found[info.name] = Path(spec.origin)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _top_level_imports(tree: ast.Module):
    """The Import/ImportFrom nodes that run when the module is imported."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs only when called: a lazy import
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the TYPE_CHECKING body never runs
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (before its imported names are looked at)."""
    if node.level == 0:
        return node.module or ""
    base = name.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the structgen modules its module-level code imports."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(name, is_package, node)
                # `from pkg import sub` imports the submodule pkg.sub; `from pkg import obj` only pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                # `import a.b.c` names a.b.c; fall back to the closest enclosing module that exists
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in component)


MODULES = _modules(structgen)


def test_the_walk_sees_the_whole_package():
    for name in (f"{ROOT}.fsm.api", f"{ROOT}.fsm.cursor", f"{ROOT}.kernels.dispatch", f"{ROOT}.engine.model"):
        assert name in MODULES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_cycles():
    graph = import_graph(MODULES)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (module -> its imports inside the cycle):\n" + "\n".join(
        _describe(graph, c) for c in cycles)


def test_the_cycle_finder_sees_a_cycle_and_ignores_lazy_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .c import thing\n")
    (pkg / "c.py").write_text("import cyc.a\nthing = 1\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import e\n"
                              "def f():\n    from . import e\n")
    (pkg / "e.py").write_text("from .d import f\n")
    modules = {"cyc": pkg / "__init__.py", **{f"cyc.{m}": pkg / f"{m}.py" for m in "abcde"}}
    graph = import_graph(modules)
    assert graph["cyc.a"] == {"cyc.b"} and graph["cyc.b"] == {"cyc.c"} and graph["cyc.c"] == {"cyc.a"}
    assert graph["cyc.d"] == set() and graph["cyc.e"] == {"cyc.d"}
    assert find_cycles(graph) == [["cyc.a", "cyc.b", "cyc.c"]]


def test_the_cursor_needs_nothing_of_the_compile_api():
    # not even under TYPE_CHECKING: a Cursor reads its constraint through the CursorSource protocol
    tree = ast.parse(MODULES[f"{ROOT}.fsm.cursor"].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module not in ("api", f"{ROOT}.fsm.api") and not (
                node.level and node.module is None and any(a.name == "api" for a in node.names))
