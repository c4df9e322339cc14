"""The package's import graph, read statically (ast; nothing is imported): no cycles, and no package
imports a package above it. Every import counts, the ones inside functions and under ``TYPE_CHECKING``
too: a lazy import that closes a circle still hides which module is the lower layer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "o1code"
#: Lowest first: a package may import those before it, never those after it.
LAYERS = ("data", "sandboxes", "models", "rewards", "envs", "agents", "training", "integrations", "distributed",
          "pipeline", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported o1code module: line}}``; ``from PKG import NAME`` counts as importing
    ``PKG.NAME`` when that is a module, else ``PKG``."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:  # ``import o1code.x.y`` of a name: its module
                    t = t.rpartition(".")[0]
                if t.startswith("o1code") and t != name:
                    edges.setdefault(t, node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    inside = set(component)
    return "; ".join(f"{m} -> {t} (line {line})" for m in component for t, line in graph[m].items() if t in inside)


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (cut each so that one side only imports the other):\n" + "\n".join(
        _describe(graph, c) for c in found)


def test_no_upward_imports():
    def layer(module: str) -> int | None:
        parts = module.split(".")
        return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None

    bad = []
    for module, edges in import_graph().items():
        here = layer(module)
        for target, line in edges.items():
            there = layer(target)
            if here is not None and there is not None and there > here:
                bad.append(f"{module} (line {line}) imports {target}")
    assert not bad, f"upward imports (layers, lowest first: {' < '.join(LAYERS)}):\n" + "\n".join(bad)


def test_the_walker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The checks are only as good as the graph: a function-level relative import closing a circle is found."""
    pkg = tmp_path / "o1code"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("from .b import thing\n")
    (pkg / "low" / "b.py").write_text("def thing():\n    from o1code.low.a import x\n    from . import c\n")
    (pkg / "low" / "c.py").write_text("import o1code.low.a\n")
    monkeypatch.setitem(globals(), "ROOT", pkg)
    graph = import_graph()
    assert graph["o1code.low.b"] == {"o1code.low.a": 2, "o1code.low.c": 3}
    assert cycles(graph) == [["o1code.low.a", "o1code.low.b", "o1code.low.c"]]
