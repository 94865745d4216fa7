"""The state machines' part of the chaos summary: what each run did, and the totals.

A green run of a machine says little unless it shows its size: how many
programs (Hypothesis examples) ran, how many steps, how many faults the
nemesis injected and how many invariant checks were evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = ("machine", "target", "programs", "steps", "faults", "checks", "verdict")


def render_machines(rows: Sequence[dict[str, Any]]) -> str:
    """A table of machine runs (one per test id), then one line of totals."""
    table = [
        [
            _short(row.get("nodeid", row.get("machine", "?"))),
            str(row.get("target", "?")),
            str(row.get("programs", 0)),
            str(row.get("steps", 0)),
            str(row.get("faults", 0)),
            str(row.get("checks", 0)),
            str(row.get("verdict", "?")).upper(),
        ]
        for row in rows
    ]
    header = ["machine (test)", *COLUMNS[1:]]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = [_line(header, widths), "  ".join("-" * width for width in widths)]
    lines += [_line(r, widths) for r in table]
    lines.append(totals(rows))
    return "\n".join(lines)


def totals(rows: Sequence[dict[str, Any]]) -> str:
    def total(key: str) -> int:
        return sum(int(row.get(key, 0)) for row in rows)

    passed = sum(row.get("verdict") in ("pass", "caught") for row in rows)
    return (
        f"{len(rows)} machine run(s), {passed} as expected: {total('programs')} programs, "
        f"{total('steps')} steps, {total('faults')} faults injected, "
        f"{total('checks')} invariant checks"
    )


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _short(nodeid: str) -> str:
    """The test id without its directory (the table stays readable)."""
    return nodeid.rsplit("/", 1)[-1]
