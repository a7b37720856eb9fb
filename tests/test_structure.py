"""The rooms' import rules (docs/ARCHITECTURE.md): no import cycles, no reaching into another package's
private modules, and each room imports only the rooms its "may import" entry names.

Every import statement counts, at module level or inside a function, typing-only ones included: a lazy
import still ties the two modules together.
"""
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cvt", "search_spaces", "nas")
SCRIPTS = ("benchmarks", "scripts")
# Room -> the project rooms it may import (the table in docs/ARCHITECTURE.md).
MAY_IMPORT = {"cvt": set(), "search_spaces": {"cvt"}, "nas": {"cvt", "search_spaces", "nas"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (a ``from package import name`` counts the submodule if it is one)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _unit(module: str) -> str:
    """The level at which cycles are forbidden too: cvt, search_spaces, and each module or subpackage of nas."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "nas" and len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def _private_owner(module: str) -> str | None:
    """The package that owns ``module`` privately (``nas.search`` for ``nas.search._run``), or None."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _private_violations(importer: str, targets: set[str]) -> list[str]:
    bad = []
    for target in targets:
        owner = _private_owner(target)
        if owner is not None and not (importer == owner or importer.startswith(owner + ".")):
            bad.append(f"{importer} -> {target}")
    return bad


def test_no_import_cycles_between_modules():
    assert _cycles(GRAPH) == []


def test_no_import_cycles_between_rooms_and_nas_subpackages():
    units = defaultdict(set)
    for module, targets in GRAPH.items():
        units[_unit(module)].update(_unit(t) for t in targets if _unit(t) != _unit(module))
    assert _cycles(units) == []


def test_rooms_import_only_what_the_architecture_allows():
    bad = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
           if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in MAY_IMPORT[m.split(".")[0]]]
    assert bad == []


def test_no_private_module_is_imported_from_outside_its_package():
    bad = [v for m, targets in GRAPH.items() for v in _private_violations(m, targets)]
    for folder in SCRIPTS:  # scripts use the packages' public names only
        for path in (ROOT / folder).glob("*.py"):
            bad += _private_violations(f"{folder}.{path.stem}", _imports(f"{folder}.{path.stem}", path))
    assert bad == []


def test_the_checks_catch_what_they_look_for():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _private_violations("search_spaces._cvt", {"cvt._config", "cvt"}) == ["search_spaces._cvt -> cvt._config"]
    assert _private_violations("nas.proxy._config", {"nas._settings", "nas.proxy._setup"}) == []
    assert _unit("nas.search._run") == "nas.search" and _unit("cvt.cvt") == "cvt"
    assert GRAPH["nas.search._run"] >= {"nas.search._export", "nas.metrics"}
