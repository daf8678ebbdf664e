"""dvc.yaml lists, for every stage, the code that shapes its outputs: editing a module a stage
imports must rerun that stage.

Each stage script's import closure inside ``src/leod`` is computed statically (an AST walk
of every import, including imports inside functions, resolving packages and relative
imports; imports under ``if TYPE_CHECKING:`` do not run and are skipped: tests/import_graph.py)
and every module in it must be covered by a dep of that stage, a file or a folder above it;
conversely a code dep must name only modules in the closure (a folder only where the stage
imports the whole package), so editing code a stage never runs does not rerun it. Left out:
the plumbing (`src/leod/plumbing/`, :data:`PLUMBING`), which cannot change a result, and
package ``__init__.py`` files holding only a docstring and constants. Whatever modules exist
are checked, so a new module is covered by the rule the day it is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from import_graph import REPO, import_closure

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


def _modules_under(dep: str) -> set[str]:
    """The leod modules a code dep names (a file, or every module in a folder)."""
    path = REPO / dep
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    rels = {f.relative_to(REPO).as_posix() for f in files}
    return {m for m in rels if not _plumbing(m) and not _inert_init(m)}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_name_only_code_it_imports(stage: str) -> None:
    """The converse: a stale dep (code the script stopped importing) or a folder holding a
    module the stage never imports would rerun the stage for nothing."""
    spec = STAGES[stage]
    closure = import_closure(REPO / _script(spec["cmd"]))
    code = [str(d) for d in spec.get("deps", []) if str(d).startswith("src/") and (REPO / str(d)).exists()]
    extra = {d: sorted(_modules_under(d) - closure) for d in code}
    extra = {d: mods for d, mods in extra.items() if mods}
    assert not extra, f"dvc.yaml stage '{stage}' lists code its script does not import: {extra}"


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
