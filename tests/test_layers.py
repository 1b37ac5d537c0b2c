"""The import direction of ``src/robaudit``, from an AST walk of every module (imports inside functions included):
each package imports only its own layer's lower neighbours, and the package graph has no cycle. The layers, lowest
first, as ARCHITECTURE.md draws them:

    ground (robaudit/*.py) < rng, components, runs < headline < data < training < models < attacks, purifiers
    < certify < reporting < engine < distill < api < cli

``python tests/test_layers.py`` prints the arrows between packages."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "robaudit"
LAYERS = [
    ("ground",),
    ("rng", "components", "runs"),  # random streams, component discovery, run storage
    ("headline",),  # the headline check: reads records, draws its subset from seeded streams
    ("data",),
    ("training",),
    ("models",),
    ("attacks", "purifiers"),
    ("certify",),
    ("reporting",),
    ("engine",),
    ("distill",),
    ("api",),
    ("cli",),
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
ENTRY_POINTS = {"robaudit.__main__"}  # ``python -m robaudit`` runs the CLI: the top, outside the layers
BOUNDARY = {"robaudit", "robaudit.api"}  # ``robaudit.audit()``: the library's entry point, a layer of its own


def package_of(module: str) -> str:
    """``robaudit.engine.plan`` -> ``engine``; the entry point (``robaudit``, ``robaudit.api``) -> ``api``; another
    top-level module (``robaudit.config``) -> ``ground``."""
    if module in BOUNDARY:
        return "api"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (SRC / parts[1]).is_dir() else "ground"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported robaudit module, line) for every import statement of the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, node.lineno)]
    return [(name, line) for name, line in found if name == "robaudit" or name.startswith("robaudit.")]


def arrows() -> dict[tuple[str, str], list[str]]:
    """(from package, to package) -> the imports that make the arrow ("file:line -> module")."""
    graph: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        if module in ENTRY_POINTS:
            continue
        source = package_of(module)
        for imported, line in imports_of(path):
            target = package_of(imported)
            if target != source:
                graph[(source, target)].append(f"{path.relative_to(SRC)}:{line} -> {imported}")
    return dict(graph)


def test_every_package_has_a_layer():
    packages = {package_of(module_name(p)) for p in SRC.rglob("*.py")}
    assert packages <= set(RANK), (
        f"packages without a layer (add them to LAYERS and ARCHITECTURE.md): {packages - set(RANK)}"
    )


def test_no_import_points_up_or_sideways():
    wrong = {
        f"{source} -> {target}": uses for (source, target), uses in arrows().items() if RANK[target] >= RANK[source]
    }
    assert not wrong, f"imports against the layers: {wrong}"


def first_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """The first cycle of ``graph`` (node -> nodes it points to) in a sorted depth-first walk, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path, node, nxt]
            found = None if nxt in state else visit(nxt, [*path, node])
            if found:
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        found = None if node in state else visit(node, [])
        if found:
            return found
    return None


def test_the_package_graph_has_no_cycle():
    graph = defaultdict(set)
    for source, target in arrows():
        graph[source].add(target)
    cycle = first_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def module_arrows() -> dict[str, set[str]]:
    """module -> the modules of its own package it imports (``from robaudit.purifiers import X`` is the package's
    ``__init__``), at any depth: imports inside functions make cycles too, only hidden."""
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for imported, _ in imports_of(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]  # from a.b import name: the module a.b
            if imported and imported != module and package_of(imported) == package_of(module):
                graph[module].add(imported)
    return graph


def test_no_package_has_a_cycle_inside():
    cycle = first_cycle(module_arrows())
    assert cycle is None, f"import cycle inside a package: {' -> '.join(cycle)}"


def test_every_robaudit_name_the_benches_import_exists():
    """``bench/`` runs outside the test suite's imports: a moved module or a renamed function must not strand it."""
    for path in sorted((SRC.parents[1] / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robaudit")):
                continue
            where = SRC.parent.joinpath(*node.module.split("."))
            target = where / "__init__.py" if where.is_dir() else where.with_suffix(".py")
            assert target.is_file(), f"{path.name}:{node.lineno} imports {node.module}, which does not exist"
            known = defined_names(target) | {sub.stem for sub in where.glob("*.py")}
            for alias in node.names:
                assert alias.name in known, f"{path.name}:{node.lineno}: {node.module} has no {alias.name}"


def defined_names(path: Path) -> set[str]:
    """Names a module defines or imports at its top level, and those it exports lazily (an ``EXPORTS`` mapping of
    name -> module, read by the module's ``__getattr__``)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
            if any(isinstance(t, ast.Name) and t.id == "EXPORTS" for t in targets):  # names loaded on first use
                names |= set(ast.literal_eval(node.value))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


if __name__ == "__main__":
    for (source, target), uses in sorted(arrows().items(), key=lambda item: (-RANK[item[0][0]], item[0][1])):
        print(f"{source:10s} -> {target:10s} ({len(uses)} imports)")
    inside = module_arrows()
    for name, check in (
        ("packages", test_the_package_graph_has_no_cycle),
        ("inside", test_no_package_has_a_cycle_inside),
    ):
        try:
            check()
            verdict = "no cycle"
        except AssertionError as error:
            verdict = str(error).splitlines()[0]
        print(f"{name}: {verdict}" + (f" ({sum(len(v) for v in inside.values())} arrows)" if name == "inside" else ""))
