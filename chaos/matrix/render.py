"""The matrix as text: targets as columns, properties as rows, pass / FAIL / n/a / not run.

Columns with no cell run (every one ``not_run``) are folded into one line under
the table, with their reason, so the table fits a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos.matrix.cell import LABELS


def measured(cell: Mapping[str, Any]) -> str:
    """The fault rows' number beside the verdict: errors and ms, a hang, sessions."""
    m = cell.get("metrics") or {}
    if "first_success_ms" in m:
        return f"{m.get('caller_errors', 0)} err, {m['first_success_ms']} ms"
    if "ended_ms" in m:
        return "hang" if m["ended_ms"] is None else f"{m['ended_ms']} ms"
    if "sessions" in m:
        return f"{m['sessions']} of {m.get('bound', '?')} sessions"
    return ""


def grid(matrix: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["target"], c["property"]): c for c in matrix.get("cells", [])}


def split_columns(matrix: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """(columns with a cell that ran, {column never run: its reason})."""
    cells = grid(matrix)
    shown, folded = [], {}
    for target in matrix.get("targets", []):
        own = [c for (t, _), c in cells.items() if t == target]
        if own and all(c["verdict"] == "not_run" for c in own):
            folded[target] = own[0].get("detail", "")
        else:
            shown.append(target)
    return shown, folded


def render_matrix(matrix: Mapping[str, Any]) -> str:
    cells = grid(matrix)
    shown, folded = split_columns(matrix)
    rows = [p["name"] for p in matrix.get("properties", [])]
    header = ["property", *shown]
    body = []
    for prop in rows:
        line = [prop]
        for target in shown:
            cell = cells.get((target, prop))
            line.append(LABELS.get(cell["verdict"], "?") if cell else "-")
        body.append(line)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    by_reason: dict[str, list[str]] = {}
    for target, reason in folded.items():
        by_reason.setdefault(reason.split(": ", 1)[-1], []).append(target)
    for reason, targets in by_reason.items():
        out.append(f"not run: {', '.join(targets)}: {reason}")
    return "\n".join(out)


def render_details(matrix: Mapping[str, Any]) -> str:
    """One line per FAIL, n/a and not-run cell of a shown column: why."""
    shown, _ = split_columns(matrix)
    lines = []
    for cell in matrix.get("cells", []):
        if cell["target"] in shown and cell["verdict"] != "pass":
            label = LABELS[cell["verdict"]]
            lines.append(f"{cell['target']} x {cell['property']}: {label}: {cell['detail']}")
    return "\n".join(lines)
