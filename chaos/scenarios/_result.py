"""A scenario's result: built once, after the checkers, and printed without secrets.

:meth:`ScenarioResult.as_dict` and :meth:`~ScenarioResult.explain` mask the
scenario's secrets and any URL or ``password=`` they find
(``plain_pool._redact``); its repr is short (pytest prints it in assertion
explanations).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos.ledger import LedgerVerdict
from chaos.scenarios._clock import FaultWindow
from chaos.scenarios._history import Op
from plain_pool._redact import redact, redact_data

#: The reference target: its rows keep the scenario's bare name.
REFERENCE = "plain_pool"


@dataclass(frozen=True, repr=False)
class ScenarioResult:
    """Everything the report needs; ``as_dict()`` is JSON-friendly (and free of secrets)."""

    name: str
    faults: str
    verdict: str
    violations: list[str]
    windows: list[FaultWindow]
    ops: list[Op]
    t0: float
    duration_s: float
    seed: int | None
    seeded: bool
    ledger: LedgerVerdict | None
    sessions: str | None
    notes: list[str]
    metrics: dict[str, Any]
    hung_threads: int = 0
    ports: list[int] = field(default_factory=list)
    fault_journal: str = ""
    #: Passwords of the settings the scenario ran with: masked in everything printed.
    secrets: tuple[str, ...] = ()
    #: The target it ran on (its registered name or dotted path) and its description.
    target: str = ""
    target_description: str = ""

    def __repr__(self) -> str:
        # Short on purpose: pytest prints it in assertion explanations.
        return f"<ScenarioResult {self.name} {self.verdict}>"

    @property
    def errors(self) -> list[Op]:
        return [o for o in self.ops if not o.ok]

    @property
    def recovery_s(self) -> float | None:
        values = [w.recovery_s for w in self.windows if w.recovery_s is not None]
        return max(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        kinds = Counter(o.error_type for o in self.errors)
        ops = self.ops
        if len(ops) > 4000:  # keep reports small: every error, a sample of successes
            oks = [o for o in ops if o.ok]
            step = max(1, len(oks) // 3000)
            ops = sorted([*oks[::step], *self.errors], key=lambda o: o.started)
        events = []
        for w in self.windows:
            t = w.applied_at - self.t0
            accepting = w.detail.get("accepting_again_at")
            end = (w.ended_at - self.t0) if w.ended_at and w.step.hold else None
            events.append({"t": round(t, 4), "kind": "fault", "label": w.step.fault, "end": end})
            if accepting:
                events.append(
                    {"t": round(accepting - self.t0, 4), "kind": "accepting", "label": "accepting"}
                )
            elif w.ended_at and w.step.hold:
                events.append(
                    {"t": round(w.ended_at - self.t0, 4), "kind": "heal", "label": "healed"}
                )
        return redact_data(self._as_dict(list(ops), kinds, events), self.secrets)

    @property
    def label(self) -> str:
        """The scenario's name, with the target's when it is not the reference
        (``restart-fast-idle@psycopg_pool``): rows and timeline files of one
        scenario on several targets stay apart."""
        if self.target in ("", REFERENCE):
            return self.name
        return f"{self.name}@{re.sub(r'[^A-Za-z0-9_.-]', '_', self.target)}"

    def _as_dict(self, ops: list[Op], kinds: Counter, events: list[dict]) -> dict[str, Any]:
        return {
            "name": self.label,
            "scenario": self.name,
            "target": self.target,
            "faults": self.faults,
            "verdict": self.verdict,
            "violations": list(self.violations),
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 4),
            "recoveries_s": [
                None if w.recovery_s is None else round(w.recovery_s, 4) for w in self.windows
            ],
            "errors_seen": len(self.errors),
            "error_kinds": dict(kinds),
            "ops": len(self.ops),
            "ok_ops": sum(o.ok for o in self.ops),
            "duration_s": round(self.duration_s, 3),
            "seed": self.seed,
            "seeded": self.seeded,
            "ledger": self.ledger.summary() if self.ledger else None,
            "sessions": self.sessions,
            "notes": list(self.notes),
            "metrics": self.metrics,
            "hung_threads": self.hung_threads,
            "ports": self.ports,
            "fault_journal": self.fault_journal,
            "timeline": {
                "events": events,
                "ops": [
                    [
                        round(o.started - self.t0, 4),
                        round(o.ended - self.t0, 4),
                        int(o.ok),
                        o.worker,
                    ]
                    for o in ops
                ],
            },
        }

    def explain(self) -> str:
        seed = f", seed {self.seed}" if self.seeded else ""
        on = f" on {self.target}" if self.target else ""
        lines = [f"scenario {self.name}{on}: {self.verdict.upper()} (faults: {self.faults}{seed})"]
        if self.target_description:
            lines.append(f"  target: {self.target_description}")
        lines += [f"  - {v}" for v in self.violations]
        if self.ledger:
            lines.append(f"  {self.ledger.summary()}")
        if self.sessions:
            lines.append(f"  {self.sessions}")
        lines += [f"  note: {n}" for n in self.notes]
        errors = Counter(f"{o.error_type}: {o.error}" for o in self.errors)
        lines += [f"  error x{n}: {e}" for e, n in errors.most_common(5)]
        if self.fault_journal:
            lines.append("  fault journal:\n" + self.fault_journal)
        return redact("\n".join(lines), self.secrets)
