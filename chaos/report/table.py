"""The end-of-run summary table and the one-line progress message per scenario."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = ("scenario", "faults", "verdict", "recovery", "caller errors", "ops", "time")


def fmt_seconds(value: float | None) -> str:
    """``12 ms`` below a second, ``6.61 s`` above, ``-`` when not measured."""
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def _errors(row: Mapping[str, Any]) -> str:
    seen = row.get("errors_seen", 0)
    kinds = row.get("error_kinds") or {}
    if not seen:
        return "0"
    top = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:2])
    return f"{seen} ({top})" if top else str(seen)


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def row_cells(row: Mapping[str, Any]) -> list[str]:
    return [
        row.get("name", "?"),
        _truncate(row.get("faults", "-"), 44),
        row.get("verdict", "?").upper(),
        fmt_seconds(row.get("recovery_s")),
        _errors(row),
        f"{row.get('ok_ops', 0)}/{row.get('ops', 0)}",
        fmt_seconds(row.get("duration_s")),
    ]


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table; failures are followed by their violations and replay command."""
    cells = [list(COLUMNS)] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = []
    for n, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    failures = [r for r in rows if r.get("verdict") not in ("pass", "caught", "asserted")]
    for row in failures:
        lines.append("")
        lines.append(f"{row.get('name')}: {row.get('verdict', '?').upper()}")
        for violation in row.get("violations", [])[:8]:
            lines.append(f"  - {violation}")
        if row.get("replay"):
            lines.append(f"  replay: {row['replay']}")
    return "\n".join(lines)


def format_progress(row: Mapping[str, Any]) -> str:
    """One line as each scenario finishes."""
    parts = [f"[chaos] {row.get('name', '?')}: {row.get('verdict', '?').upper()}"]
    if row.get("recovery_s") is not None:
        parts.append(f"recovery {fmt_seconds(row['recovery_s'])}")
    parts.append(f"caller errors {_errors(row)}")
    parts.append(f"ops {row.get('ok_ops', 0)}/{row.get('ops', 0)}")
    if row.get("seed") is not None:
        parts.append(f"seed {row['seed']}")
    if row.get("verdict") not in ("pass",) and row.get("violations"):
        parts.append(row["violations"][0])
    return " | ".join(parts)
