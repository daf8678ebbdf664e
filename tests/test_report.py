"""The report stage: gap closed, missing and gated runs, rounds.csv, figures, example frames."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image, ImageSequence

from leod.data.layout import Manifest, load_manifest
from leod.data.sequence import SequenceData, Split
from leod.labels.boxes import empty_boxes
from leod.plumbing.atomic import save_npy, save_npz, write_text
from leod.plumbing.errors import DataFormatError
from leod.pseudo.store import SequenceLabels, load_pseudo_labels, save_pseudo_labels
from leod.report.clips import ClipInputs, clip_span
from leod.report.document import render_markdown, write_report
from leod.report.figures import plot_frames
from leod.report.frames import FrameExample, FrameInputs, load_predictions, select_examples
from leod.report.rows import collect_rows, gap_closed, read_metrics, read_pr_curve, read_train_metrics
from leod.report.tables import gains, rounds_csv
from leod.visual.clip import ClipRange
from leod.visual.draw import TITLE_HEIGHT, histogram_to_rgb, zoom_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["car", "ped"]


def eval_metrics(ap: float) -> dict[str, float]:
    return {
        "AP": ap,
        "AP50": ap + 0.3,
        "AP75": ap - 0.05,
        "AP_S": -1.0,
        "AP_M": ap,
        "AP_L": ap,
        "AP_car": ap + 0.1,
        "AP_ped": ap - 0.1,
    }


def write_metrics(folder: Path, aps: dict[str, float]) -> None:
    for name, ap in aps.items():
        write_text(folder / f"test_{name}.json", json.dumps(eval_metrics(ap)))
        write_text(
            folder / f"train_{name}.json", json.dumps({"best_val_AP": ap, "best_step": 10, "steps": 20})
        )


def write_pr(reports: Path, name: str, rows: list[tuple[float, float, float]]) -> None:
    lines = "".join(f"{t},{p},{r}\n" for t, p, r in rows)
    write_text(reports / f"pseudo_{name}" / "pr.csv", "threshold,precision,recall\n" + lines)


@pytest.fixture
def outputs(tmp_path: Path) -> tuple[Path, Path]:
    """r0 0.2, r1 0.4 (its control 0.33), full 0.5 with r1's pseudo metrics and PR curve; r2
    gated, nothing else."""
    metrics, reports = tmp_path / "metrics", tmp_path / "reports"
    write_metrics(metrics, {"r0": 0.2, "r1": 0.4, "full": 0.5, "control_r1": 0.33})
    pseudo = {"precision@0.5": 0.8, "recall@0.5": 0.6, "boxes_per_frame": 2.5, "ignore_per_frame": 0.5}
    write_text(metrics / "pseudo_r1.json", json.dumps({**pseudo, "gt_per_frame": 3.0, "frames_labelled": 90}))
    write_pr(reports, "r1", [(0.9, 0.95, 0.2), (0.1, 0.6, 0.7), (0.5, 0.85, 0.5)])
    gate = {
        "best_val_AP": 0.0,
        "best_step": 0,
        "steps": 0,
        "gated": True,
        "gate_reason": "precision 0.3 < 0.5",
    }
    write_text(metrics / "train_r2.json", json.dumps(gate))
    return metrics, reports


# --- metrics and tables ---------------------------------------------------------------------


def test_gap_closed_formula_and_reasons() -> None:
    assert gap_closed(0.4, 0.2, 0.5)[0] == pytest.approx(2 / 3)
    assert gap_closed(0.1, 0.2, 0.5)[0] == pytest.approx(-1 / 3)
    value, why = gap_closed(0.4, 0.3, 0.3)
    assert value is None and "no gap to close" in why
    assert gap_closed(None, 0.2, 0.5) == (None, "no test AP of this run")
    assert gap_closed(0.4, 0.2, None) == (None, "no test AP of the fully supervised run")


def test_rows_gap_missing_and_gate(outputs: tuple[Path, Path]) -> None:
    metrics, reports = outputs
    rows = collect_rows(metrics, reports, ["r0", "r1", "r2"], "full")
    assert [(r.name, r.round, r.kind) for r in rows] == [
        ("r0", 0, "baseline"),
        ("r1", 1, "round"),
        ("r2", 2, "round"),
        ("full", 3, "full"),
    ]
    r0, r1, r2, full = rows
    assert r1.gap_closed == pytest.approx(0.2 / 0.3)
    assert (r0.gap_closed, r0.gap_note, full.gap_note) == (None, "baseline", "upper bound")
    assert (r2.gap_closed, r2.gap_note) == (None, "no test AP of this run")
    assert r0.missing == r1.missing == full.missing == ()
    assert {p.name for p in r2.missing} == {
        "test_r2.json",
        "pseudo_r2.json",
        "pr.csv",
        "test_control_r2.json",
    }
    assert (r1.control_ap, r1.gain) == (0.33, pytest.approx(0.07))
    assert r0.control_ap is r0.gain is r2.control_ap is r2.gain is full.gain is None
    assert r2.gated and r2.gate_reason == "precision 0.3 < 0.5" and not r1.gated
    assert r1.ap("AP_S") is None  # the evaluator's -1: undefined, not a score
    np.testing.assert_allclose(r1.pr.threshold, [0.1, 0.5, 0.9])  # sorted by threshold
    np.testing.assert_allclose(r1.pr.precision, [0.6, 0.85, 0.95])


def table_line(md: str, run: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {run} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_shows_gap_missing_files_and_gate_reason(outputs: tuple[Path, Path]) -> None:
    metrics, reports = outputs
    rows = collect_rows(metrics, reports, ["r0", "r1", "r2"], "full")
    md = render_markdown(rows, {"ap_per_round.png": "AP per round"}, CLASSES)
    assert table_line(md, "r1") == [
        "r1", "0.400", "0.700", "0.330", "0.070", "0.400", "0.800", "0.600", "2.50", "3.00", "0.50", "90",
        "0.667", "no",
    ]  # fmt: skip
    r2 = table_line(md, "r2")
    assert r2[1:5] == ["missing"] * 4 and r2[6] == "missing"
    assert r2[-2] == "n/a (no test AP of this run)" and r2[-1] == "**yes**: precision 0.3 < 0.5"
    rows[2] = dataclasses.replace(rows[2], train=dataclasses.replace(rows[2].train, gate_reason="a | b\nc"))
    assert "| **yes**: a \\| b c |" in render_markdown(rows, {})
    assert table_line(md, "r0 (sparse labels)")[-2:] == ["n/a (baseline)", "-"]
    assert table_line(md, "full (all labels)")[3:5] == ["-", "-"]  # no control
    assert table_line(md, "full (all labels)")[6] == "-"  # no pseudo labels: not applicable
    per_class = md.split("## Per-class test AP")[1]
    assert "| run | AP | car | ped | AP_S | AP_M | AP_L |" in per_class
    assert "| r1 | 0.400 | 0.500 | 0.300 | n/a | 0.400 | 0.400 |" in per_class
    assert f"`{metrics / 'test_r2.json'}` not found (r2 was gated)" in md
    assert f"`{reports / 'pseudo_r2' / 'pr.csv'}` not found" in md
    assert "![ap_per_round](ap_per_round.png)" in md


def test_an_imported_teacher_is_named_as_the_baseline(outputs: tuple[Path, Path]) -> None:
    """train_r0 replaced by selftrain.teacher: the table says so; its val AP is not defined."""
    metrics, reports = outputs
    teacher = {"best_step": -1, "steps": 0, "teacher": "rvt-t-gen1"}
    write_text(metrics / "train_r0.json", json.dumps(teacher))
    rows = collect_rows(metrics, reports, ["r0", "r1"], "full")
    assert rows[0].teacher == "rvt-t-gen1" and rows[0].best_val_ap is None and rows[1].teacher is None
    line = table_line(render_markdown(rows, {}), "r0 (imported: rvt-t-gen1)")
    assert line[1] == "0.200" and line[5] == "n/a"


def test_no_full_run_and_no_gap_to_close(tmp_path: Path) -> None:
    write_metrics(tmp_path, {"r0": 0.3, "r1": 0.35, "full": 0.25})
    rows = collect_rows(tmp_path, tmp_path, ["r0", "r1"], None)
    assert [r.name for r in rows] == ["r0", "r1"]
    assert rows[1].gap_note == "no test AP of the fully supervised run"
    rows = collect_rows(tmp_path, tmp_path, ["r0", "r1"], "full")
    assert rows[1].gap_closed is None and "0.250 <= baseline AP 0.300" in rows[1].gap_note


def test_rounds_csv_parses(outputs: tuple[Path, Path]) -> None:
    rows = collect_rows(*outputs, ["r0", "r1", "r2"], "full")
    table = list(csv.DictReader(io.StringIO(rounds_csv(rows))))
    assert [(int(r["round"]), r["name"], r["kind"]) for r in table] == [
        (0, "r0", "baseline"), (1, "r1", "round"), (2, "r2", "round"), (3, "full", "full"),
    ]  # fmt: skip
    assert float(table[1]["gap_closed"]) == pytest.approx(2 / 3, abs=1e-5)
    assert (float(table[1]["AP"]), float(table[1]["pseudo_precision50"])) == (0.4, 0.8)
    assert table[2]["AP"] == "" and table[0]["pseudo_recall50"] == "" and table[3]["gap_closed"] == ""
    assert (float(table[1]["control_AP"]), float(table[1]["gain"])) == (0.33, pytest.approx(0.07))
    assert table[0]["control_AP"] == table[2]["gain"] == ""


def test_gains_metrics_per_round(outputs: tuple[Path, Path]) -> None:
    """reports/gains.json: what `dvc metrics diff` compares between experiments."""
    rows = collect_rows(*outputs, ["r0", "r1", "r2"], "full")
    assert gains(rows) == {
        "r1": {
            "AP": 0.4,
            "control_AP": 0.33,
            "gain": pytest.approx(0.07),
            "gap_closed": pytest.approx(2 / 3),
        },
        "r2": {},  # gated, no test metrics: nothing defined
    }


def test_bad_inputs_name_file_and_key(tmp_path: Path) -> None:
    write_text(tmp_path / "a.json", "{not json")
    with pytest.raises(DataFormatError, match="a.json"):
        read_metrics(tmp_path / "a.json")
    write_text(tmp_path / "b.json", json.dumps({"AP": "high"}))
    with pytest.raises(DataFormatError, match="'AP'"):
        read_metrics(tmp_path / "b.json")
    trained = {"best_val_AP": 0.5, "best_step": 3, "steps": 3}
    write_text(tmp_path / "c.json", json.dumps({**trained, "gated": "yes"}))
    with pytest.raises(DataFormatError, match="c.json.*'gated' must be true or false"):
        read_train_metrics(tmp_path / "c.json")
    write_text(tmp_path / "d.json", json.dumps({"best_val_AP": 0.5, "steps": 3}))
    with pytest.raises(DataFormatError, match="d.json.*'best_step'"):
        read_train_metrics(tmp_path / "d.json")
    write_text(tmp_path / "pr.csv", "threshold,precision\n0.5,0.9\n")
    with pytest.raises(DataFormatError, match="recall"):
        read_pr_curve(tmp_path / "pr.csv")
    write_text(tmp_path / "pr2.csv", "threshold,precision,recall\n0.5,0.9,x\n")
    with pytest.raises(DataFormatError, match="pr2.csv:2"):
        read_pr_curve(tmp_path / "pr2.csv")
    assert read_metrics(tmp_path / "absent.json") is None and read_pr_curve(tmp_path / "absent.csv") is None


# --- figures ----------------------------------------------------------------------------------


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path


def test_write_report_writes_pngs_csv_and_markdown(outputs: tuple[Path, Path], tmp_path: Path) -> None:
    rows = collect_rows(*outputs, ["r0", "r1", "r2"], "full")
    written = write_report(tmp_path / "out", rows, CLASSES)
    names = [p.name for p in written]
    assert names == ["report.md", "rounds.csv", "gains.json", "ap_per_round.png", "pseudo_pr.png"]
    assert json.loads(written[2].read_text())["r1"]["control_AP"] == 0.33
    for path in written[3:]:
        assert_png(path)
    md = written[0].read_text()
    assert "![pseudo_pr](pseudo_pr.png)" in md and "frames.png" not in md
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temporaries left behind


def test_figures_without_any_metrics(tmp_path: Path) -> None:
    rows = collect_rows(tmp_path / "m", tmp_path / "r", ["r0", "r1"], "full")
    assert all(r.test is None for r in rows)
    written = write_report(tmp_path / "out", rows)
    for path in written[3:]:
        assert_png(path)
    assert written[0].read_text().count("not found") == 9  # 3 x (test, train) + r1's pseudo, pr, control


def test_histogram_to_rgb_colours() -> None:
    frame = np.zeros((4, 2, 3), np.uint8)  # nbins 2: channels 0-1 polarity 0 (OFF), 2-3 ON
    frame[2:, 0, 0] = 3  # ON only
    frame[:2, 1, 2] = 3  # OFF only
    rgb = histogram_to_rgb(frame)
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0])
    np.testing.assert_allclose(rgb[1, 2], [0, 0, 1])
    np.testing.assert_allclose(rgb[0, 1], [1, 1, 1])
    with pytest.raises(DataFormatError, match="2\\*nbins"):
        histogram_to_rgb(np.zeros((3, 2, 2), np.uint8))


# --- example frames over a tiny preprocessed dataset ------------------------------------------

H, W, NBINS, T = 12, 16, 1, 8
LABEL_REPR = np.array([1, 3, 5, 7])  # label frames; frame k has k + 1 boxes except frame 0 (none)


def gt_boxes(frame: int, t: int, downsample: bool) -> np.ndarray:
    n = 0 if frame == 0 else frame + 1
    boxes = empty_boxes(n)
    boxes["t"], boxes["x"], boxes["y"], boxes["w"], boxes["h"] = t, np.arange(n) * 3, 1, 2, 4
    if downsample:
        for key in ("x", "y", "w", "h"):
            boxes[key] *= 2
    return boxes


def make_dataset(root: Path, downsample: bool) -> Manifest:
    scale = 2 if downsample else 1
    manifest = Manifest(
        "tiny", H, W, H * scale, W * scale, downsample, CLASSES, NBINS, 50.0, 50.0,
        {"train": ["tr_a", "tr_b"], "test": ["te_a"]},
    )  # fmt: skip
    times = 50_000 * (np.arange(T, dtype=np.int64) + 1)
    for split, names in manifest.splits.items():
        for name in names:
            seq = manifest.sequence(root, split, name)
            seq.repr_dir.mkdir(parents=True)
            data = np.zeros((T, 2 * NBINS, H, W), np.uint8)
            data[:, 1, 2, 3] = 5  # one ON pixel
            with h5py.File(seq.representations, "w") as h5:
                h5.create_dataset("data", data=data)
            save_npy(seq.repr_timestamps, times)
            save_npy(seq.objframe_to_repr, LABEL_REPR)
            save_npy(seq.label_timestamps, times[LABEL_REPR])
            frames = [gt_boxes(f, times[r], downsample) for f, r in enumerate(LABEL_REPR)]
            starts = np.cumsum([0] + [len(b) for b in frames[:-1]])
            save_npz(seq.labels, labels=np.concatenate(frames), objframe_idx_2_label_idx=starts)
    write_text(root / "manifest.json", manifest.to_json())
    return manifest


@pytest.mark.parametrize("downsample", [False, True])
def test_examples_are_withheld_train_frames_and_test_frames(tmp_path: Path, downsample: bool) -> None:
    manifest = make_dataset(tmp_path / "data", downsample)
    times = 50_000 * (np.arange(T, dtype=np.int64) + 1)
    # tr_a keeps its densest frame 3, so the densest withheld one is frame 2; tr_b keeps none
    split = Split("wsod", {"tr_a": (3,), "tr_b": ()})
    pseudo = {  # one box per frame, x = 10 (sensor pixels), the last frame's an ignore box
        name: SequenceLabels.from_frames(LABEL_REPR, [gt_boxes(1, times[r], False)[:1] for r in LABEL_REPR])
        for name in manifest.splits["train"]
    }
    for labels in pseudo.values():
        labels.labels["x"] = 10
        labels.labels["ignore"][-1] = True
    save_pseudo_labels(tmp_path / "pseudo.npz", pseudo)
    preds = gt_boxes(3, times[7], False)
    preds["class_confidence"] = [0.9, 0.2, 0.5, 0.1]
    preds["objectness"] = 0.8
    save_npz(tmp_path / "preds.npz", te_a=np.concatenate([gt_boxes(2, times[5], False), preds]))
    inputs = FrameInputs(tmp_path / "data", split, tmp_path / "pseudo.npz", tmp_path / "preds.npz", score=0.3)
    examples = select_examples(
        inputs, load_pseudo_labels(inputs.pseudo), load_predictions(inputs.predictions)
    )
    assert [e.title for e in examples] == [
        "train tr_a @ 0.30 s, GT withheld",  # frame 2 at repr 5
        "train tr_b @ 0.40 s, GT withheld",  # frame 3 at repr 7
        "test te_a @ 0.40 s",
    ]
    assert [len(e.gt) for e in examples] == [3, 4, 4]
    np.testing.assert_allclose(examples[0].gt["w"], 2)  # representation pixels either way
    pseudo_a, pseudo_b = examples[0].pseudo, examples[1].pseudo
    assert pseudo_a["x"].tolist() == [10 / (2 if downsample else 1)] and not pseudo_a["ignore"][0]
    assert pseudo_b["ignore"].tolist() == [True]
    assert examples[0].pred is None and examples[2].pseudo is None
    assert examples[2].pred["class_confidence"].tolist() == pytest.approx([0.9, 0.5])  # 0.8 * conf >= 0.3
    np.testing.assert_allclose(examples[2].image[2, 3], [1, 0, 0])  # the ON pixel is red

    late = FrameInputs(tmp_path / "data", split, None, None, min_time_us=int(times[7]))
    late_examples = select_examples(late, None, None)  # tr_a's only late frame is kept: skipped
    assert [e.title for e in late_examples] == ["train tr_b @ 0.40 s, GT withheld", "test te_a @ 0.40 s"]
    assert late_examples[0].pseudo is None and late_examples[1].pred is None


def test_frames_figure_and_missing_overlays(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data", False)
    split = Split("wsod", {"tr_a": (3,), "tr_b": ()})
    inputs = FrameInputs(tmp_path / "data", split, tmp_path / "no_pseudo.npz", tmp_path / "no_preds.npz")
    rows = collect_rows(tmp_path / "m", tmp_path / "r", ["r0"], None)
    written = write_report(tmp_path / "out", rows, CLASSES, inputs)
    assert_png(tmp_path / "out" / "frames.png")
    md = written[0].read_text()
    assert "![frames](frames.png)" in md
    assert f"`{tmp_path / 'no_pseudo.npz'}` not found: example frames show no pseudo labels" in md
    assert f"`{tmp_path / 'no_preds.npz'}` not found: example frames show no predictions" in md


def test_round_clips_show_gt_beside_each_rounds_pseudo_labels(tmp_path: Path) -> None:
    """One GIF per round with pseudo labels (of the train sequence with the most GT in its
    clip: tr_a and tr_b tie, tr_a first), a note for a round without; a clip starts at
    min_time_us, earlier when fewer frames follow (here the whole 8-frame sequence)."""
    times = 50_000 * (np.arange(T, dtype=np.int64) + 1)
    make_dataset(tmp_path / "data", False)
    boxes = [gt_boxes(1, times[r], False)[:1] for r in LABEL_REPR]
    labels = {"tr_a": SequenceLabels.from_frames(LABEL_REPR, boxes)}
    labels["tr_a"].labels["x"] = 10
    (tmp_path / "pseudo" / "r1").mkdir(parents=True)
    save_pseudo_labels(tmp_path / "pseudo" / "r1" / "labels.npz", labels)
    clips = ClipInputs(tmp_path / "data", tmp_path / "pseudo", ["r1", "r2"], min_time_us=int(times[2]))
    rows = collect_rows(tmp_path / "m", tmp_path / "r", ["r0", "r1", "r2"], None)
    written = write_report(tmp_path / "out", rows, CLASSES, None, clips)
    assert tmp_path / "out" / "clips" / "r1.gif" in written
    assert sorted(p.name for p in (tmp_path / "out" / "clips").iterdir()) == ["r1.gif"]
    md = written[0].read_text()
    assert "![r1](clips/r1.gif)" in md and "Round r1: tr_a from 0.05 to 0.40 s" in md
    assert f"`{tmp_path / 'pseudo' / 'r2' / 'labels.npz'}` not found: no clip of round r2" in md
    with Image.open(tmp_path / "out" / "clips" / "r1.gif") as gif:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    assert len(frames) == T
    zoom = zoom_for(W, 256)
    right = frames[3][TITLE_HEIGHT:, W * zoom + 4 :]  # frame 3 (label frame 1): its pseudo box
    blue = (right[..., 2] > 150) & (right[..., 0] < 80)
    assert blue.any() and not blue[:, : 10 * zoom - 1].any()  # drawn from x = 10, not before
    seq = SequenceData(load_manifest(tmp_path / "data").sequence(tmp_path / "data", "train", "tr_a"))
    assert clip_span(seq, int(times[2]), frames=3) == ClipRange(2, 3)
    assert clip_span(seq, int(times[6]), frames=3) == ClipRange(5, 3)  # 3 frames still to come


def test_plot_frames_draws_given_arrays(tmp_path: Path) -> None:
    image = np.ones((H, W, 3))
    boxes = empty_boxes(2)
    boxes["w"], boxes["h"], boxes["ignore"] = 4, 3, [False, True]
    examples = [
        FrameExample("a", image, boxes, pseudo=boxes),
        FrameExample("b", image, boxes, pred=boxes[:1]),
    ]
    plot_frames(examples, tmp_path / "f.png", score=0.3)
    plot_frames([], tmp_path / "empty.png", score=0.3)
    assert_png(tmp_path / "f.png")
    assert_png(tmp_path / "empty.png")


# --- the stage script ---------------------------------------------------------------------------


def stage_main(repo_root: Path) -> Callable[[list[str]], int]:
    """The stage script's ``main``, loaded in-process (a subprocess would re-import torch each time)."""
    spec = importlib.util.spec_from_file_location("report_stage", repo_root / "stages" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_stage_writes_report(
    outputs: tuple[Path, Path], tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics, reports = outputs
    out = tmp_path / "out"
    main = stage_main(repo_root)
    args = ["--params", str(repo_root / "params.yaml"), "--metrics", str(metrics), "--reports", str(reports)]
    args += ["--out", str(out)]
    assert main([*args, "--runs", "r0", "r1", "r2", "--full", "full"]) == 0
    assert "4 runs, 4 missing input file(s)" in capsys.readouterr().out
    written = {
        "report.md",
        "rounds.csv",
        "gains.json",
        "ap_per_round.png",
        "pseudo_pr.png",
        "plots_page.html",
    }
    assert {p.name for p in out.iterdir()} == written
    assert main([*args, "--runs", "r0", "r0"]) == 2
    assert "distinct" in capsys.readouterr().err
    assert main([*args, "--runs", "r0", "--data", str(tmp_path)]) == 2
    assert "--split" in capsys.readouterr().err
    assert main([*args, "--runs", "r0", "--score", "1.5"]) == 2
    assert "--score" in capsys.readouterr().err


def test_compare_loads_neither_matplotlib_nor_h5py() -> None:
    """Printing a table must stay cheap: the table path imports no plotting or HDF5 library."""
    code = "import sys, leod.plumbing.compare; print(sorted({'matplotlib', 'h5py'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
