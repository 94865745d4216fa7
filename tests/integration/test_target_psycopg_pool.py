"""Bare psycopg_pool through the machines: the ``psycopg_pool`` targets run, and what they find.

- Every kind of session state the machines know leaks from one request to the
  next through bare psycopg_pool (a pool of one): ``putconn`` only rolls back an
  open transaction, which is psycopg_pool's documented behaviour (its ``reset``
  callback is opt-in). Each program is explicit, so it fails the same way every
  time; it is also the canary that the machine still catches a leak on this target.
- The same kind of program without dirt passes (the adapter adds no leak of its
  own), and a short random run of the main machine's non-dirt rules passes.
- After a fast restart: with psycopg_pool's check, no caller error; without it, at
  most one error per pooled connection (timings are printed, not asserted: see
  the README figures).
"""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule
from psycopg_pool import PoolTimeout

from chaos.faults.connect import proxy_address
from chaos.hypothesis_profiles import budget
from chaos.machines.dirt import DIRT, Dirt, SetGuc
from chaos.machines.errors import SessionLeak
from chaos.machines.model import SettingsValue
from chaos.machines.orphan_rules import OrphanRules
from chaos.machines.pool_machine import MachineEnv, PoolMachine, machine_for
from chaos.machines.runner import run_machine_as_test
from chaos.targets.base import TargetOptions
from chaos.targets.registry import UnsupportedOption, factory, resolve

NAMES = ("psycopg_pool", "psycopg_pool-nocheck")
UTC = SettingsValue("UTC", use_tz=False, role=None)
PARIS_APP = SettingsValue("Europe/Paris", use_tz=False, role="chaos_app")
#: The main machine's rules that leave no dirt on bare psycopg_pool (no dirty_session /
#: dirty_everything; leave_transaction_open only with BEGIN: see BeginOnly).
CLEAN_RULES = (
    "open_request",
    "finish_request",
    "checkout",
    "give_back",
    "fail_transaction",
    "change_settings",
    "change_settings_in_request",
    "close_pool",
    "check_pool",
)


def make_env(server: Any, proxy: Any, name: str, *, server_faults: bool = False) -> MachineEnv:
    """A MachineEnv for a registered target (what the --target option will build)."""
    host, port = proxy_address(proxy) if proxy is not None else (server.host, server.port)
    make = factory(resolve(name))
    return MachineEnv(
        server=server,
        proxy=proxy,
        make_target=lambda options: make(server=server, host=host, port=port, options=options),
        server_faults=server_faults,
        toxiproxy_kind="embedded" if proxy is not None else "none",
    )


@pytest.fixture(params=NAMES)
def env(request: pytest.FixtureRequest, postgres: Any, pg_proxy: Any) -> MachineEnv:
    return make_env(postgres, pg_proxy, request.param)


@pytest.fixture
def checked_env(postgres: Any, pg_proxy: Any) -> MachineEnv:
    return make_env(postgres, pg_proxy, "psycopg_pool")


def _dirt_id(dirt: Dirt) -> str:
    return repr(dirt).replace(" ", "")


@pytest.mark.canary
@pytest.mark.parametrize("dirt", DIRT, ids=_dirt_id)
def test_bare_psycopg_pool_leaks_session_state_to_the_next_request(checked_env, dirt):
    """One request leaves ``dirt`` and gives its connection back; the next checkout of
    the pool of one (the machine's probe) gets it. ``SessionLeak`` every time."""
    Machine = machine_for(checked_env, options=TargetOptions(min_size=1, max_size=1))
    state = Machine()
    try:
        requests_0 = state.start(settings=UTC)
        with pytest.raises(SessionLeak) as leak:
            state.dirty_session(dirt=dirt, request=requests_0, then_give_back=True)
        assert "differs from a freshly configured one" in str(leak.value)
    finally:
        state.teardown()


def test_the_leaked_guc_is_what_the_server_holds(checked_env):
    """The printed program of the GUC leak, and what the server saw: the next request's
    session (same backend pid) still has the previous request's ``work_mem``."""
    Machine = machine_for(checked_env, options=TargetOptions(min_size=1, max_size=1))
    state = Machine()
    try:
        requests_0 = state.start(settings=UTC)
        with pytest.raises(SessionLeak, match=r"session_gucs: extra \['work_mem=8192'\]"):
            state.dirty_session(
                dirt=SetGuc(name="work_mem", value="8MB"), request=requests_0, then_give_back=True
            )
        pool = state.target.pool()
        conn = pool.getconn()
        try:
            pid = conn.info.backend_pid
            shown = conn.execute("SHOW work_mem").fetchone()[0]
        finally:
            pool.putconn(conn)
        source = state.admin_query(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND application_name = %s",
            [pid, state.target.application_name],
        )[0][0]
        assert (shown, source) == ("8MB", 1)
    finally:
        state.teardown()


