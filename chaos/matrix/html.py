"""``reports/chaos/index.html``: one self-contained page (no server, no external assets).

The matrix first (each cell's detail on hover, a click opens the program and
the replay command), then, when the directory holds a chaos run's report
(``summary.json`` and ``timeline-*.svg`` from ``--chaos-report``), the
scenario table (:mod:`chaos.report.table`) and the timelines inline.

``python -m chaos.matrix.html reports/chaos`` rebuilds the page from what the
directory holds (after a ``tox -e chaos`` run, for instance).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from chaos.matrix.cell import LABELS
from chaos.matrix.render import grid, measured, split_columns
from chaos.report.table import COLUMNS, row_cells

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; }
.meta { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #f2f2f2; position: sticky; top: 0; }
th.prop { text-align: left; font-weight: normal; min-width: 280px; }
td.v small { display: block; font-weight: normal; color: #444; }
td.v { text-align: center; min-width: 70px; }
.pass { background: #d9f2d9; } .fail { background: #f8c9c4; font-weight: bold; }
.na { background: #eee; color: #666; } .not_run { background: #fafafa; color: #999; }
th.not_run { min-width: 160px; font-weight: normal; }
td.v details summary { cursor: pointer; list-style: none; }
td.v details[open] { text-align: left; font-weight: normal; min-width: 420px; }
pre { background: #f7f7f7; padding: 6px; font-size: 12px; white-space: pre-wrap; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 6px; }
.group { background: #fff; font-weight: bold; text-align: left; }
"""


def _cell_html(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return '<td class="v">-</td>'
    verdict = cell["verdict"]
    tip = escape(cell.get("detail", ""), quote=True)
    label = LABELS.get(verdict, verdict)
    body = [f"<p>{escape(cell.get('detail', ''))}</p>"]
    if cell.get("reason"):
        body.append(f"<p><i>expected: {escape(cell['reason'])}</i></p>")
    if cell.get("program"):
        body.append(f"<pre>{escape(cell['program'])}</pre>")
    if cell.get("replay"):
        body.append(f"<p>replay:</p><pre>{escape(cell['replay'])}</pre>")
    number = measured(cell)
    small = f"<small>{escape(number)}</small>" if number else ""
    return (
        f'<td class="v {verdict}" title="{tip}"><details><summary>{label}{small}</summary>'
        f"{''.join(body)}</details></td>"
    )


def matrix_html(matrix: Mapping[str, Any]) -> str:
    """Columns that never ran (every cell ``not_run``) share one column, with their reason."""
    cells = grid(matrix)
    targets, folded = split_columns(matrix)
    head = "".join(f"<th>{escape(t)}</th>" for t in targets)
    reasons = sorted({r.split(": ", 1)[-1] for r in folded.values()})
    not_run = ""
    if folded:
        names = "<br>".join(escape(t) for t in folded)
        why = escape("; ".join(reasons), quote=True)
        head += (
            f'<th class="not_run" title="{why}">not run: {escape("; ".join(reasons))}'
            f"<br><small>{names}</small></th>"
        )
        not_run = f'<td class="v not_run" title="{why}">not run</td>'
    rows = []
    group = None
    for prop in matrix.get("properties", []):
        if prop.get("group") != group:
            group = prop.get("group")
            span = len(targets) + 1 + bool(folded)
            rows.append(f'<tr><td class="group" colspan="{span}">{escape(group or "")}</td></tr>')
        title = escape(prop.get("contract", ""), quote=True)
        line = [f'<th class="prop" title="{title}">{escape(prop.get("title", prop["name"]))}</th>']
        line += [_cell_html(cells.get((t, prop["name"]))) for t in targets]
        line.append(not_run)
        rows.append("<tr>" + "".join(line) + "</tr>")
    versions = ", ".join(f"{k} {v}" for k, v in sorted(matrix.get("versions", {}).items()))
    return (
        f"<h1>Which pool leaks what</h1>"
        f'<p class="meta">{escape(matrix.get("generated", ""))} &middot; {escape(versions)}</p>'
        '<p class="legend"><span class="pass">pass</span><span class="fail">FAIL</span>'
        '<span class="na">n/a</span><span class="not_run">not run</span> '
        "hover a cell for its detail, click it for the program and the replay command</p>"
        f"<table><tr><th>property</th>{head}</tr>{''.join(rows)}</table>"
    )


def scenarios_html(directory: Path) -> str:
    summary = directory / "summary.json"
    if not summary.exists():
        return ""
    rows = json.loads(summary.read_text()).get("scenarios", [])
    if not rows:
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        verdict = str(row.get("verdict", "?"))
        klass = "pass" if verdict in ("pass", "caught", "asserted") else "fail"
        cells = row_cells(row)
        tds = "".join(
            f'<td class="{klass}">{escape(c)}</td>' if i == 2 else f"<td>{escape(c)}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f"<tr>{tds}</tr>")
    svgs = []
    for path in sorted(directory.glob("timeline-*.svg")):
        svgs.append(f"<h3>{escape(path.stem.removeprefix('timeline-'))}</h3>{path.read_text()}")
    return f"<h2>Chaos scenarios</h2><table><tr>{head}</tr>{''.join(body)}</table>" + (
        "<h2>Timelines</h2>" + "".join(svgs) if svgs else ""
    )


def render_index(matrix: Mapping[str, Any] | None, directory: Path) -> str:
    parts = [matrix_html(matrix) if matrix else "<h1>plain-pool chaos report</h1>"]
    parts.append(scenarios_html(directory))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>plain-pool: the matrix</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def write_index(directory: Path) -> Path:
    """Write ``directory/index.html`` from its matrix.json and chaos summary (either may lack)."""
    matrix_path = directory / "matrix.json"
    matrix = json.loads(matrix_path.read_text()) if matrix_path.exists() else None
    path = directory / "index.html"
    path.write_text(render_index(matrix, directory))
    return path


if __name__ == "__main__":
    print(write_index(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/chaos")))
