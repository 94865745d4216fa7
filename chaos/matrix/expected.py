"""The reviewed expectations: ``tests/matrix/expected_verdicts.toml``.

One table per target; a key per property (or ``"*"`` for every property of
that target not named), whose value is a verdict or an inline table::

    [django]
    guc = { verdict = "fail", reason = "no reset on return", evidence = "evidence/django/x.py",
            ticket = "https://code.djangoproject.com/ticket/NNNNN" }
    "*" = "pass"

Every FAIL of a third-party target carries a ``reason`` (and an ``evidence``
path or upstream ``ticket`` where one exists): the file is what a reviewer
signed, so a change in the ecosystem shows as a mismatch, worded by
:func:`mismatch`.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.matrix.cell import VERDICTS, Cell

REFERENCE = "plain_pool"


@dataclass(frozen=True)
class Expected:
    verdict: str
    reason: str = ""
    evidence: str = ""
    ticket: str = ""

    def cite(self) -> str:
        parts = [self.reason, self.evidence, self.ticket]
        return "; ".join(p for p in parts if p)


class ExpectedVerdicts:
    """target -> property -> :class:`Expected`, with per-target ``"*"`` defaults."""

    def __init__(self, table: dict[str, dict[str, Any]]) -> None:
        self._table: dict[str, dict[str, Expected]] = {}
        for target, entries in table.items():
            parsed = {}
            for prop, value in entries.items():
                entry = Expected(value) if isinstance(value, str) else Expected(**value)
                if entry.verdict not in VERDICTS:
                    raise ValueError(
                        f"[{target}] {prop}: verdict {entry.verdict!r} not in {VERDICTS}"
                    )
                parsed[prop] = entry
            self._table[target] = parsed

    @classmethod
    def load(cls, path: Path) -> ExpectedVerdicts:
        return cls(tomllib.loads(path.read_text()))

    def targets(self) -> list[str]:
        return list(self._table)

    def entries(self) -> dict[str, dict[str, Expected]]:
        return self._table

    def get(self, target: str, prop: str) -> Expected | None:
        entries = self._table.get(target, {})
        return entries.get(prop) or entries.get("*")

    def unjustified_fails(self) -> list[str]:
        """Third-party FAILs without a reason (the reference must pass everything)."""
        problems = []
        for target, entries in self._table.items():
            for prop, entry in entries.items():
                if entry.verdict == "fail" and target == REFERENCE:
                    problems.append(f"[{target}] {prop}: the reference is expected to pass")
                elif entry.verdict == "fail" and not entry.reason.strip():
                    problems.append(f"[{target}] {prop}: a FAIL needs a reason (and evidence)")
        return problems


def mismatch(cell: Cell, expected: Expected | None, title: str) -> str:
    """What changed, in words, then the evidence: the detail, the program, the replay."""
    target, prop, got = cell.target, cell.property, cell.verdict
    want = expected.verdict if expected else None
    if want is None:
        head = f"{target} x {prop} has no expected verdict: add it to expected_verdicts.toml"
    elif want == "fail" and got == "pass":
        head = f"{target} no longer fails {prop} ({title}): review and update the expected file"
    elif want == "pass" and got == "fail":
        head = f"{target} now fails {prop} ({title})"
    elif want in ("not_run", "na") and got in ("pass", "fail"):
        head = f"{target} now runs {prop}: {got}; review it and record it in the expected file"
    else:
        head = f"{target} x {prop}: expected {want}, got {got}"
    lines = [head, f"  detail: {cell.detail}"]
    if expected is not None and expected.cite():
        lines.append(f"  expected because: {expected.cite()}")
    if cell.program:
        lines.append("  program:")
        lines += [f"    {line}" for line in cell.program.splitlines()]
    lines.append(f"  replay: {cell.replay}")
    return "\n".join(lines)


def draft(matrix: dict[str, Any], current: ExpectedVerdicts | None = None) -> str:
    """A TOML draft of the expected file from a run's matrix.json, for review.

    Entries whose verdict did not change keep their reason; a new third-party FAIL gets
    ``reason = "TODO"``, which the expected-file test refuses until a reviewer writes it.
    """
    lines = []
    for target in matrix.get("targets", []):
        cells = [c for c in matrix.get("cells", []) if c["target"] == target]
        verdicts = {c["verdict"] for c in cells}
        lines.append(f"\n[{target}]")
        if len(verdicts) == 1 and verdicts != {"fail"}:
            (only,) = verdicts
            old = current.get(target, "*") if current else None
            reason = old.reason if old and old.verdict == only else cells[0]["detail"]
            lines.append(f'"*" = {{ verdict = "{only}", reason = {json.dumps(reason)} }}')
            continue
        for cell in cells:
            old = current.get(target, cell["property"]) if current else None
            if cell["verdict"] == "pass":
                lines.append(f'{cell["property"]} = "pass"')
                continue
            kept = old if old and old.verdict == cell["verdict"] else None
            entry = {"verdict": cell["verdict"], "reason": kept.reason if kept else "TODO"}
            if kept and kept.evidence:
                entry["evidence"] = kept.evidence
            if kept and kept.ticket:
                entry["ticket"] = kept.ticket
            body = ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry.items())
            lines.append(f"{cell['property']} = {{ {body} }}")
    return "\n".join(lines).lstrip("\n") + "\n"


if __name__ == "__main__":
    import sys

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/chaos/matrix.json")
    existing = Path(__file__).resolve().parents[2] / "tests" / "matrix" / "expected_verdicts.toml"
    current = ExpectedVerdicts.load(existing) if existing.exists() else None
    print(draft(json.loads(path.read_text()), current), end="")
