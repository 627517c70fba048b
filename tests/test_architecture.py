"""The house rules that a reader relies on: the library never imports its CLI, and no module imports itself back
through others (every import counted, the lazy ones inside functions too)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "inbetween"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its body (relative or absolute)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = list(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert (
        "inbetween.pipeline" in graph["inbetween.cli.interpolate"]
        or "inbetween.loading" in graph["inbetween.cli.interpolate"]
    )
    assert "inbetween.toyworld.science" in graph["inbetween.cli.toyworld"]  # imported inside `run_evaluate`


def test_the_library_never_imports_its_cli():
    graph = import_graph()
    offenders = {
        module: sorted(m for m in imports if m == "inbetween.cli" or m.startswith("inbetween.cli."))
        for module, imports in graph.items()
        if not module.startswith("inbetween.cli") and module != "inbetween.__main__"
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_no_import_cycles():
    graph = import_graph()
    # A package's __init__ re-exporting its children is not a cycle a reader trips over: drop parent -> child edges.
    edges = {m: {i for i in imports if not i.startswith(m + ".")} for m, imports in graph.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target] if target in path else [module, target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []
