"""SQLAlchemy 2's QueuePool (chaos.targets.sqlalchemy_pool) through the machines.

- Explicit programs (written as Hypothesis prints them) for the leaks SQLAlchemy
  really has: its reset on return is a ROLLBACK, so committed session state goes
  to the next checkout (evidence/sqlalchemy/reset_is_rollback.py shows what the
  server saw). Pool of 1: the next checkout is the same session, every time.
- Two more real behaviours: a connection given back to a pool that ``dispose()``
  replaced stays open on the server until the garbage collector runs; the return of a
  connection (its ROLLBACK) over a half-open link has no deadline.
- A clean program that must pass: transactions left open, settings changes, a
  disposed pool.
- A short search of the main machine without dirt, which must pass.

The MachineEnv is built here (until ``--target`` selects targets for the shared
machine fixtures).
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")

from hypothesis import settings

from chaos.faults.connect import proxy_address
from chaos.faults.network import HalfOpen
from chaos.hypothesis_profiles import budget
from chaos.machines.dirt import (
    AdvisoryLock,
    Dirt,
    HoldCursor,
    Listen,
    Prepare,
    SetGuc,
    SetRole,
    SetTimeZone,
    TempTable,
)
from chaos.machines.errors import OrphanedSessions, SessionLeak, SlowReturn
from chaos.machines.model import SettingsValue
from chaos.machines.orphan_rules import OrphanRules
from chaos.machines.pool_machine import MachineEnv, NetworkFaults, PoolMachine, machine_for
from chaos.machines.runner import run_machine_as_test
from chaos.targets.base import TargetOptions
from chaos.targets.registry import UnsupportedOption, factory, resolve

UTC = SettingsValue("UTC", use_tz=False, role=None)
PARIS_APP = SettingsValue("Europe/Paris", use_tz=False, role="chaos_app")
KOLKATA = SettingsValue("Asia/Kolkata", use_tz=False, role=None)

#: The main machine's rules without session dirt: requests, transactions left open,
#: a failed transaction, settings changes (from a control thread and from a request), pool
#: maintenance.
CLEAN_RULES = (
    "open_request",
    "finish_request",
    "checkout",
    "give_back",
    "leave_transaction_open",
    "fail_transaction",
    "change_settings",
    "change_settings_in_request",
    "close_pool",
    "check_pool",
)


@pytest.fixture
def sqlalchemy_env(postgres: Any, request: pytest.FixtureRequest) -> MachineEnv:
    """The shared server behind this test's proxy (network faults only), SQLAlchemy target."""
    try:
        proxy = request.getfixturevalue("pg_proxy")
    except pytest.FixtureLookupError:
        proxy = None
    host, port = proxy_address(proxy) if proxy is not None else (postgres.host, postgres.port)
    make = factory(resolve("sqlalchemy"))

    def make_target(options: TargetOptions) -> Any:
        return make(server=postgres, host=host, port=port, options=options)

    return MachineEnv(server=postgres, proxy=proxy, make_target=make_target)


class Checked:
    """The machine's rules, each followed by its invariants, as Hypothesis runs them."""

    def __init__(self, state: PoolMachine) -> None:
        self._state = state

    def __getattr__(self, name: str) -> Callable[..., Any]:
        rule = getattr(self._state, name)

        def step(**kwargs: Any) -> Any:
            result = rule(**kwargs)
            for invariant in self._state.invariants:
                if all(pre(self._state) for pre in invariant.preconditions):
                    invariant.function(self._state)
            return result

        return step


LEAKS: list[tuple[Dirt, str]] = [
    (SetGuc("work_mem", "8MB"), "work_mem=8192"),
    (SetTimeZone(), "Pacific/Chatham"),
    (SetRole(), "chaos_intruder"),
    (TempTable(), "chaos_tmp"),
    (AdvisoryLock(), "4242"),
    (Listen(), "chaos_channel"),
    (Prepare(), "chaos_stmt"),
    (HoldCursor(), "chaos_cursor"),
]


@pytest.mark.parametrize(("dirt", "shows"), LEAKS, ids=[d.kind for d, _ in LEAKS])
def test_committed_session_state_survives_the_reset(
    sqlalchemy_env: MachineEnv, dirt: Dirt, shows: str
) -> None:
    """SQLAlchemy's reset on return is a ROLLBACK: what a request committed (a SET, SET
    ROLE, a temp table, a session advisory lock, LISTEN, PREPARE, a WITH HOLD cursor)
    is handed to the next request. Pool of 1: the probe gets the same session."""
    Machine = machine_for(
        sqlalchemy_env, OrphanRules, options=TargetOptions(max_size=1), name="SQLAlchemyLeak"
    )
    state = Machine()
    try:
        steps = Checked(state)
        requests_0 = steps.start(settings=UTC)
        with pytest.raises(SessionLeak, match=shows):
            steps.dirty_session(dirt=dirt, request=requests_0, then_give_back=True)
    finally:
        state.teardown()


