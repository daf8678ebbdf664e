"""Text tables of report rows: the runs table, the per-class table, rounds.csv, the gains
metrics and the compact multi-source table of ``python -m leod compare`` (no matplotlib, no
dataset reader)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

from leod.report.rows import POINT_IOU, PRECISION_KEY, RECALL_KEY, RunRow

#: (metrics key, decimals; None: integer or 3 decimals) of the pseudo-label columns of the runs table.
PSEUDO_COLUMNS = (
    (PRECISION_KEY, 3),
    (RECALL_KEY, 3),
    ("boxes_per_frame", 2),
    ("gt_per_frame", 2),
    ("ignore_per_frame", 2),
    ("frames_labelled", None),
)
#: rounds.csv header. Vega-Lite (DVC plots) reads a dot in a field name as a nested path,
#: so the pseudo-label columns are spelled without ``@0.5``.
CSV_COLUMNS = (
    "round",
    "name",
    "kind",
    "AP",
    "AP50",
    "control_AP",
    "gain",
    "pseudo_precision50",
    "pseudo_recall50",
    "gap_closed",
)


def _fmt(value: float | None, digits: int | None = 3) -> str:
    """``digits`` None: an integer as such (a count), anything else with 3 decimals (a fraction)."""
    if value is None:
        return "n/a"
    if digits is None:
        return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
    return f"{value:.{digits}f}"


def _cell(source: object | None, value: float | None, digits: int | None = 3, applicable: bool = True) -> str:
    """A table cell: the number, "missing" when its file is absent, "-" when not applicable."""
    if not applicable:
        return "-"
    if source is None:
        return "missing"
    return _fmt(value, digits)


def _gate_cell(row: RunRow) -> str:
    if row.train is None:
        return "missing" if row.is_round else "-"
    if row.gated:
        reason = " ".join((row.gate_reason or "no reason given").split()).replace("|", "\\|")
        return f"**yes**: {reason}"  # one line, no bare "|": the reason sits in a table cell
    return "no" if row.is_round else "-"


def _control_cells(row: RunRow) -> list[str]:
    """The control's test AP and the gain over it: "-" outside rounds, "missing" without a control."""
    return [
        _cell(row.control, row.control_ap, applicable=row.is_round),
        _cell(row.control, row.gain, applicable=row.is_round),
    ]


def _gap_cell(row: RunRow) -> str:
    return f"{row.gap_closed:.3f}" if row.gap_closed is not None else f"n/a ({row.gap_note})"


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


_KIND_LABELS = {"baseline": "sparse labels", "full": "all labels"}


def _run_label(row: RunRow) -> str:
    if row.is_round:
        return row.name
    return f"{row.name} ({f'imported: {row.teacher}' if row.teacher else _KIND_LABELS[row.kind]})"


def runs_table(rows: Sequence[RunRow]) -> str:
    header = [
        "run",
        "test AP",
        "AP50",
        "control AP",
        "gain",
        "best val AP",
        f"pseudo P@{POINT_IOU}",
        f"pseudo R@{POINT_IOU}",
        "boxes/frame",
        "GT/frame",
        "ignore/frame",
        "frames labelled",
        "gap closed",
        "gated",
    ]
    lines = []
    for r in rows:
        lines.append(
            [
                _run_label(r),
                _cell(r.test, r.ap("AP")),
                _cell(r.test, r.ap("AP50")),
                *_control_cells(r),
                _cell(r.train, r.best_val_ap),
                *(
                    _cell(r.pseudo, r.pseudo_value(key), digits, applicable=r.is_round)
                    for key, digits in PSEUDO_COLUMNS
                ),
                _gap_cell(r),
                _gate_cell(r),
            ]
        )
    return markdown_table(header, lines)


def compact_table(sources: Mapping[str, Sequence[RunRow]]) -> str:
    """The headline columns of several sources' runs in one table (``python -m leod compare``)."""
    header = ["source", "run", "test AP", "AP50", "control AP", "gain"]
    header += [f"pseudo P@{POINT_IOU}", f"pseudo R@{POINT_IOU}"]
    header += ["gap closed", "gated"]
    lines = []
    for label, rows in sources.items():
        for r in rows:
            lines.append(
                [
                    label,
                    r.name,
                    _cell(r.test, r.ap("AP")),
                    _cell(r.test, r.ap("AP50")),
                    *_control_cells(r),
                    _cell(r.pseudo, r.pseudo_value(PRECISION_KEY), applicable=r.is_round),
                    _cell(r.pseudo, r.pseudo_value(RECALL_KEY), applicable=r.is_round),
                    _gap_cell(r) if r.is_round else "-",
                    _gate_cell(r),
                ]
            )
    return markdown_table(header, lines)


def per_class_table(rows: Sequence[RunRow], classes: Sequence[str]) -> str:
    header = ["run", "AP", *classes, "AP_S", "AP_M", "AP_L"]
    keys = ["AP", *(f"AP_{c}" for c in classes), "AP_S", "AP_M", "AP_L"]
    lines = [[r.name, *(_cell(r.test, r.ap(k)) for k in keys)] for r in rows]
    return markdown_table(header, lines)


def rounds_csv(rows: Sequence[RunRow]) -> str:
    """``rounds.csv``: one line per run for DVC plots; an undefined value is an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        values = (
            r.ap("AP"),
            r.ap("AP50"),
            r.control_ap,
            r.gain,
            r.pseudo_value(PRECISION_KEY),
            r.pseudo_value(RECALL_KEY),
        )
        writer.writerow(
            [r.round, r.name, r.kind, *("" if v is None else f"{v:.6g}" for v in (*values, r.gap_closed))]
        )
    return buf.getvalue()


def gains(rows: Sequence[RunRow]) -> dict[str, dict[str, float]]:
    """``reports/gains.json`` (a DVC metrics file): per round its test AP, its control's, the
    gain and the gap closed, so that ``dvc metrics diff`` between experiments shows the gains.
    Undefined values are left out."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.is_round:
            values = {
                "AP": r.ap("AP"),
                "control_AP": r.control_ap,
                "gain": r.gain,
                "gap_closed": r.gap_closed,
            }
            out[r.name] = {k: v for k, v in values.items() if v is not None}
    return out
