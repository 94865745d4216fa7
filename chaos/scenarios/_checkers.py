"""Pure checkers: a scenario's evidence in, findings out; the verdict is composed once.

Jepsen's checkers: each reads what happened (:class:`Evidence`: the frozen
history, the fault windows, the metrics the workload and the pool recorded)
and returns a :class:`Finding` (violations, metrics, notes). None of them does
I/O or changes its input, so each is unit-tested on hand-made histories
(tests/unit/test_scenario_checkers.py). The runner observes what needs a
server (the ledger table, the sessions left) and passes the observations in.

- :func:`check_faults_applied`: a fault that could not be applied or healed;
- :func:`check_recovery`: every ended fault was followed by a success, within
  ``Expectations.max_recovery_s``;
- :func:`check_caller_errors`: ``caller_errors`` (none / in flight / per pooled
  connection), ``max_errors`` and ``min_ok``;
- :func:`check_ledger`: no acknowledged write lost, no abandoned one committed;
- :func:`check_sessions`: no session left beyond what the pool holds;
- :func:`check_extra`: a scenario's own check (returns violations or a Finding).

:func:`compose` folds the findings into a :class:`Verdict`: ``fail`` when any
violation was found, else ``pass``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from chaos.ledger import LedgerEntry, LedgerVerdict, SessionVerdict
from chaos.ledger import check as ledger_check
from chaos.ledger import check_sessions as sessions_check
from chaos.scenarios._clock import FaultWindow
from chaos.scenarios._history import Op

if TYPE_CHECKING:  # pragma: no cover
    from chaos.scenarios._registry import Expectations


@dataclass(frozen=True)
class Evidence:
    """What the checkers read. Same attribute names as ScenarioResult (``ops``,
    ``errors``, ``windows``, ``t0``, ``metrics``, ``hung_threads``), so a check
    written against a result reads evidence too; nothing here can be changed."""

    name: str
    t0: float
    ops: tuple[Op, ...]
    windows: tuple[FaultWindow, ...]
    metrics: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    hung_threads: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def errors(self) -> list[Op]:
        return [o for o in self.ops if not o.ok]


@dataclass(frozen=True)
class Finding:
    """What one checker found: violations (empty: fine), metrics and notes for the report."""

    violations: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, *violations: str, **metrics: Any) -> Finding:
        return cls(tuple(violations), metrics)


@dataclass(frozen=True)
class Verdict:
    """The findings composed: ``pass`` / ``fail``, every violation, metrics and notes."""

    verdict: str
    violations: tuple[str, ...]
    metrics: Mapping[str, Any]
    notes: tuple[str, ...]


def compose(findings: Iterable[Finding]) -> Verdict:
    """Fold findings in order (a later metric of the same name wins)."""
    violations: list[str] = []
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    for finding in findings:
        violations += finding.violations
        metrics.update(finding.metrics)
        notes += finding.notes
    return Verdict("fail" if violations else "pass", tuple(violations), metrics, tuple(notes))


# -- recovery ---------------------------------------------------------------------------------


def with_recoveries(ops: Sequence[Op], windows: Sequence[FaultWindow]) -> tuple[FaultWindow, ...]:
    """Each ended window with ``recovery_s``: from its end to the first success after it."""
    result = []
    for window in windows:
        recovery = None
        if window.ended_at is not None:
            oks = [o.ended for o in ops if o.ok and o.ended >= window.ended_at]
            recovery = (min(oks) - window.ended_at) if oks else None
        result.append(dataclasses.replace(window, recovery_s=recovery))
    return tuple(result)


def check_faults_applied(evidence: Evidence) -> Finding:
    return Finding(tuple(w.error for w in evidence.windows if w.error))


def check_recovery(evidence: Evidence, expect: Expectations) -> Finding:
    """Every fault that ended was followed by a success (within ``max_recovery_s``).

    Reads ``recovery_s`` of the windows (:func:`with_recoveries`)."""
    violations = [
        f"never recovered after {w.step.describe()}"
        for w in evidence.windows
        if w.ended_at is not None and w.recovery_s is None
    ]
    if expect.max_recovery_s is not None:
        violations += [
            f"recovery after {w.step.describe()} took "
            f"{w.recovery_s * 1000:.0f} ms > {expect.max_recovery_s * 1000:.0f} ms"
            for w in evidence.windows
            if w.recovery_s is not None and w.recovery_s > expect.max_recovery_s
        ]
    return Finding(tuple(violations))


# -- caller errors ------------------------------------------------------------------------------


def classify_errors(evidence: Any) -> tuple[list[Op], list[Op]]:
    """Split caller errors into (in flight at a fault, everything else).

    In flight: the operation checked its connection out before a fault ended
    and failed after that fault began; at most one per worker per fault.
    ``evidence``: anything with ``errors`` and ``windows`` (Evidence, ScenarioResult).
    """
    in_flight: list[Op] = []
    other: list[Op] = []
    used: set[tuple[int, int]] = set()
    for op in sorted(evidence.errors, key=lambda o: o.ended):
        matched = False
        for i, w in enumerate(evidence.windows):
            end = w.ended_at if w.ended_at is not None else float("inf")
            if (
                op.checked_out is not None
                and op.checked_out < end
                and op.ended >= w.applied_at
                and (i, op.worker) not in used
            ):
                used.add((i, op.worker))
                matched = True
                break
        (in_flight if matched else other).append(op)
    return in_flight, other


def check_caller_errors(evidence: Evidence, expect: Expectations, pool_max_size: int) -> Finding:
    """``caller_errors``, ``max_errors`` and ``min_ok`` of the expectations.

    ``per_connection``: beyond the errors in flight, at most one per pooled
    connection (``pool_max_size``) per fault.
    """
    errors = evidence.errors
    in_flight, other = classify_errors(evidence)
    violations = []
    if expect.caller_errors == "none" and errors:
        violations.append(f"{len(errors)} caller error(s), none allowed: {_top(errors)}")
    elif expect.caller_errors == "in_flight" and other:
        violations.append(
            f"{len(other)} caller error(s) not in flight at a fault (e.g. "
            f"{describe_op(evidence.t0, other[0])})"
        )
    elif expect.caller_errors == "per_connection":
        allowed = pool_max_size * max(1, len(evidence.windows))
        if len(other) > allowed:
            violations.append(
                f"{len(other)} caller errors beyond those in flight; at most one per pooled "
                f"connection ({allowed}) allowed"
            )
    if expect.max_errors is not None and len(errors) > expect.max_errors:
        violations.append(f"{len(errors)} caller errors > {expect.max_errors} allowed")
    ok_ops = sum(o.ok for o in evidence.ops)
    if ok_ops < expect.min_ok:
        violations.append(f"only {ok_ops} successful operation(s), expected {expect.min_ok}+")
    return Finding(
        tuple(violations), {"errors_in_flight": len(in_flight), "errors_other": len(other)}
    )


def describe_op(t0: float, op: Op) -> str:
    held = (
        "no connection" if op.checked_out is None else f"checked out t={op.checked_out - t0:.3f}s"
    )
    return (
        f"{op.kind} by worker {op.worker} t={op.started - t0:.3f}.."
        f"{op.ended - t0:.3f}s ({held}): {op.error_type}: {op.error}"
    )


def _top(errors: Sequence[Op]) -> str:
    kinds = Counter(f"{o.error_type}" for o in errors)
    return ", ".join(f"{k} x{n}" for k, n in kinds.most_common(3))


# -- ledger and sessions (observed by the runner, judged here) --------------------------------


def check_ledger(
    entries: Sequence[LedgerEntry], committed: Mapping[str, int]
) -> tuple[LedgerVerdict, Finding]:
    """The ledger's records against the ids the table holds (``committed``: id -> rows)."""
    verdict = ledger_check(list(entries), committed)
    return verdict, Finding(() if verdict.ok else tuple(verdict.problems()))


def check_sessions(
    application_name: str, in_server: int, pool_holds: int
) -> tuple[SessionVerdict, Finding]:
    """Sessions of the target's ``application_name`` left beyond what its pools hold."""
    verdict = sessions_check(application_name, in_server, pool_holds)
    return verdict, Finding(() if verdict.ok else (verdict.summary(),))


# -- a scenario's own checks ------------------------------------------------------------------


def check_extra(evidence: Evidence, extra: Callable[[Evidence], Any]) -> Finding:
    """Run one ``Expectations.extra`` check: it returns violations (a list of str) or a
    :class:`Finding`; one that raises is itself a violation."""
    try:
        found = extra(evidence)
    except Exception as exc:
        return Finding((f"check {getattr(extra, '__name__', extra)} raised {exc!r}",))
    if isinstance(found, Finding):
        return found
    return Finding(tuple(found or ()))
