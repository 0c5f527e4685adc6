"""The layers point one way and no module imports itself back (imports inside functions and
under TYPE_CHECKING count too): core <- stream, feature_repo <- models <- api <- cli."""

import ast
from pathlib import Path

from core.settings import ROOT

RANK = {"core": 0, "stream": 1, "feature_repo": 1, "models": 2, "api": 3, "cli": 4}


def _imports() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {}
    for package in RANK:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            targets = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    targets.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    targets.add(node.module)
                    targets.update(f"{node.module}.{a.name}" for a in node.names)
            graph[name] = targets
    modules = set(graph)
    return {m: {t for t in ts if t in modules and t != m} for m, ts in graph.items()}


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{m} -> {t}"
        for m, targets in _imports().items()
        for t in targets
        if RANK[t.split(".")[0]] > RANK[m.split(".")[0]]
        or (t.startswith("feature_repo") and not m.startswith("feature_repo"))
    ]
    assert upward == []


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_layer_table_names_every_package():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"tests", "bench"} <= set(RANK), packages
    assert Path(ROOT / "feature_repo").is_dir()
