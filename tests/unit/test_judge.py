"""The error judge (chaos.machines.judge) on real exception objects, without a server.

The verdicts plain_pool's machines have always reached (one test per branch of
the judgement), and the property the judge owes third-party targets: a
wrapped error is judged like the psycopg error under it. Its canary runs the
same checks against a judge that no longer unwraps and asserts they catch it.
"""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolClosed, PoolTimeout

from chaos.faults import outcomes
from chaos.faults.base import NO_EFFECTS
from chaos.faults.network import Down, Latency
from chaos.faults.outcomes import Outcome
from chaos.machines import judge as judge_module
from chaos.machines.errors import (
    DeadConnectionHandedOut,
    PreparedStatementsBroken,
    UnexplainedError,
    WrongPool,
)
from chaos.machines.judge import Facts, Verdict, judge
from tests.unit.test_root_cause import server_error, wrapped_by_cause, wrapped_by_orig

DOWN = Down()
LATENCY = Latency()


def facts(step: str = "dirty", **kw) -> Facts:
    """A tracked request holding a connection no fault has touched, unless ``kw`` says else."""
    base = {"request": "Request(1)", "tracked": True, "holding": step != "checkout"}
    base.update(kw)
    return Facts(step=step, **base)


def under(fault, **kw) -> dict:
    return {"effects": fault.effects, "active_faults": (fault,), **kw}


def lost() -> psycopg.Error:
    return errors.AdminShutdown("terminating connection due to administrator command")


# -- the branches, on plain psycopg errors (plain_pool's) ------------------------------------
def test_an_error_no_fault_explains_is_unexplained():
    verdict = judge(errors.DivisionByZero("division by zero"), facts())
    assert verdict.violation is UnexplainedError and not verdict.allowed
    assert "dirty of Request(1) failed with no fault to explain it: DivisionByZero" in (
        verdict.message
    )
    with pytest.raises(UnexplainedError) as raised:
        verdict.raise_for(ValueError("the error"))
    assert str(raised.value.__cause__) == "the error"


def test_a_lost_write_under_a_fault_is_info_and_resyncs():
    verdict = judge(lost(), facts("write_uncommitted", wrote=True, **under(DOWN)))
    assert verdict == Verdict(Outcome.INFO, resync=True)


def test_the_probe_is_not_resynced():
    verdict = judge(lost(), facts("checkout", tracked=False, request="Request(0)", **under(DOWN)))
    assert verdict == Verdict(Outcome.FAIL)


def test_a_lost_connection_that_was_out_during_a_fault():
    assert judge(lost(), facts("give_back", exposed=True)) == Verdict(Outcome.FAIL, resync=True)
    assert judge(lost(), facts("give_back", broken=True)).allowed
    assert judge(lost(), facts("give_back")).violation is UnexplainedError
    refused = errors.UniqueViolation("duplicate key")
    assert judge(refused, facts("give_back", exposed=True)).violation is UnexplainedError


def test_a_statement_timeout_under_latency():
    canceled = errors.QueryCanceled("canceling statement due to statement timeout")
    assert judge(canceled, facts(**under(LATENCY))) == Verdict(Outcome.FAIL)
    assert judge(canceled, facts()).violation is UnexplainedError


def test_a_checkout_timeout():
    timeout = PoolTimeout("couldn't get a connection after 1.00 sec")
    assert judge(timeout, facts("checkout", pool_exhausted=True)) == Verdict(Outcome.FAIL)
    assert judge(timeout, facts("checkout", recovery_pending=True)).allowed
    assert judge(timeout, facts("checkout", **under(LATENCY))).allowed
    assert judge(timeout, facts("checkout")).violation is UnexplainedError


def test_a_dead_connection_handed_out():
    with_checks = judge(lost(), facts("checkout", health_checks=True))
    assert with_checks.violation is DeadConnectionHandedOut
    assert "(health checks on)" in with_checks.message
    once = judge(lost(), facts("checkout", health_checks=False, dead_handouts_allowed=1))
    assert once == Verdict(Outcome.FAIL, spends_dead_handout=True, resync=True)
    twice = judge(lost(), facts("checkout", health_checks=False, dead_handouts_allowed=0))
    assert twice.violation is DeadConnectionHandedOut
    assert "more often than once per pooled connection" in twice.message


def test_a_closed_pool_is_never_explained():
    closed = PoolClosed("the pool 'pool-1' is already closed")
    verdict = judge(closed, facts("checkout", **under(DOWN)))
    assert verdict.violation is UnexplainedError and "used a closed pool" in verdict.message


def test_broken_prepared_statements():
    missing = errors.InvalidSqlStatementName('prepared statement "_pg3_0" does not exist')
    verdict = judge(missing, facts("repeat_query", **under(DOWN)))
    assert verdict.violation is PreparedStatementsBroken
    assert verdict.message.startswith("repeat_query: InvalidSqlStatementName")


def test_a_connection_given_back_to_another_pool():
    refused = ValueError("can't return connection to pool 'pool-2', it doesn't belong here")
    verdict = judge(refused, facts("finish", lender=1, current_pool=2))
    assert verdict.violation is WrongPool
    assert "(lent by pool 1, current pool 2)" in verdict.message
    assert judge(refused, facts("checkout")).violation is UnexplainedError


