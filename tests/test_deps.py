"""dvc.yaml lists, for every stage, the code that shapes its outputs: editing a module a stage
imports must rerun that stage.

Each stage script's import closure inside ``src/leod`` is computed statically (an AST walk
of every import, including imports inside functions, resolving packages and relative
imports; imports under ``if TYPE_CHECKING:`` do not run and are skipped) and every module
in it must be covered by a dep of that stage, a file or a folder above it. Left out: the
plumbing (`src/leod/plumbing/`, :data:`PLUMBING`), which cannot change a result, and package ``__init__.py``
files holding only a docstring and constants. Whatever modules exist are checked, so a new
module is covered by the rule the day it is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

#: Modules that log, draw progress, parse arguments, word errors or write files atomically:
#: editing them must not invalidate hours of cached training (dvc.yaml's header says so).
PLUMBING_DIR = "src/leod/plumbing/"
PLUMBING = {"src/leod/__main__.py"}  # plus every module under PLUMBING_DIR


def _plumbing(module: str) -> bool:
    return module in PLUMBING or module.startswith(PLUMBING_DIR)


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def _script(cmd: str) -> str:
    words = cmd.split()
    return next(w for w in words if w.startswith("stages/") and w.endswith(".py"))


def _module_file(name: str) -> Path | None:
    """``src/.../name.py`` or the package's ``__init__.py`` of a dotted leod module name."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return parts if parts[-1] == "__init__" and parts.pop() is not None else parts[:-1]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the leod modules a file imports (a name imported from a package
    counts as a module when it is one)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)[: len(_package_of(path)) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if (n == "leod" or n.startswith("leod.")) and _module_file(n)}


def import_closure(script: Path) -> set[str]:
    """Repository-relative paths of every leod file that running ``script`` imports."""
    files: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            # importing leod.a.b runs leod/__init__.py and leod/a/__init__.py first
            for k in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:k]))
                if found is not None and found not in files:
                    files.add(found)
                    todo.append(found)
    return {p.relative_to(REPO).as_posix() for p in files}


def _inert_init(rel: str) -> bool:
    """A package ``__init__.py`` holding only a docstring and constant assignments."""
    if not rel.endswith("__init__.py"):
        return False
    tree = ast.parse((REPO / rel).read_text())
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            continue
        return False
    return True


def _covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


STAGES = _stages()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_its_import_closure(stage: str) -> None:
    spec = STAGES[stage]
    script = _script(spec["cmd"])
    deps = [str(d) for d in spec.get("deps", [])]
    assert script in deps, f"{stage}: its script {script} is not a dep"
    closure = import_closure(REPO / script)
    missing = sorted(m for m in closure if not _plumbing(m) and not _inert_init(m) and not _covered(m, deps))
    assert not missing, f"dvc.yaml stage '{stage}' runs code it does not list as deps: {missing}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_exist(stage: str) -> None:
    """A code dep that names nothing (a renamed module) would silently cover nothing."""
    deps = [str(d) for d in STAGES[stage].get("deps", [])]
    gone = [d for d in deps if d.startswith(("src/", "stages/")) and not (REPO / d).exists()]
    assert not gone, f"dvc.yaml stage '{stage}' lists code deps that do not exist: {gone}"


def test_plumbing_list_names_existing_modules() -> None:
    assert not [p for p in PLUMBING if not (REPO / p).is_file()]
    assert (REPO / PLUMBING_DIR / "tracking.py").is_file()


def test_closure_follows_packages_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The walk itself: train.py reaches the evaluator through the training loop, and the
    model's package modules through relative or function-level imports."""
    closure = import_closure(REPO / "stages" / "train.py")
    assert "src/leod/training/loop.py" in closure
    assert "src/leod/evaluation/prophesee.py" in closure
    assert "src/leod/pseudo/gate.py" in closure
    assert "src/leod/plumbing/tracking.py" in closure  # found, then excused as plumbing
