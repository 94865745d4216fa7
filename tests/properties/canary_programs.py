"""For each canary, a program known to reach its bug: the deterministic half of the proof.

A canary's random search (tests/properties/test_canaries.py) proves the
machine *gets* to the bug; these programs prove the invariant *catches* it,
every time, whatever the search does. Each is a short rule sequence written as
Hypothesis prints failing programs (the steps are the machine's own rules),
with the invariants checked after every step as Hypothesis would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chaos.faults.network import Down, HalfOpen
from chaos.machines.dirt import SetGuc, TempTable
from chaos.machines.model import SettingsValue
from chaos.machines.pool_machine import PoolMachine

Program = Callable[[Any], None]

UTC = SettingsValue("UTC", use_tz=False, role=None)
PARIS = SettingsValue("Europe/Paris", use_tz=False, role=None)


class Checked:
    """Calls the machine's rules, then its invariants after each, as Hypothesis does
    (``state.invariants``: the machine's @invariant methods, with their preconditions)."""

    def __init__(self, state: PoolMachine) -> None:
        self._state = state

    def __getattr__(self, name: str) -> Callable[..., Any]:
        rule = getattr(self._state, name)

        def step(**kwargs: Any) -> Any:
            result = rule(**kwargs)
            state = self._state
            for invariant in state.invariants:
                if all(precondition(state) for precondition in invariant.preconditions):
                    invariant.function(state)
            return result

        return step


def session_leak(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.dirty_session(request=r0, dirt=SetGuc("work_mem", "8MB"), then_give_back=True)


def stale_timezone(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.checkout(request=r0)
    state.give_back(request=r0)
    state.change_settings(settings=PARIS)


def dead_connection_handed_out(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.checkout(request=r0)
    state.give_back(request=r0)
    # pool.check() reads the reset sent on return: otherwise whether the fault meets the
    # reset's answer on the wire (read at checkout: the connection is discarded even
    # without a health check) or already buffered (handed out dead) is a race.
    state.check_pool()
    state.inject_network_fault(fault=Down(), blip=True)


def wrong_pool(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.checkout(request=r0)
    state.close_pool()
    state.give_back(request=r0)


def unconfigured_connection(state: Checked) -> None:
    state.start(settings=SettingsValue("UTC", use_tz=False, role="chaos_app"))


def phantom_commit(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.leave_transaction_open(request=r0, how="begin", then_give_back=True)


def double_checkout(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    r1 = state.open_request()
    state.checkout(request=r0)
    state.checkout(request=r1)


def lifetime_not_enforced(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.slow_request(request=r0, factor=2.0)


def prepared_statements_broken(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.repeat_query(request=r0, query="SELECT 1", times=6, rounds=2)
    state.repeat_query(request=r0, query="SELECT 1", times=6, rounds=2)


def pool_out_of_bounds(state: Checked) -> None:
    state.start(settings=UTC)


def slow_return(state: Checked) -> None:
    """A transaction left open, then the link goes half-open, then the request returns."""
    r0 = state.start(settings=UTC)
    state.leave_transaction_open(request=r0, how="begin", then_give_back=False)
    state.inject_network_fault(fault=HalfOpen(), blip=False)
    state.give_back(request=r0)


def reconfiguration_waits_for_the_network(state: Checked) -> None:
    """An idle pooled connection, a half-open link, then a timezone change."""
    state.start(settings=UTC)
    state.inject_network_fault(fault=HalfOpen(), blip=False)
    state.change_settings(settings=PARIS)


def session_leak_checks_off(state: Checked) -> None:
    session_leak(state)


def reset_all_only(state: Checked) -> None:
    """RESET ALL resets settings but keeps temp tables (and roles, locks, ...)."""
    r0 = state.start(settings=UTC)
    state.dirty_session(request=r0, dirt=TempTable(), then_give_back=True)


def pool_closed_but_not_forgotten(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.checkout(request=r0)
    state.give_back(request=r0)
    state.close_pool()
    state.checkout(request=r0)


def hard_wired_configuration(state: Checked) -> None:
    """The override's GUC is missing from the first pooled checkout."""
    state.start(settings=UTC)


def reset_in_flight_handed_out(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.checkout(request=r0)
    state.give_back(request=r0)
    state.checkout(request=r0)


def reset_finished_by_the_pool_check(state: Checked) -> None:
    r0 = state.start(settings=UTC)
    state.change_settings_in_request(
        request=r0, settings=SettingsValue("UTC", use_tz=False, role="chaos_app")
    )
    state.check_pool()
    state.checkout(request=r0)


PROGRAMS: dict[str, Program] = {
    "SessionLeak": session_leak,
    "StaleTimezone": stale_timezone,
    "DeadConnectionHandedOut": dead_connection_handed_out,
    "WrongPool": wrong_pool,
    "UnconfiguredConnection": unconfigured_connection,
    "PhantomCommit": phantom_commit,
    "DoubleCheckout": double_checkout,
    "LifetimeNotEnforced": lifetime_not_enforced,
    "PreparedStatementsBroken": prepared_statements_broken,
    "PoolOutOfBounds": pool_out_of_bounds,
    "SlowReturn": slow_return,
    "ReconfigurationHang": reconfiguration_waits_for_the_network,
    "SessionLeakChecksOff": session_leak_checks_off,
    "SessionLeakResetAll": reset_all_only,
    "PoolClosedButNotForgotten": pool_closed_but_not_forgotten,
    "HardWiredConfiguration": hard_wired_configuration,
    "ResetInFlightHandedOut": reset_in_flight_handed_out,
    "ResetFinishedByPoolCheck": reset_finished_by_the_pool_check,
}
