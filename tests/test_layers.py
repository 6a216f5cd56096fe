"""The package's layers point one way: every import of a ctxscale module, at module level or inside
a function, goes to a module of its own layer or one below, never up, and no modules import
each other in a ring. Read from the source with `ast`, so a lazy import cannot hide a cycle.

    cli            the command line (and the spec reference it documents)
    sweep, search  Ray Tune: runner, adapters, progress, leases; the adaptive search (its Searcher)
    experiments    what each experiment lists, runs and stores (Ray-free)
    train, measure the loops and measurements (Ray-free)
    data, models   data sets, corpora; torch models
    spec           the typed sweep specs and their grid points
    store          the results store, beside the stack: it imports only the base
    base           errors, files, provenance, device, identity (ids and hashes), tables
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ctxscale"

LAYERS = [
    {"errors", "files", "provenance", "device", "identity", "tables"},
    {"store"},
    {"spec"},
    {"data", "models"},
    {"train", "measure"},
    {"experiments"},
    {"sweep", "search"},
    {"cli", "spec_reference", "__init__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ctxscale modules `name` imports anywhere in its source (a package for `from pkg import x`
    when x is not a module of its own)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found |= {f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target for alias in node.names}
    return {module for module in found if module in known and module != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANK["__init__"] if len(parts) == 1 else RANK[parts[1]]


def test_every_module_has_a_layer():
    assert {name.split(".")[1] for name in _graph() if "." in name} <= set(RANK)


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{name} -> {target}" for name, targets in _graph().items() for target in targets
                    if _rank(target) > _rank(name))
    assert not upward, "imports up the stack:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [module, target]) if target in path
                              else f"{module} -> {target}")
            elif target not in state:
                visit(target, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_walk_sees_the_imports():
    # guards against a walk that finds nothing (and so passes for nothing)
    graph = _graph()
    assert "ctxscale.spec.point" in graph["ctxscale.experiments.grid"]
    assert "ctxscale.store" in graph["ctxscale.sweep.runner"] and sum(map(len, graph.values())) > 100
