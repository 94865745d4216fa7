"""The scenario checkers are pure: hand-made histories in, findings out.

Each checker is shown to pass a good history and to flag the bad one next to
it (so a checker that stops catching its violation fails here, without a
server): recovery (never, too slow), caller errors (in flight or not, per
pooled connection, caps), the ledger (lost, phantom), the sessions left, a
scenario's own checks, and their composition into a verdict built once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from chaos.faults.outcomes import Outcome
from chaos.ledger import LedgerEntry
from chaos.scenarios import Evidence, Expectations, FaultStep, Finding, Op, Scenario
from chaos.scenarios._checkers import (
    check_caller_errors,
    check_extra,
    check_faults_applied,
    check_ledger,
    check_recovery,
    check_sessions,
    classify_errors,
    compose,
    with_recoveries,
)
from chaos.scenarios._clock import FaultWindow
from chaos.scenarios._history import History
from chaos.scenarios._result import ScenarioResult
from chaos.scenarios._runner import SCENARIO_POOL, target_options

RESTART = FaultStep(at=1.0, fault="restart_fast")


def ok(worker: int, started: float, ended: float, checked_out: float | None = None) -> Op:
    return Op(worker, "select", started, ended, ok=True, checked_out=checked_out or started)


def err(worker: int, started: float, ended: float, checked_out: float | None) -> Op:
    return Op(
        worker,
        "select",
        started,
        ended,
        ok=False,
        checked_out=checked_out,
        error_type="OperationalError",
        error="server closed the connection unexpectedly",
    )


def evidence(ops: list[Op], windows: list[FaultWindow], **metrics: object) -> Evidence:
    return Evidence("hand-made", 0.0, tuple(ops), with_recoveries(ops, windows), metrics)


# -- recovery ---------------------------------------------------------------------------------


def test_recovery_is_from_the_end_of_the_fault_to_the_first_success_after_it():
    ops = [ok(0, 0.5, 0.9), ok(0, 2.0, 2.04), ok(0, 2.1, 2.3)]
    windows = [FaultWindow(RESTART, applied_at=1.0, ended_at=2.0), FaultWindow(RESTART, 3.0)]
    first, still_open = with_recoveries(ops, windows)
    assert first.recovery_s == pytest.approx(0.04)
    assert still_open.recovery_s is None  # never ended: nothing to measure
    assert windows[0].recovery_s is None  # the input is not changed


def test_recovery_within_budget_passes_and_too_slow_or_never_fails():
    fast = evidence([ok(0, 2.0, 2.04)], [FaultWindow(RESTART, 1.0, 2.0)])
    assert check_recovery(fast, Expectations(max_recovery_s=0.5)).violations == ()

    slow = evidence([ok(0, 2.0, 2.9)], [FaultWindow(RESTART, 1.0, 2.0)])
    (violation,) = check_recovery(slow, Expectations(max_recovery_s=0.5)).violations
    assert violation == "recovery after restart_fast()@1s took 900 ms > 500 ms"

    never = evidence([ok(0, 0.1, 0.2), err(0, 2.0, 2.1, 2.0)], [FaultWindow(RESTART, 1.0, 2.0)])
    assert check_recovery(never, Expectations()).violations == (
        "never recovered after restart_fast()@1s",
    )


def test_a_fault_that_could_not_be_applied_is_a_violation():
    window = FaultWindow(RESTART, 1.0, 1.0, error="restart_fast()@1s could not be applied: x")
    assert check_faults_applied(evidence([], [window])).violations == (window.error,)


# -- caller errors ------------------------------------------------------------------------------


def test_in_flight_errors_held_their_connection_before_the_fault_ended():
    window = FaultWindow(RESTART, applied_at=1.0, ended_at=2.0)
    held = err(0, 0.9, 1.1, checked_out=0.95)  # held across the fault: in flight
    again = err(0, 1.2, 1.3, checked_out=1.25)  # same worker, same fault: only one allowed
    never_held = err(1, 1.5, 1.6, checked_out=None)  # a checkout that failed
    after = err(2, 2.5, 2.6, checked_out=2.5)  # a dead connection handed out after the fault
    in_flight, other = classify_errors(evidence([held, again, never_held, after], [window]))
    assert in_flight == [held]
    assert other == [again, never_held, after]


def test_caller_errors_none_in_flight_and_per_connection():
    window = FaultWindow(RESTART, applied_at=1.0, ended_at=2.0)
    in_flight = err(0, 0.9, 1.1, checked_out=0.95)
    handed_out_dead = err(1, 2.5, 2.6, checked_out=2.5)
    good = ok(0, 3.0, 3.1)

    only_in_flight = evidence([in_flight, good], [window])
    finding = check_caller_errors(only_in_flight, Expectations(caller_errors="in_flight"), 4)
    assert finding.violations == ()
    assert dict(finding.metrics) == {"errors_in_flight": 1, "errors_other": 0}
    (none,) = check_caller_errors(only_in_flight, Expectations(caller_errors="none"), 4).violations
    assert none == "1 caller error(s), none allowed: OperationalError x1"

    dead = evidence([in_flight, handed_out_dead, good], [window])
    (violation,) = check_caller_errors(dead, Expectations(caller_errors="in_flight"), 4).violations
    assert violation.startswith("1 caller error(s) not in flight at a fault (e.g. select by")
    assert "checked out t=2.500s" in violation

    # per_connection: one per pooled connection per fault, beyond those in flight
    dead_ones = [err(w, 2.5, 2.6, checked_out=2.5) for w in range(1, 4)]
    per = Expectations(caller_errors="per_connection")
    assert check_caller_errors(evidence([*dead_ones, good], [window]), per, 3).violations == ()
    (too_many,) = check_caller_errors(evidence([*dead_ones, good], [window]), per, 2).violations
    assert too_many == (
        "3 caller errors beyond those in flight; at most one per pooled connection (2) allowed"
    )


def test_error_cap_and_minimum_successes():
    window = FaultWindow(RESTART, applied_at=1.0, ended_at=2.0)
    errors = [err(w, 0.9, 1.1, checked_out=0.95) for w in range(3)]
    found = check_caller_errors(evidence(errors, [window]), Expectations(max_errors=2), 4)
    assert found.violations == (
        "3 caller errors > 2 allowed",
        "only 0 successful operation(s), expected 1+",
    )


# -- ledger and sessions ------------------------------------------------------------------------


def test_ledger_lost_and_phantom_writes():
    entries = [
        LedgerEntry("run-0", Outcome.OK),
        LedgerEntry("run-1", Outcome.FAIL),
        LedgerEntry("run-2", Outcome.INFO),
    ]
    verdict, finding = check_ledger(entries, Counter({"run-0": 1, "run-2": 1}))
    assert verdict.ok and finding.violations == ()

    verdict, finding = check_ledger(entries, Counter({"run-1": 1}))  # lost run-0, phantom run-1
    assert verdict.lost == ("run-0",) and verdict.phantoms == ("run-1",)
    assert finding.violations == tuple(verdict.problems()) and len(finding.violations) == 2


def test_sessions_left_beyond_what_the_pool_holds():
    verdict, finding = check_sessions("app-1", in_server=4, pool_holds=4)
    assert verdict.ok and finding.violations == ()
    verdict, finding = check_sessions("app-1", in_server=5, pool_holds=4)
    assert finding.violations == ("sessions[app-1]: 5 in pg_stat_activity, pool holds 4: LEAK",)


# -- a scenario's own checks, the verdict ---------------------------------------------------------


def test_extra_checks_return_violations_or_findings_and_cannot_change_the_evidence():
    ev = evidence([ok(0, 0.0, 0.1)], [], pool={"checks_failed": 2})

    def as_list(e: Evidence) -> list[str]:
        return [] if e.metrics["pool"]["checks_failed"] else ["nothing discarded"]

    def as_finding(e: Evidence) -> Finding:
        return Finding.of("slow", median_ms=12.5)

    def mutates(e: Evidence) -> list[str]:
        e.metrics["sneaky"] = 1  # type: ignore[index]
        return []

    assert check_extra(ev, as_list) == Finding()
    assert check_extra(ev, as_finding) == Finding(("slow",), {"median_ms": 12.5})
    (raised,) = check_extra(ev, mutates).violations
    assert raised.startswith("check mutates raised TypeError")
    assert "sneaky" not in ev.metrics
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.ops[0].ok = False  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ev.ops.append(ok(1, 0.0, 0.1))  # type: ignore[attr-defined]


def test_the_verdict_is_composed_once_from_every_finding():
    clean = compose([Finding(), Finding.of(errors_in_flight=0)])
    assert clean.verdict == "pass" and clean.violations == ()
    verdict = compose(
        [
            Finding.of("heal_all failed: x"),
            Finding(("lost",), {"a": 1}, ("note 1",)),
            Finding((), {"a": 2}, ("note 2",)),
        ]
    )
    assert verdict.verdict == "fail"
    assert verdict.violations == ("heal_all failed: x", "lost")
    assert dict(verdict.metrics) == {"a": 2} and verdict.notes == ("note 1", "note 2")


def test_a_result_is_immutable():
    result = ScenarioResult(
        name="r",
        faults="-",
        verdict="pass",
        violations=[],
        windows=[],
        ops=[],
        t0=0.0,
        duration_s=1.0,
        seed=None,
        seeded=False,
        ledger=None,
        sessions=None,
        notes=[],
        metrics={},
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verdict = "fail"  # type: ignore[misc]


# -- the history ------------------------------------------------------------------------------


def test_history_records_frozen_operations_and_swallows_their_errors():
    history = History()
    with history.op("select", worker=3) as op:
        op.checked_out(at=1.5)
    with history.op("write", worker=3) as failed:
        raise RuntimeError("boom\nsecond line")
    snapshot = history.view()
    with history.op("later"):
        pass
    assert [o.kind for o in snapshot] == ["select", "write"] and len(history) == 3
    assert op.ok and op.op.checked_out == 1.5
    assert not failed.ok and failed.op.error_type == "RuntimeError" and failed.op.error == "boom"
    with pytest.raises(TypeError):
        history.add("not an op")  # type: ignore[arg-type]
    with history.op("open") as handle:
        inside = pytest.raises(RuntimeError, match="has not ended")
        with inside:
            handle.op  # noqa: B018 - the record does not exist inside the block
    assert inside.excinfo is not None and handle.ok


# -- the target options a scenario asks for -------------------------------------------------------


def test_scenario_fields_become_target_options():
    def workload(ctx: object) -> None:
        return None

    base = Scenario(name="s", faults=(), workload=workload, expect=Expectations())
    options, notes = target_options(base)
    assert (options.min_size, options.max_size, options.timeout) == (
        SCENARIO_POOL["min_size"],
        SCENARIO_POOL["max_size"],
        SCENARIO_POOL["timeout"],
    )
    assert options.health_checks and options.variant is None and notes == []

    scenario = dataclasses.replace(
        base,
        pool={"max_size": 2, "reconnect_timeout": 1.0},
        options={"connect_options": {"options": "-c statement_timeout=1000"}},
        settings={
            "POSTGRES_CONN_HEALTH_CHECKS": False,
            "POSTGRES_OPTIONS": {"connect_timeout": None},
            "POSTGRES_PASSWORD": "secret-not-noted",
        },
        variant="CommitOnReturn",
    )
    options, notes = target_options(scenario)
    assert (options.max_size, options.reconnect_timeout, options.health_checks) == (2, 1.0, False)
    assert options.variant == "CommitOnReturn"
    assert options.connect_options == {
        "connect_timeout": None,
        "options": "-c statement_timeout=1000",
    }
    assert notes == [
        "scenario settings without a target option, not applied: ['POSTGRES_PASSWORD']"
    ]


class _FrameworkError(Exception):
    """A framework's wrapper (Django's django.db.utils.OperationalError keeps __cause__)."""


def test_history_records_an_error_by_its_root_cause():
    """Django raises a pool timeout as its own OperationalError: the record must still read
    PoolTimeout, which the timeout contracts count, and say how it was raised."""
    from psycopg_pool import PoolTimeout

    history = History()
    with history.op("select", 1):
        try:
            raise PoolTimeout("couldn't get a connection after 1.50 sec")
        except PoolTimeout as exc:
            raise _FrameworkError("couldn't get a connection after 1.50 sec") from exc
    (op,) = history.view()
    assert op.error_type == "PoolTimeout"
    assert op.error == "(raised as _FrameworkError) couldn't get a connection after 1.50 sec"
