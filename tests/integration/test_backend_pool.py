"""Pool wiring: time-zone swaps, own-pool returns, atomic(), overrides, lifetime, limits."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from chaos.targets.variants import VARIANTS
from plain_pool import (
    ConnectionClosedInAtomicBlock,
    ConnectionHandler,
    DatabaseWrapper,
    ServerSideCursorsDisabled,
    TransactionManagementError,
    _compat,
    close_all_pools,
)


@pytest.fixture(autouse=True)
def _close_pools():
    yield
    close_all_pools()


@pytest.fixture
def pooled(postgres, make_db_settings):
    return make_db_settings(postgres, POSTGRES_POOL={"min_size": 2, "max_size": 4, "timeout": 5})


def zone_of(db: DatabaseWrapper) -> str:
    return db.cursor().execute("SELECT current_setting('TimeZone')").fetchone()[0]


# -- time zone ----------------------------------------------------------------
def timezone_problems(wrapper_class, settings, alias: str) -> list[str]:
    """Change the zone while other threads hold connections; every later checkout
    (in any thread) must have the new zone."""
    handler = ConnectionHandler({alias: settings}, wrapper_class=wrapper_class)
    held = threading.Barrier(4)
    changed = threading.Event()
    results: list[str] = []

    def worker() -> None:
        db = handler[alias]
        db.ensure_connection()
        held.wait()
        changed.wait(10)
        db.close()  # goes back to its own (closed) pool
        for _ in range(3):
            results.append(zone_of(db))
            db.close()

    main = handler[alias]
    main.ensure_connection()
    main.close()
    main.pool.wait(timeout=10)  # every slot opened with the old zone: idle ones stay old
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    held.wait()
    handler.update_settings(alias, TIME_ZONE="Pacific/Auckland", USE_TZ=False)
    main.ensure_timezone()
    changed.set()
    for t in threads:
        t.join(20)
    results.append(zone_of(main))
    main.close()
    for _ in range(4):  # every idle pooled connection
        results.append(zone_of(main))
        main.close()
    return [f"checkout with zone {z}" for z in results if z != "Pacific/Auckland"]


def test_timezone_change_reaches_every_checkout(pooled):
    settings = {**pooled, "POSTGRES_POOL": {"min_size": 4, "max_size": 4, "timeout": 5}}
    assert timezone_problems(DatabaseWrapper, settings, "tz") == []


@pytest.mark.canary
def test_canary_pool_not_closed_on_timezone_change(pooled):
    settings = {**pooled, "POSTGRES_POOL": {"min_size": 4, "max_size": 4, "timeout": 5}}
    # Warm the pool so idle connections with the old zone exist.
    problems = timezone_problems(VARIANTS["PoolNotClosedOnTimezoneChange"], settings, "tz-c")
    assert problems != []


@pytest.mark.canary
def test_canary_pool_closed_but_not_forgotten(pooled):
    db = VARIANTS["PoolClosedButNotForgotten"](pooled, alias="cbnf")
    db.ensure_connection()
    db.close()
    db.close_pool()
    with pytest.raises(Exception, match="closed"):
        db.ensure_connection()


def test_ensure_timezone_reconfigures_held_connection(pooled):
    handler = ConnectionHandler({"held": pooled})
    db = handler["held"]
    conn = db.ensure_connection()
    handler.update_settings("held", TIME_ZONE="Asia/Kolkata", USE_TZ=False)
    assert db.ensure_timezone() is True
    assert db.connection is conn and zone_of(db) == "Asia/Kolkata"
    db.close()  # to its old, closed pool: closed
    assert conn.closed
    assert zone_of(db) == "Asia/Kolkata"
    assert db.ensure_timezone() is False
    db.close()


def test_settings_change_retires_the_pool_it_makes_obsolete(pooled):
    """A change of what the pool is made for (here its options; a role likewise)
    closes the old pool at once: kept registered, its idle sessions sat unwatched
    through faults and came back into service, dead, when the settings changed back
    (found by the state machines with health checks off)."""
    handler = ConnectionHandler({"obsolete": pooled})
    db = handler["obsolete"]
    db.ensure_connection()
    old_pool = db.pool
    db.close()
    handler.update_settings("obsolete", POSTGRES_POOL={"min_size": 1, "max_size": 3})
    assert old_pool.closed
    db.ensure_connection()
    assert db.pool is not old_pool and db.pool.max_size == 3
    db.close()


# -- own pool -------------------------------------------------------------------
def test_connection_returns_to_its_own_pool_after_swap(pooled):
    a = DatabaseWrapper(pooled, alias="swap")
    b = DatabaseWrapper(pooled, alias="swap")
    conn = a.ensure_connection()
    old_pool = a.pool
    b.close_pool()
    assert b.pool is not old_pool
    b.ensure_connection()
    a.close()  # no ValueError; the closed pool closes the connection
    assert conn.closed
    assert b.pool.get_stats().get("returns_bad", 0) == 0
    b.close()


@pytest.mark.canary
def test_canary_putconn_to_current_pool(pooled):
    a = VARIANTS["PutconnToCurrentPool"](pooled, alias="swap-c")
    b = VARIANTS["PutconnToCurrentPool"](pooled, alias="swap-c")
    a.ensure_connection()
    b.close_pool()
    b.ensure_connection()
    with pytest.raises(ValueError):
        a.close()
    b.close()


# -- atomic ---------------------------------------------------------------------
@pytest.fixture
def table(postgres):
    with postgres.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS atomic_t(x int)")
        conn.execute("TRUNCATE atomic_t")
    return "atomic_t"


def rows(postgres) -> list[int]:
    with postgres.connect() as conn:
        return [r[0] for r in conn.execute("SELECT x FROM atomic_t ORDER BY x")]


@pytest.mark.parametrize("pool", [True, False])
def test_atomic_savepoints(pool, pooled, postgres, table):
    settings = pooled if pool else {**pooled, "POSTGRES_POOL": False}
    db = DatabaseWrapper(settings, alias="atomic")
    with db.atomic():
        db.cursor().execute("INSERT INTO atomic_t VALUES (1)")
        with pytest.raises(ZeroDivisionError), db.atomic():
            db.cursor().execute("INSERT INTO atomic_t VALUES (2)")
            raise ZeroDivisionError
        with db.atomic():
            db.cursor().execute("INSERT INTO atomic_t VALUES (3)")
        with pytest.raises(TransactionManagementError):
            db.commit()
        assert db.get_autocommit() is False
    assert db.get_autocommit() is True
    assert rows(postgres) == [1, 3]
    with pytest.raises(RuntimeError), db.atomic():
        db.cursor().execute("INSERT INTO atomic_t VALUES (4)")
        raise RuntimeError
    assert rows(postgres) == [1, 3]
    # an error inside a block without savepoint marks the outer block for rollback
    with db.atomic():
        db.cursor().execute("INSERT INTO atomic_t VALUES (5)")
        with pytest.raises(psycopg.errors.DivisionByZero), db.atomic(savepoint=False):
            db.cursor().execute("SELECT 1/0")
        assert db.needs_rollback
        with pytest.raises(TransactionManagementError):
            db.cursor()
    assert rows(postgres) == [1, 3]
    db.close()


def test_close_inside_atomic_refuses_to_reconnect(pooled, postgres, table):
    db = DatabaseWrapper(pooled, alias="atomic-close")
    with pytest.raises(TransactionManagementError), db.atomic():
        db.cursor().execute("INSERT INTO atomic_t VALUES (1)")
        db.close()
        with pytest.raises(ConnectionClosedInAtomicBlock):
            db.cursor().execute("INSERT INTO atomic_t VALUES (2)")
    assert rows(postgres) == []
    # usable again after the block
    assert db.cursor().execute("SELECT 1").fetchone() == (1,)
    assert db.get_autocommit() is True
    db.close()


# -- overrides (Django #35688) and configure on every path ------------------------
def make_override(base: type[DatabaseWrapper]) -> type[DatabaseWrapper]:
    class CustomConfigurer(base.configurer_class):  # type: ignore[misc,name-defined]
        def configure_timezone(self, conn: psycopg.Connection, **kwargs: Any) -> bool:
            conn.execute("SET application_name = 'custom_tz'", prepare=False)
            return super().configure_timezone(conn, **kwargs)

        def configure_role(self, conn: psycopg.Connection) -> bool:
            conn.execute("SET search_path = custom_role, public", prepare=False)
            return super().configure_role(conn)

    class Custom(base):  # type: ignore[misc,valid-type]
        configurer_class = CustomConfigurer

    return Custom


def override_problems(base: type[DatabaseWrapper], settings: dict) -> list[str]:
    problems = []
    cls = make_override(base)
    for label, s in (("pooled", settings), ("direct", {**settings, "POSTGRES_POOL": False})):
        db = cls(s, alias=f"override-{base.__name__}")
        for step in ("new", "after reset"):
            row = (
                db.cursor()
                .execute(
                    "SELECT current_setting('application_name'), current_setting('search_path')"
                )
                .fetchone()
            )
            if row != ("custom_tz", "custom_role, public"):
                problems.append(f"{label} {step}: {row}")
            db.close()
        db.close_pool()
    return problems


def test_subclass_overrides_honoured_on_every_path(pooled):
    settings = {**pooled, "POSTGRES_POOL": {"min_size": 1, "max_size": 1}}
    assert override_problems(DatabaseWrapper, settings) == []


@pytest.mark.canary
@pytest.mark.parametrize("variant", ["HardWiredConfiguration", "ConfigureOnlyWhenNotPooled"])
def test_canary_configuration(variant, pooled):
    settings = {**pooled, "POSTGRES_POOL": {"min_size": 1, "max_size": 1}}
    assert override_problems(VARIANTS[variant], settings) != []


# -- lifetime, exhaustion, cursors ------------------------------------------------
def test_max_lifetime_replaces_on_return(pooled):
    # psycopg_pool expires a connection 95-100 % of max_lifetime after opening it: 2 s keeps
    # "still young" true through two checkouts on a stalled machine (1.9 s of slack).
    lifetime = 2.0
    settings = {
        **pooled,
        "POSTGRES_POOL": {"min_size": 1, "max_size": 1, "max_lifetime": lifetime},
    }
    db = DatabaseWrapper(settings, alias="lifetime")
    first = db.ensure_connection().info.backend_pid
    db.close()
    assert db.ensure_connection().info.backend_pid == first  # still young
    # Opened before the first checkout, so expired after this: applied on return, never
    # at getconn.
    time.sleep(lifetime)
    assert db.connection.info.backend_pid == first
    db.close()
    assert db.ensure_connection().info.backend_pid != first
    db.close()


def test_pool_exhaustion_times_out(pooled):
    """PoolTimeout after ``timeout``: not before, and not after a second one (the slack of
    up to one more ``timeout`` is for two noisy shared cores)."""
    timeout = 1.0
    settings = {**pooled, "POSTGRES_POOL": {"min_size": 1, "max_size": 1, "timeout": timeout}}
    holder = DatabaseWrapper(settings, alias="exhaust")
    waiter = DatabaseWrapper(settings, alias="exhaust")
    holder.ensure_connection()
    for checks in (False, True):
        waiter._settings_ref.current = waiter.settings.replace(POSTGRES_CONN_HEALTH_CHECKS=checks)
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            DatabaseWrapper(waiter.settings, alias="exhaust").ensure_connection()
        elapsed = time.monotonic() - t0
        assert timeout <= elapsed < 2 * timeout, elapsed
    holder.close()


def test_server_side_cursors(pooled):
    db = DatabaseWrapper(pooled, alias="ssc")
    with db.atomic():
        cur = db.cursor("named")
        assert isinstance(cur, psycopg.ServerCursor)
        cur.execute("SELECT generate_series(1, 3)")
        assert len(cur.fetchall()) == 3
        cur.close()
    db.close()
    off = DatabaseWrapper({**pooled, "POSTGRES_DISABLE_SERVER_SIDE_CURSORS": True}, alias="ssc-off")
    cur = off.cursor("named")
    assert not isinstance(cur, psycopg.ServerCursor)
    assert cur.execute("SELECT generate_series(1, 3)").fetchall() == [(1,), (2,), (3,)]
    with pytest.raises(ServerSideCursorsDisabled):
        off.cursor("held", withhold=True)
    off.close()


def test_request_hooks_and_stats(pooled):
    handler = ConnectionHandler({"default": pooled})
    db = handler["default"]
    db.cursor().execute("SELECT 1")
    handler.request_finished()
    assert db.connection is None  # back in the pool
    assert not db.pool.closed
    stats = db.pool_stats()
    for key in ("checks_failed", "drains", "resets", "reset_failures", "pool_size"):
        assert key in stats
    assert stats["resets"] >= 1


def test_non_pooled_persistent_connections(pooled):
    settings = {**pooled, "POSTGRES_POOL": False, "POSTGRES_CONN_MAX_AGE": 60}
    handler = ConnectionHandler({"default": {**settings, "POSTGRES_CONN_HEALTH_CHECKS": True}})
    db = handler["default"]
    pid = db.cursor().execute("SELECT pg_backend_pid()").fetchone()[0]
    handler.request_finished()
    handler.request_started()
    assert db.cursor().execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    db.connection.close()  # dies between requests
    handler.request_finished()
    assert db.connection is None
    assert db.cursor().execute("SELECT 1").fetchone() == (1,)
    db.close()


# -- fork -----------------------------------------------------------------------------
def wait_settled(pool: Any, checked_out: int, timeout: float = 30.0) -> None:
    """Wait until every connection the pool is opening is open and idle.

    The fork then happens with idle pooled connections in the parent (what the child
    must not reuse) and no pool thread in the middle of opening one. ``timeout`` only
    bounds a hang.
    """
    deadline = time.monotonic() + timeout
    while True:
        stats = pool.get_stats()
        if stats["pool_size"] <= stats["pool_available"] + checked_out:
            return
        assert time.monotonic() < deadline, f"pool never settled: {stats}"
        time.sleep(0.01)


#: How long a session the child terminated may take to leave pg_stat_activity.
SESSION_EXIT_S = 2.0


def sessions_gone(server: Any, pids: set[int]) -> set[int]:
    """Which of ``pids`` left the server within SESSION_EXIT_S (returns at the first)."""
    deadline = time.monotonic() + SESSION_EXIT_S
    with server.connect() as admin:
        while True:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]
            ).fetchall()
            gone = pids - {row[0] for row in rows}
            if gone or time.monotonic() >= deadline:
                return gone
            time.sleep(0.05)


def fork_problems(wrapper_class, settings, server) -> list[str]:
    """Two connections held and two idle in the pool (min_size 4: the fork never depends
    on how far the pool had grown), then a child uses its wrapper and closes its pools.
    The parent's idle sessions must survive on the server (seen from pg_stat_activity,
    not from what the parent reads on a socket the child may have written to)."""
    problems = []
    settings = {**settings, "POSTGRES_POOL": {"min_size": 4, "max_size": 4, "timeout": 5}}
    db = wrapper_class(settings, alias="fork")
    parent_pid = db.cursor().execute("SELECT pg_backend_pid()").fetchone()[0]
    other: dict[str, Any] = {}

    def hold() -> None:
        w = wrapper_class(settings, alias="fork")
        other["pid"] = w.cursor().execute("SELECT pg_backend_pid()").fetchone()[0]
        other["w"] = w

    t = threading.Thread(target=hold)
    t.start()
    t.join()
    wait_settled(db.pool, checked_out=2)
    idle_pids = {conn.info.backend_pid for conn in _compat.idle_connections(db.pool)}
    assert len(idle_pids) == 2, idle_pids  # what the test relies on, not what it checks
    child = os.fork()
    if child == 0:  # pragma: no cover - child
        code = 0
        try:
            w = wrapper_class(settings, alias="fork")
            pid = w.cursor().execute("SELECT pg_backend_pid()").fetchone()[0]
            pid2 = db.cursor().execute("SELECT pg_backend_pid()").fetchone()[0]
            if {pid, pid2} & {parent_pid, other["pid"]}:
                code = 3
            w.close()
            db.close()
            close_all_pools()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        problems.append(f"child failed with {code}")
    gone = sessions_gone(server, idle_pids)
    if gone:
        problems.append(f"the parent's idle sessions {sorted(gone)} ended with the child")
    try:
        if db.cursor().execute("SELECT pg_backend_pid()").fetchone()[0] != parent_pid:
            problems.append("parent's connection changed")
        other["w"].cursor().execute("SELECT 1")
        db.close()
        other["w"].close()
        for _ in range(4):
            w = wrapper_class(settings, alias="fork")
            w.cursor().execute("SELECT 1")
            w.close()
    except psycopg.Error as exc:
        problems.append(f"parent broken after fork: {exc}")
    return problems


def test_fork_safety(pooled, postgres):
    assert fork_problems(DatabaseWrapper, pooled, postgres) == []


@pytest.mark.canary
def test_canary_shared_across_fork(pooled, postgres):
    problems = fork_problems(VARIANTS["SharedAcrossFork"], pooled, postgres)
    assert any("idle sessions" in problem for problem in problems), problems