def test_a_transaction_begun_by_turning_autocommit_off_leaks_autocommit(checked_env):
    """A request writes with ``autocommit = False`` (psycopg's way to begin implicitly) and
    walks away: ``putconn`` rolls the write back but leaves autocommit off, so the next
    request (which expects the pool's autocommit) writes in a transaction nobody commits.
    Minimal program without the harness: the README's psycopg_pool section."""
    Machine = machine_for(checked_env, options=TargetOptions(min_size=1, max_size=1))
    state = Machine()
    try:
        requests_0 = state.start(settings=UTC)
        with pytest.raises(SessionLeak, match="autocommit: expected True, got False"):
            state.leave_transaction_open(
                request=requests_0, how="autocommit_off", then_give_back=True
            )
    finally:
        state.teardown()


def test_clean_program_passes(env):
    """The same shape without dirt: checkouts, transactions left open (psycopg_pool rolls
    them back), settings changes from a request and from outside, close_pool, check."""
    options = TargetOptions(min_size=1, max_size=2, timeout=1.0)
    Machine = machine_for(env, OrphanRules, options=options)
    state = Machine()
    try:
        requests_0 = state.start(settings=UTC)
        state.checkout(request=requests_0)
        state.give_back(request=requests_0)
        requests_1 = state.open_request()
        state.checkout(request=requests_1)
        state.leave_transaction_open(request=requests_0, how="begin", then_give_back=True)
        state.change_settings(settings=PARIS_APP)
        state.give_back(request=requests_1)  # lent by the old pool: putconn closes it
        state.fail_transaction(request=requests_0)
        state.give_back(request=requests_0)
        state.leave_transaction_open(request=requests_1, how="autocommit_off", then_give_back=False)
        state.change_settings_in_request(
            request=requests_1, settings=SettingsValue("Asia/Kolkata", use_tz=True, role=None)
        )
        state.finish_request(request=requests_1)
        state.check_pool()
        state.close_pool()
        state.checkout(request=requests_0)
        state.change_settings(settings=SettingsValue("America/New_York", use_tz=False, role=None))
        state.give_back(request=requests_0)
        state.no_phantom_commits()
        state.pool_within_bounds()
        state.no_orphaned_sessions()
    finally:
        state.teardown()


