"""The fault schedule: a journal of every apply and heal, with monotonic times.

A failing test prints it ("the fault schedule") next to the Hypothesis
reproduction, and scenario reports draw a timeline from :meth:`intervals`.
Times are ``time.monotonic()`` values, the clock the servers' accept-again
times use too; :meth:`format` shows them relative to the schedule's start.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from chaos.faults.base import Fault

Action = Literal["apply", "heal", "apply-failed", "heal-failed"]


@dataclass(frozen=True)
class FaultEvent:
    """One journal entry: ``at`` is when the action started, ``duration`` how long it took."""

    at: float
    action: Action
    key: str
    fault: Fault
    duration: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self, t0: float = 0.0) -> dict[str, Any]:
        """JSON-friendly form (times relative to ``t0``)."""
        detail = {
            k: (round(v - t0, 6) if k.endswith("_at") and isinstance(v, float) else v)
            for k, v in self.detail.items()
        }
        return {
            "at": round(self.at - t0, 6),
            "action": self.action,
            "key": self.key,
            "fault": repr(self.fault),
            "name": self.fault.name,
            "target": self.fault.target_kind,
            "duration": round(self.duration, 6),
            "detail": detail,
            "error": self.error,
        }


@dataclass(frozen=True)
class FaultInterval:
    """One application as a span for a timeline; ``end`` is None while still active."""

    key: str
    fault: Fault
    start: float
    end: float | None
    instantaneous: bool


class FaultSchedule:
    """Append-only, thread-safe journal of fault actions."""

    def __init__(self, *, t0: float | None = None):
        self.t0 = time.monotonic() if t0 is None else t0
        self._events: list[FaultEvent] = []
        self._lock = threading.Lock()

    def record(self, event: FaultEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[FaultEvent]:
        with self._lock:
            return list(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __bool__(self) -> bool:
        return True

    def faults(self) -> list[Fault]:
        """The faults applied, in order (for pasting into a regression test)."""
        return [e.fault for e in self.events if e.action == "apply"]

    def intervals(self) -> list[FaultInterval]:
        """Each successful application with its heal time (None if never healed)."""
        spans: dict[str, FaultInterval] = {}
        for e in self.events:
            if e.action == "apply":
                instant = e.fault.effects.instantaneous
                end = e.at + e.duration if instant else None
                spans[e.key] = FaultInterval(e.key, e.fault, e.at, end, instant)
            elif e.action == "heal" and e.key in spans and spans[e.key].end is None:
                span = spans[e.key]
                spans[e.key] = FaultInterval(span.key, span.fault, span.start, e.at, False)
        return list(spans.values())

    def active(self) -> list[FaultInterval]:
        """Applications not healed yet."""
        return [i for i in self.intervals() if i.end is None]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [e.as_dict(self.t0) for e in self.events]

    def format(self) -> str:
        """Human-readable journal; what a failing test prints as "the fault schedule"."""
        events = self.events
        if not events:
            return "fault schedule: no faults applied"
        lines = [f"fault schedule ({len(events)} events; seconds since start):"]
        for e in events:
            d = e.as_dict(self.t0)
            extra = ", ".join(f"{k}={v}" for k, v in d["detail"].items())
            line = (
                f"  {'+' + format(d['at'], '.3f') + 's':>10}  {e.action:<12} {e.key:<8} {e.fault!r}"
                f"  ({e.duration * 1000:.0f} ms)"
            )
            if extra:
                line += f"  {extra}"
            if e.error:
                line += f"  ERROR {e.error}"
            lines.append(line)
        still = self.active()
        if still:
            lines.append("  still active: " + ", ".join(f"{i.key} {i.fault!r}" for i in still))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"<FaultSchedule {len(self)} events, {len(self.active())} active>"
