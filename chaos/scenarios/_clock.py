"""The fault clock: applies a scenario's schedule at its offsets and records each fault's window.

Jepsen's nemesis, on a schedule: each :class:`~chaos.scenarios.FaultStep` is
applied at its offset from ``t0`` through a :class:`chaos.faults.Nemesis` (so
the fault journal has every apply and heal), a held one is healed ``hold``
seconds later, and ``on_ended()`` is called as each fault ends (a server back
accepting, a network fault healed) so the runner can start its recovery probe.
A fault with no hold that is still active when the schedule ends stays open
(the runner's ``heal_all`` ends it; no recovery is measured for it).

Each fault becomes one frozen :class:`FaultWindow` once the clock is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.scenarios._registry import FaultStep

#: How often the clock wakes up while waiting for the next step or heal.
TICK_S = 0.05


@dataclass(frozen=True)
class FaultWindow:
    """A fault as the verdict sees it: from apply to the moment it ended.

    ``ended_at``: the server accepting again (``detail["accepting_again_at"]``) or
    the heal; None while (or if) it never ended. ``recovery_s``: from ``ended_at``
    to the first successful operation after it, filled in by the runner
    (:func:`chaos.scenarios._checkers.with_recoveries`). ``error``: why the fault
    could not be applied or healed.
    """

    step: FaultStep
    applied_at: float
    ended_at: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    recovery_s: float | None = None
    error: str | None = None


class _Open:
    """A window while the clock still runs it (mutable here only)."""

    def __init__(self, step: FaultStep, applied_at: float) -> None:
        self.step, self.applied_at = step, applied_at
        self.ended_at: float | None = None
        self.detail: dict[str, Any] = {}
        self.error: str | None = None

    def freeze(self) -> FaultWindow:
        return FaultWindow(
            self.step, self.applied_at, self.ended_at, dict(self.detail), None, self.error
        )


class FaultClock:
    """Runs ``schedule`` against ``nemesis``; :meth:`windows` is the result."""

    def __init__(
        self,
        nemesis: Any,
        schedule: Sequence[FaultStep],
        *,
        on_ended: Callable[[], None] = lambda: None,
    ) -> None:
        self.nemesis = nemesis
        self.schedule = sorted(schedule, key=lambda s: s.at)
        self.on_ended = on_ended
        self.t0 = time.monotonic()
        self._windows: list[_Open] = []
        self._pending: list[tuple[float, _Open, Any]] = []  # (heal at, window, handle)

    def run(self, t0: float, until: float) -> None:
        """Apply every step at ``t0 + step.at``, heal the held ones, return at ``t0 + until``
        (after healing what is still held)."""
        self.t0 = t0
        if self.nemesis is not None:
            self.nemesis.schedule.t0 = t0
        for step in self.schedule:
            self._wait_until(step.at)
            window, handle = self._apply(step)
            self._windows.append(window)
            if handle is not None and step.hold is not None:
                self._pending.append((step.at + step.hold, window, handle))
            elif window.ended_at is not None:
                self.on_ended()
        self._wait_until(until)
        for _, window, handle in list(self._pending):
            self._heal(window, handle)
        self._pending.clear()

    def windows(self) -> tuple[FaultWindow, ...]:
        return tuple(w.freeze() for w in self._windows)

    def _wait_until(self, offset: float) -> None:
        while True:
            now = time.monotonic() - self.t0
            due = [h for h in self._pending if h[0] <= now]
            for item in due:
                self._pending.remove(item)
                self._heal(item[1], item[2])
            if now >= offset:
                return
            nxt = min([offset, *[h[0] for h in self._pending]])
            time.sleep(max(0.0, min(nxt - now, TICK_S)))

    def _apply(self, step: FaultStep) -> tuple[_Open, Any]:
        from chaos.faults import make

        window = _Open(step, time.monotonic())
        try:
            fault = make(step.fault, **step.params)
            handle = self.nemesis.apply(fault)
        except Exception as exc:
            window.error = f"{step.describe()} could not be applied: {type(exc).__name__}: {exc}"
            window.ended_at = time.monotonic()
            return window, None
        window.applied_at = handle.applied_at
        window.detail = dict(handle.detail)
        if not handle.active:  # instantaneous: over when apply returned
            window.ended_at = window.detail.get("accepting_again_at") or time.monotonic()
            return window, None
        return window, handle

    def _heal(self, window: _Open, handle: Any) -> None:
        try:
            handle.heal()
        except Exception as exc:
            window.error = f"heal of {window.step.describe()} failed: {exc}"
        detail = getattr(handle, "detail", {}) or {}
        window.ended_at = detail.get("accepting_again_at") or time.monotonic()
        window.detail.update(detail)
        self.on_ended()