def test_putconn_rolls_back_with_no_deadline_over_a_half_open_link(checked_env):
    """psycopg_pool's ``putconn`` rolls an open transaction back in the caller's thread,
    with no deadline of its own: over a half-open link (the proxy acknowledges every
    byte, so keepalives see nothing) the request's return blocks until the link heals.
    The server meanwhile holds the session idle in transaction: the ROLLBACK never came."""
    from chaos.faults.network import HalfOpen
    from chaos.machines.errors import SlowReturn
    from chaos.machines.pool_machine import NetworkFaults

    Machine = machine_for(checked_env, NetworkFaults, options=TargetOptions(min_size=1, max_size=1))
    state = Machine()
    try:
        requests_0 = state.start(settings=UTC)
        state.leave_transaction_open(request=requests_0, how="begin", then_give_back=False)
        state.inject_network_fault(fault=HalfOpen(), blip=False)
        with pytest.raises(SlowReturn, match="did not return within"):
            state.give_back(request=requests_0)
        pid = state.model.requests[requests_0.number].holding.backend.pid
        seen = state.admin_query("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid])
        assert seen == [("idle in transaction",)]
    finally:
        state.teardown()


def test_a_connection_that_failed_the_user_check_is_handed_out_again(checked_env):
    """psycopg_pool's check loop returns a connection whose ``check`` raised to the pool
    unless libpq knows it is broken (``_return_connection`` discards only a BAD one), so
    the next attempt of the same ``getconn()`` can get it back: with a pool of one it
    does, every time. The docs say "If the check fails, a new connection will be
    obtained"; a check that rejects a connection for its own reasons (a ValueError, the
    session still up) is not honoured."""
    from chaos.machines.check_rules import ScriptedCheck, UserCheckRules
    from chaos.machines.errors import FailedCheckHandedOut

    options = TargetOptions(min_size=1, max_size=1, timeout=3.0, user_check=ScriptedCheck)
    Machine = machine_for(checked_env, UserCheckRules, options=options)
    state = Machine()
    try:
        state.start(settings=UTC)
        with pytest.raises(FailedCheckHandedOut, match="failed the user check"):
            state.fail_next_checks(how="value_error", times=1, skip=0)
        calls = state.target.user_check.calls
        assert [c.how for c in calls[-2:]] == ["value_error", None]
        assert calls[-1].backend == calls[-2].backend
    finally:
        state.teardown()


class BeginOnly:
    """``leave_transaction_open`` with a raw BEGIN only: its ``autocommit_off`` form leaves
    autocommit off on bare psycopg_pool (a leak, shown above), so it is dirt here."""

    @rule(request=PoolMachine.requests, then_give_back=st.booleans())
    def leave_begin_open(self, request: Any, then_give_back: bool) -> None:
        self.leave_transaction_open(request, "begin", then_give_back)  # type: ignore[attr-defined]


def test_main_machine_without_dirt(env, request):
    """A short random run (fast profile) of the main machine's rules that leave no dirt."""
    options = TargetOptions(min_size=1, max_size=3, timeout=1.0)
    Machine = machine_for(
        env, BeginOnly, OrphanRules, options=options, focus=(*CLEAN_RULES, "leave_begin_open")
    )
    chosen = request.config.getoption("hypothesis_seed", None)
    seed = int(chosen) if chosen is not None else random.getrandbits(32)
    try:
        run_machine_as_test(Machine, settings(settings(), **budget("fast")), seed=seed)
    except Exception as exc:
        exc.add_note(f"replay: --hypothesis-seed={seed} (target {env.last_target})")
        raise
    print(f"{env.examples} examples, {env.steps} steps: {env.last_target}")
    assert env.steps >= env.examples, "the run took no steps"


def test_variant_is_unsupported(postgres):
    make = factory(resolve("psycopg_pool"))
    with pytest.raises(UnsupportedOption, match="variant"):
        make(
            server=postgres,
            host=postgres.host,
            port=postgres.port,
            options=TargetOptions(variant="NoResetOnReturn"),
        )


# -- recovery after a fast restart, through the target ------------------------------------
RESTART_POOL = {"min_size": 4, "max_size": 4}


def _query(request: Any) -> None:
    request.run(lambda s: s.execute("SELECT 1"), 30.0)


def measure_restart(server: Any, name: str, *, timeout: float) -> dict[str, Any]:
    """Warm every pooled connection, ``restart -m fast``, then requests one after the other
    until one succeeds, and 2 x pool size more: the caller errors, and the time from
    "server accepting again" to the first success."""
    make = factory(resolve(name))
    target = make(
        server=server,
        host=server.host,
        port=server.port,
        options=TargetOptions(**RESTART_POOL, timeout=timeout),
    )
    try:
        held = [target.open_request(n) for n in range(1, RESTART_POOL["max_size"] + 1)]
        for request in held:
            request.checkout(30.0)
        for request in held:
            request.give_back(30.0)
        caller = held[0]
        accepting = server.restart("fast")
        errors: list[str] = []
        first = None
        deadline = time.monotonic() + 60.0
        while first is None and time.monotonic() < deadline:
            try:
                _query(caller)
                first = time.monotonic() - accepting
            except (psycopg.OperationalError, PoolTimeout) as exc:
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
            finally:
                caller.give_back(30.0)
        for _ in range(2 * RESTART_POOL["max_size"]):
            try:
                _query(caller)
            except (psycopg.OperationalError, PoolTimeout) as exc:
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
            finally:
                caller.give_back(30.0)
        for request in held:
            request.finish(5.0)
        return {
            "first_success_ms": None if first is None else round(first * 1000),
            "errors": errors,
        }
    finally:
        target.close()


@pytest.mark.slow
@pytest.mark.restarts_server
@pytest.mark.needs_server_control
def test_restart_recovery_with_and_without_check(private_postgres):
    """With the check: no caller error (the check loop's backoff absorbs the dead
    connections); without: at most one error per pooled connection."""
    checked = measure_restart(private_postgres, "psycopg_pool", timeout=30.0)
    unchecked = measure_restart(private_postgres, "psycopg_pool-nocheck", timeout=30.0)
    print(f"psycopg_pool check on: {checked}; check off: {unchecked}")
    assert checked["errors"] == []
    assert checked["first_success_ms"] is not None
    assert unchecked["first_success_ms"] is not None
    assert 1 <= len(unchecked["errors"]) <= RESTART_POOL["max_size"]
