"""A static drawing of the imports inside ``src/leod``, shared by the dependency and layout tests.

Every import statement is read from the AST (also imports inside functions; imports under
``if TYPE_CHECKING:`` do not run and are skipped), relative imports and packages resolved,
so nothing is imported to draw it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    """``src/.../name.py`` or the package's ``__init__.py`` of a dotted leod module name."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    """The dotted name of a file under ``src`` (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return parts if parts[-1] == "__init__" and parts.pop() is not None else parts[:-1]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def import_statements(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` per import that runs: ``import a.b`` gives ``("a.b", [])``,
    ``from a import b, c`` gives ``("a", ["b", "c"])`` (relative imports made absolute)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)[: len(_package_of(path)) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.append((base, [alias.name for alias in node.names]))
    return found


def _leod(name: str) -> bool:
    return (name == "leod" or name.startswith("leod.")) and module_file(name) is not None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the leod modules a file imports (a name imported from a package
    counts as a module when it is one)."""
    names: set[str] = set()
    for base, imported in import_statements(path):
        names.add(base)
        names.update(f"{base}.{name}" for name in imported)
    return {n for n in names if _leod(n)}


def import_closure(script: Path) -> set[str]:
    """Repository-relative paths of every leod file that running ``script`` imports."""
    files: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            # importing leod.a.b runs leod/__init__.py and leod/a/__init__.py first
            for k in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:k]))
                if found is not None and found not in files:
                    files.add(found)
                    todo.append(found)
    return {p.relative_to(REPO).as_posix() for p in files}


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:k]) for k in range(1, len(parts))}


def module_graph() -> dict[str, set[str]]:
    """Every leod module -> the leod modules whose code its imports run.

    A package that contains the importing module is already being imported when the
    import runs, so it is an edge only where a name is taken from it (``from leod.events
    import open_recording`` inside ``leod.events.dat`` needs ``__init__`` finished, a real
    cycle); ``from . import sibling`` needs only the sibling.
    """
    graph: dict[str, set[str]] = {}
    for path in sorted((SRC / "leod").rglob("*.py")):
        name = module_name(path)
        inside = _ancestors(name) | {name}
        targets: set[str] = set()
        for base, imported in import_statements(path):
            submodules = [f"{base}.{n}" for n in imported if _leod(f"{base}.{n}")]
            targets.update(submodules)
            if base not in inside or len(submodules) < len(imported) or not imported:
                targets.add(base)
        edges = {m for t in targets if _leod(t) for m in ({t} | _ancestors(t)) - inside if _leod(m)}
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None
