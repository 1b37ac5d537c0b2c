"""The import direction of ``src/robaudit``, from an AST walk of every module (imports inside functions included):
each package imports only its own layer's lower neighbours, and the package graph has no cycle. The layers, lowest
first, as ARCHITECTURE.md draws them:

    ground (robaudit/*.py) < data < training < models < attacks, purifiers < reporting < engine < distill < api < cli

``python tests/test_layers.py`` prints the arrows between packages."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "robaudit"
LAYERS = [
    ("ground",),
    ("data",),
    ("training",),
    ("models",),
    ("attacks", "purifiers"),
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


def test_the_package_graph_has_no_cycle():
    graph = defaultdict(set)
    for source, target in arrows():
        graph[source].add(target)
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


if __name__ == "__main__":
    for (source, target), uses in sorted(arrows().items(), key=lambda item: (-RANK[item[0][0]], item[0][1])):
        print(f"{source:10s} -> {target:10s} ({len(uses)} imports)")