def test_pgbouncer_query_wait_timeout_is_a_pool_timeout():
    """PgBouncer found no server connection in time (FATAL 08P01, no ``V`` field)."""
    waited = server_error("08P01", "query_wait_timeout", "FATAL", nonlocalized=False)
    assert judge(waited, facts("checkout", pool_exhausted=True)) == Verdict(
        Outcome.FAIL, resync=True
    )
    write = judge(waited, facts("write_uncommitted", wrote=True, **under(LATENCY)))
    assert write == Verdict(Outcome.FAIL, resync=True)  # nothing reached a server


def test_pgbouncer_fatal_is_a_lost_connection():
    crashed = server_error("08P01", "server conn crashed?", "FATAL", nonlocalized=False)
    assert judge(crashed, facts("write_uncommitted", wrote=True, **under(DOWN))) == Verdict(
        Outcome.INFO, resync=True
    )
    full = server_error(
        "53300", "no more connections allowed (max_client_conn)", "FATAL", nonlocalized=False
    )
    assert judge(full, facts("give_back", exposed=True)).allowed  # lost, by its severity
    assert judge(full, facts("dirty")).violation is UnexplainedError


# -- the property: a wrapped error is judged like the psycopg error under it -------------
def django_wrapped(error: BaseException) -> BaseException:
    from tests.unit.test_root_cause import django_wrapped as wrap

    return wrap(error)


def sqlalchemy_wrapped(error: BaseException) -> BaseException:
    from tests.unit.test_root_cause import sqlalchemy_wrapped as wrap

    return wrap(error)


WRAPPERS = {
    "cause": wrapped_by_cause,
    "orig": wrapped_by_orig,
    "django": django_wrapped,
    "sqlalchemy": sqlalchemy_wrapped,
}


def unwrapping_failures(wrap) -> list[str]:
    """What the judge gets wrong about wrapped errors (empty: the property holds)."""
    failures = []

    def expect(name: str, error: BaseException, fact: Facts, **want) -> None:
        verdict = judge(wrap(error), fact)
        got = {key: getattr(verdict, key) for key in want}
        if got != want:
            failures.append(f"{name}: {got} != {want}")

    expect(
        "a lost write under a fault",
        lost(),
        facts("write_uncommitted", wrote=True, **under(DOWN)),
        violation=None,
        outcome=Outcome.INFO,
        resync=True,
    )
    expect(
        "a statement that failed without a fault",
        errors.DivisionByZero("division by zero"),
        facts(),
        violation=UnexplainedError,
    )
    expect(
        "a pool timeout with every connection held",
        PoolTimeout("couldn't get a connection after 1.00 sec"),
        facts("checkout", pool_exhausted=True),
        violation=None,
        outcome=Outcome.FAIL,
    )
    expect(
        "a dead connection handed out",
        psycopg.OperationalError("server closed the connection unexpectedly"),
        facts("checkout"),
        violation=DeadConnectionHandedOut,
    )
    expect(
        "a closed pool under a fault",
        PoolClosed("the pool 'pool-1' is already closed"),
        facts("checkout", **under(DOWN)),
        violation=UnexplainedError,
    )
    expect(
        "broken prepared statements",
        errors.InvalidSqlStatementName('prepared statement "_pg3_0" does not exist'),
        facts("repeat_query"),
        violation=PreparedStatementsBroken,
    )
    division = judge(wrap(errors.DivisionByZero("division by zero")), facts())
    if "(from psycopg.errors.DivisionByZero)" not in division.message:
        failures.append(f"the message does not name the root cause: {division.message}")
    closed = judge(wrap(PoolClosed("closed")), facts("checkout", **under(DOWN)))
    if "used a closed pool" not in closed.message:
        failures.append(f"a closed pool is not named: {closed.message}")
    return failures


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapped_errors_are_judged_by_their_root_cause(wrapper):
    assert unwrapping_failures(WRAPPERS[wrapper]) == []


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_canary_a_judge_that_stops_unwrapping_is_caught(wrapper, monkeypatch):
    """The deliberately broken variant: root_cause returns what it is given. Every
    check but the one a wrapper cannot change (an unexplained statement error) must fail."""
    wrap = WRAPPERS[wrapper]
    wrap(errors.DivisionByZero("import the framework, or skip, before breaking the judge"))

    def no_unwrapping(error: BaseException) -> BaseException:
        return error

    monkeypatch.setattr(outcomes, "root_cause", no_unwrapping)
    monkeypatch.setattr(judge_module, "root_cause", no_unwrapping)
    caught = unwrapping_failures(wrap)
    names = {failure.split(":")[0] for failure in caught}
    assert names == {
        "a lost write under a fault",
        "a pool timeout with every connection held",
        "a dead connection handed out",
        "broken prepared statements",
        "the message does not name the root cause",
        "a closed pool is not named",
    }, caught


def test_facts_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts().step = "checkout"  # type: ignore[misc]
    assert Facts(step="x").effects == NO_EFFECTS
