"""The shape of the code: no import cycle inside src/leod, no module over 450 lines, short
module docstrings, and a params loader that stays cheap (importing it loads no torch, h5py,
numba or matplotlib)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from import_graph import REPO, SRC, find_cycle, module_graph

MAX_LINES = 450
MAX_DOC_LINES = 8  # a module docstring says what and why; details go beside the code
HEAVY = ("torch", "h5py", "numba", "matplotlib")


def test_import_graph_has_no_cycle() -> None:
    graph = module_graph()
    assert "leod.data.config" in graph["leod.config"]  # the drawing is not empty
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in src/leod: " + " -> ".join(cycle or [])


def test_find_cycle_reports_the_path() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_a_function_level_import_still_draws_an_edge() -> None:
    """The cycle check sees imports inside functions too (they close a cycle at run time)."""
    graph = module_graph()
    assert "leod.plumbing.compare" in graph["leod.plumbing.cli"]


def test_no_module_is_longer_than_450_lines() -> None:
    long = {
        p.relative_to(REPO).as_posix(): n
        for p in sorted((SRC / "leod").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"


def module_doc_lines(source: str) -> int:
    """Lines of a module's docstring (0 without one), blank lines inside it included."""
    doc = ast.get_docstring(ast.parse(source), clean=False)
    return len(doc.strip().splitlines()) if doc else 0


def test_module_doc_lines_counts_the_docstring() -> None:
    assert module_doc_lines("x = 1\n") == 0
    assert module_doc_lines('"""One line."""\n') == 1
    assert module_doc_lines('"""Title.\n\nMore\nand more.\n"""\nimport os\n') == 4


_MODULES = sorted((SRC / "leod").rglob("*.py"))


@pytest.mark.parametrize(
    "path",
    _MODULES,
    ids=[p.relative_to(SRC / "leod").as_posix() for p in _MODULES],
)
def test_module_docstring_is_short(path: Path) -> None:
    n = module_doc_lines(path.read_text())
    assert n <= MAX_DOC_LINES, (
        f"{path.relative_to(REPO)}: module docstring of {n} lines (at most {MAX_DOC_LINES}: what and "
        "why; move details to a comment or docstring at the code they describe)"
    )


def _modules_loaded_by(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code`` (in the repository root)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("code", ["import leod.config", "from leod.config import load_params\nload_params()"])
def test_loading_params_imports_no_heavy_library(code: str) -> None:
    assert [m for m in _modules_loaded_by(code) if m.split(".")[0] in HEAVY] == []


def test_synthesize_stage_imports_neither_torch_nor_the_model() -> None:
    """The synthesize script's imports (config, generator, event writers) stay cheap."""
    code = "import runpy\nrunpy.run_path('stages/synthesize.py', run_name='imported')"
    loaded = _modules_loaded_by(code)
    assert "leod.synthetic.generate" in loaded  # the script's imports did run
    heavy = [m for m in loaded if m.split(".")[0] in {"torch", "matplotlib"} or m.startswith("leod.model.")]
    assert heavy == ["leod.model.config"]
