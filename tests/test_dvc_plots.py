"""The ``dvc plots`` page: one chart per question, named axes, every run, offline rendering.

DVC itself fills the repository's templates (``.dvc/plots``) from sample CSVs in a scratch
copy of the repository's DVC files, with the page template the report stage writes.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import vl_convert

from leod.evaluation.confusion import confusion_matrix
from leod.plumbing.atomic import write_text
from leod.report.plots_page import PAGE_NAME, write_plots_page
from leod.report.rows import collect_rows
from leod.report.tables import rounds_csv

REPO = Path(__file__).resolve().parents[1]
RUNS = ["r0", "r1", "r2", "full"]
CONFUSION = "Test confusion matrices (detections with class confidence >= 0.3, matched at IoU 0.5)"
CHARTS = ["AP per round", "training loss", "validation AP", "pseudo-label precision vs recall", CONFUSION]


def sample_outputs(root: Path) -> None:
    """What the pipeline leaves in reports/ for r0, r1, r2 and full (r2's test metrics missing)."""
    metrics = root / "metrics"
    for i, run in enumerate(RUNS):
        if run != "r2":
            write_text(
                metrics / f"test_{run}.json", json.dumps({"AP": 0.2 + 0.05 * i, "AP50": 0.5 + 0.05 * i})
            )
        write_text(root / "reports" / run / "train.csv", "step,loss\n10,5.0\n20,4.0\n")
        write_text(root / "reports" / run / "val.csv", "step,val/AP\n10,0.1\n20,0.2\n")
        lines = ["background,car"] * 50 + ["car,car"] * 8 + ["car,background"] * 2 + ["ped,ped"] * 3
        write_text(root / "reports" / run / "confusion.csv", "actual,predicted\n" + "\n".join(lines) + "\n")
    for run in ("r1", "r2"):
        write_text(metrics / f"pseudo_{run}.json", json.dumps({"precision@0.5": 0.8, "recall@0.5": 0.6}))
        write_text(
            root / "reports" / f"pseudo_{run}" / "pr.csv",
            "threshold,precision,recall\n0.1,0.6,0.7\n0.5,0.9,0.4\n",
        )
    rows = collect_rows(metrics, root / "reports", ["r0", "r1", "r2"], "full")
    write_text(root / "reports" / "rounds.csv", rounds_csv(rows))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``dvc plots show`` of the repository's plot definitions over the sample outputs."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    sample_outputs(root)
    write_plots_page(root / "reports" / PAGE_NAME)
    dvc = [sys.executable, "-c", "import sys; from dvc.cli import main; sys.exit(main())"]
    subprocess.run([*dvc, "plots", "show", "-o", "out"], cwd=root, check=True, capture_output=True)
    return (root / "out" / "index.html").read_text()


@pytest.fixture(scope="module")
def charts(page: str) -> dict[str, dict]:
    """The Vega-Lite spec of each chart on the page, by title."""
    specs = [json.loads(s) for s in re.findall(r"var spec = (\{.*?\});\s*vegaEmbed", page, re.DOTALL)]
    return {s["title"] if isinstance(s["title"], str) else s["title"]["text"]: s for s in specs}


def axis_titles(spec: dict) -> list[str]:
    text = json.dumps(spec)
    return re.findall(r'"title": "([^"]*)"', text)


def test_page_is_offline(page: str) -> None:
    assert "vegaEmbed" in page and "window.vegaEmbed" in page  # the bundle defines it inline
    assert not re.search(r"<script[^>]*\bsrc=", page) and "cdn.jsdelivr" not in page


def test_one_chart_per_question(charts: dict[str, dict]) -> None:
    assert sorted(charts) == sorted(
        [
            *CHARTS[:-1],
            "Test confusion matrices (detections with class confidence >= 0.3, matched at IoU 0.5)",
        ]
    )
    for spec in charts.values():
        assert "y" not in axis_titles(spec)  # every y axis is named


def test_rounds_categorical_with_full_as_reference(charts: dict[str, dict]) -> None:
    spec = charts["AP per round"]
    line, rule, _ = spec["layer"]
    assert line["encoding"]["x"]["type"] == "ordinal" and line["encoding"]["x"]["field"] == "name"
    assert line["transform"] == [{"filter": "datum.kind !== 'full'"}] and rule["mark"]["type"] == "rule"
    assert {(d["name"], d["kind"]) for d in spec["data"]["values"]} == {
        ("r0", "baseline"), ("r1", "round"), ("r2", "round"), ("full", "full"),
    }  # fmt: skip
    assert spec["encoding"]["y"]["title"] == "test AP"


@pytest.mark.parametrize("chart", ["training loss", "validation AP"])
def test_curves_show_every_run(charts: dict[str, dict], chart: str) -> None:
    files = {d["filename"] for d in charts[chart]["data"]["values"]}
    assert {f.split("/")[0] for f in files} == set(RUNS)


def test_confusion_title_states_the_threshold_the_matrix_uses(charts: dict[str, dict]) -> None:
    defaults = inspect.signature(confusion_matrix).parameters
    score, iou = defaults["score_threshold"].default, defaults["iou_threshold"].default
    assert f"class confidence >= {score:g}" in CONFUSION and f"IoU {iou:g}" in CONFUSION
    spec = charts[CONFUSION]
    assert {d["filename"].split("/")[0] for d in spec["data"]["values"]} == set(RUNS)
    colour = spec["spec"]["layer"][0]["encoding"]["color"]
    assert colour["field"] == "row_share" and colour["scale"]["domain"] == [0, 1]  # per-row shares


def marks(node: object) -> dict[str, int]:
    """Items per named mark of a Vega scenegraph."""
    found: dict[str, int] = {}
    if isinstance(node, dict):
        if node.get("marktype") and node.get("name"):
            found[node["name"]] = found.get(node["name"], 0) + len(node.get("items", []))
        children = list(node.values())
    else:
        children = node if isinstance(node, list) else []
    for child in children:
        for name, n in marks(child).items():
            found[name] = found.get(name, 0) + n
    return found


def test_charts_render_with_the_bundled_vega(charts: dict[str, dict]) -> None:
    """Vega-Lite as shipped compiles every chart; AP per round draws what rounds.csv defines."""
    for spec in charts.values():
        assert vl_convert.vegalite_to_vega(spec)["marks"]
    drawn = marks(vl_convert.vegalite_to_scenegraph(charts["AP per round"]))
    # points of r0 and r1 for AP and AP50 (r2 has no test metrics), one reference line and label each
    assert (drawn["layer_0_layer_1_marks"], drawn["layer_1_marks"], drawn["layer_2_marks"]) == (4, 2, 2)