def test_clean_program_passes(sqlalchemy_env: MachineEnv) -> None:
    """What the reset does cover (an open transaction, rolled back), settings changes as new
    engines (zone and role), a disposed pool, a request's own transaction abandoned at
    finish: every checkout is fresh, no write survives, no session is orphaned."""
    Machine = machine_for(
        sqlalchemy_env, OrphanRules, options=TargetOptions(max_size=2), name="SQLAlchemyClean"
    )
    state = Machine()
    try:
        steps = Checked(state)
        requests_0 = steps.start(settings=UTC)
        requests_1 = steps.open_request()
        steps.leave_transaction_open(request=requests_0, how="begin", then_give_back=True)
        steps.leave_transaction_open(request=requests_1, how="autocommit_off", then_give_back=True)
        steps.change_settings(settings=PARIS_APP)
        steps.checkout(request=requests_0)
        steps.checkout(request=requests_1)
        steps.give_back(request=requests_1)
        steps.give_back(request=requests_0)
        steps.close_pool()
        steps.change_settings_in_request(request=requests_0, settings=KOLKATA)
        steps.checkout(request=requests_1)
        steps.leave_transaction_open(request=requests_1, how="begin", then_give_back=False)
        steps.finish_request(request=requests_1)
        steps.check_pool()
        steps.checkout(request=requests_0)
    finally:
        state.teardown()


def test_connection_returned_to_a_disposed_pool_stays_open(sqlalchemy_env: MachineEnv) -> None:
    """``engine.dispose()`` closes the idle connections only; one a request holds goes back
    to the old pool at ``conn.close()`` and its server session stays open until the cyclic
    garbage collector frees that pool (SQLAlchemy documents it; the pool and its records
    reference each other). evidence/sqlalchemy/dispose_orphans_checked_out.py."""
    Machine = machine_for(
        sqlalchemy_env, OrphanRules, options=TargetOptions(max_size=1), name="SQLAlchemyOrphan"
    )
    state = Machine()
    try:
        steps = Checked(state)
        requests_0 = steps.start(settings=UTC)
        steps.checkout(request=requests_0)
        steps.change_settings(settings=KOLKATA)
        gc.disable()  # the finding is "until a collection": none may run mid-step
        try:
            with pytest.raises(OrphanedSessions, match=r"0 connection\(s\) held by requests"):
                steps.give_back(request=requests_0)
        finally:
            gc.enable()
    finally:
        state.teardown()


def test_return_over_a_half_open_link_is_unbounded(sqlalchemy_env: MachineEnv) -> None:
    """``conn.close()`` rolls the request's transaction back with no deadline: over a
    half-open link it blocks until the link heals (SlowReturn, the return-deadline
    contract). evidence/sqlalchemy/return_over_half_open_link.py."""
    if sqlalchemy_env.proxy is None:
        pytest.skip("needs the fault proxy")
    Machine = machine_for(
        sqlalchemy_env,
        NetworkFaults,
        options=TargetOptions(max_size=1),
        name="SQLAlchemyHalfOpen",
    )
    state = Machine()
    try:
        requests_0 = state.start(settings=UTC)
        with pytest.raises(SlowReturn, match=r"give_back of Request\(1\).*HalfOpen"):
            state.return_over_bad_link(fault=HalfOpen(), how="begin", request=requests_0)
    finally:
        state.teardown()


def test_main_machine_without_dirt_passes(sqlalchemy_env: MachineEnv) -> None:
    """A short search of the main machine's rules, no dirt: SQLAlchemy must pass it. Without
    the orphaned-sessions invariant: a settings change under a held connection orphans it
    (test_connection_returned_to_a_disposed_pool_stays_open)."""
    Machine = machine_for(
        sqlalchemy_env,
        options=TargetOptions(max_size=5),
        focus=CLEAN_RULES,
        name="SQLAlchemyMachine",
    )
    chosen = {**budget(), "max_examples": min(budget()["max_examples"], 8)}
    seed = random.getrandbits(32)
    run_machine_as_test(Machine, settings(settings(), **chosen, database=None), seed=seed)
    env = sqlalchemy_env
    print(f"seed {seed}: {env.examples} examples, {env.steps} steps; {env.last_target}")
    assert env.steps > env.examples, "the machine ran no rules"


@pytest.mark.parametrize("option", ["variant", "configure_override", "user_check"])
def test_unsupported_options_are_refused(postgres: Any, option: str) -> None:
    value: Any = {"variant": "NoResetOnReturn", "configure_override": True}.get(option, object)
    make = factory(resolve("sqlalchemy"))
    with pytest.raises(UnsupportedOption, match=option):
        make(
            server=postgres,
            host=postgres.host,
            port=postgres.port,
            options=TargetOptions(**{option: value}),
        )
