"""No session state reaches the next checkout, with canaries.

A pooled connection is shared by callers one after another: whatever one
caller changed in the session (SET, SET ROLE, temp tables, prepared
statements, advisory locks, LISTEN...) would otherwise leak to the next.

Each kind of session state is left on a pooled connection; the next checkout
must fingerprint exactly like a freshly configured connection. The check
returns the list of problems: the real backend must give none, the broken
variants (marked ``canary``) must give some.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from chaos.fingerprint import session_fingerprint
from chaos.targets.variants import VARIANTS
from plain_pool import DatabaseWrapper, close_all_pools
from plain_pool.giving_back import ReturnPolicy

ROLE = "plain_pool_leak_role"


@pytest.fixture(autouse=True)
def _close_pools():
    yield
    close_all_pools()


@pytest.fixture(scope="module")
def leak_role(postgres):
    with postgres.connect() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE}")
    return ROLE


def _set_guc(conn: psycopg.Connection) -> None:
    conn.execute("SET work_mem = '7MB'")


def _set_role(conn: psycopg.Connection) -> None:
    conn.execute(f"SET ROLE {ROLE}")


def _temp_table(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TEMP TABLE leak(x int)")


def _advisory_lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_lock(4242)")


def _listen(conn: psycopg.Connection) -> None:
    conn.execute("LISTEN leak_channel")


def _prepared(conn: psycopg.Connection) -> None:
    conn.execute("PREPARE leak_stmt AS SELECT 1")


def _with_hold_cursor(conn: psycopg.Connection) -> None:
    conn.execute("BEGIN")
    conn.execute("DECLARE leak_cur CURSOR WITH HOLD FOR SELECT 1")
    conn.execute("COMMIT")


def _isolation(conn: psycopg.Connection) -> None:
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE


def _read_only(conn: psycopg.Connection) -> None:
    conn.read_only = True


def _deferrable(conn: psycopg.Connection) -> None:
    conn.deferrable = True


def _autocommit_off(conn: psycopg.Connection) -> None:
    conn.autocommit = False


def _open_transaction(conn: psycopg.Connection) -> None:
    conn.autocommit = False
    conn.execute("SET LOCAL work_mem = '9MB'")


def _failed_transaction(conn: psycopg.Connection) -> None:
    conn.autocommit = False
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1/0")


def _timezone(conn: psycopg.Connection) -> None:
    conn.execute("SET TIME ZONE 'Asia/Kathmandu'")


def _session_characteristics(conn: psycopg.Connection) -> None:
    conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")


STATES: dict[str, Callable[[psycopg.Connection], None]] = {
    "guc": _set_guc,
    "set_role": _set_role,
    "temp_table": _temp_table,
    "advisory_lock": _advisory_lock,
    "listen": _listen,
    "prepared_statement": _prepared,
    "with_hold_cursor": _with_hold_cursor,
    "isolation_level": _isolation,
    "read_only": _read_only,
    "deferrable": _deferrable,
    "autocommit_off": _autocommit_off,
    "open_transaction": _open_transaction,
    "failed_transaction": _failed_transaction,
    "timezone": _timezone,
    "session_characteristics": _session_characteristics,
}


def leakage_problems(
    wrapper_class: type[DatabaseWrapper], settings: dict, dirty: Callable[..., None]
) -> list[str]:
    """Dirty the only pooled connection, return it, check out again: the differences."""
    settings = {**settings, "POSTGRES_POOL": {"min_size": 1, "max_size": 1, "timeout": 10}}
    fresh_db = DatabaseWrapper({**settings, "POSTGRES_POOL": False})
    expected = session_fingerprint(fresh_db.ensure_connection(), driver_statements="include")
    fresh_db.close()

    db = wrapper_class(settings, alias="leak")
    conn = db.ensure_connection()
    pid = conn.info.backend_pid
    dirty(conn)
    db.close()
    conn = db.ensure_connection()
    problems = []
    if conn.info.backend_pid != pid:
        problems.append("not the same backend: the check proved nothing")
    actual = session_fingerprint(conn, driver_statements="include")
    problems += expected.diff(actual)
    db.close()
    return problems


@pytest.mark.parametrize("state", list(STATES))
def test_no_session_state_reaches_next_checkout(state, postgres, make_db_settings, leak_role):
    settings = make_db_settings(postgres)
    assert leakage_problems(DatabaseWrapper, settings, STATES[state]) == []


@pytest.mark.parametrize("state", ["guc", "set_role", "temp_table", "listen"])
def test_no_leak_with_assume_role_and_zone(state, postgres, make_db_settings, leak_role):
    settings = make_db_settings(
        postgres,
        TIME_ZONE="America/Sao_Paulo",
        USE_TZ=False,
        POSTGRES_OPTIONS={"assume_role": ROLE},
    )
    assert leakage_problems(DatabaseWrapper, settings, STATES[state]) == []


@pytest.mark.canary
@pytest.mark.parametrize(
    ("variant", "state"),
    [
        ("NoResetOnReturn", "guc"),
        ("NoResetOnReturn", "set_role"),
        ("NoResetOnReturn", "temp_table"),
        ("ResetAllOnly", "set_role"),
        ("ResetAllOnly", "temp_table"),
        ("ResetAllOnly", "advisory_lock"),
        ("ResetAllOnly", "listen"),
        ("ResetAllOnly", "prepared_statement"),
    ],
)
def test_canary_leakage(variant, state, postgres, make_db_settings, leak_role):
    settings = make_db_settings(postgres)
    assert leakage_problems(VARIANTS[variant], settings, STATES[state]) != []


def commit_on_return_problems(wrapper_class, settings, postgres) -> list[str]:
    """A write left in an open transaction at return must NOT be committed."""
    with postgres.connect() as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS leak_writes(x int)")
        admin.execute("TRUNCATE leak_writes")
    db = wrapper_class({**settings, "POSTGRES_POOL": {"min_size": 1, "max_size": 1}}, alias="cw")
    conn = db.ensure_connection()
    conn.autocommit = False
    conn.execute("INSERT INTO leak_writes VALUES (1)")
    db.close()  # returned mid-transaction
    db.ensure_connection().execute("SELECT 1")
    db.close()
    with postgres.connect() as admin:
        count = admin.execute("SELECT count(*) FROM leak_writes").fetchone()[0]
    return [f"{count} half-done write(s) committed at return"] if count else []


def test_open_transaction_rolled_back_on_return(postgres, make_db_settings):
    settings = make_db_settings(postgres)
    assert commit_on_return_problems(DatabaseWrapper, settings, postgres) == []


@pytest.mark.canary
def test_canary_commit_on_return(postgres, make_db_settings):
    settings = make_db_settings(postgres)
    assert commit_on_return_problems(VARIANTS["CommitOnReturn"], settings, postgres) != []


@pytest.mark.parametrize("strategy", ["discard_all", "keep_prepared"])
def test_prepared_statements_on_survive_resets(strategy, postgres, make_db_settings):
    """prepare_threshold=0: the reset must not leave psycopg's cache stale (_pg3_N errors)."""

    class Wrapper(DatabaseWrapper):
        return_policy = ReturnPolicy(reset=strategy)

    settings = make_db_settings(
        postgres,
        POSTGRES_POOL={"min_size": 1, "max_size": 1},
        POSTGRES_OPTIONS={"prepare_threshold": 0, "server_side_binding": True},
    )
    db = Wrapper(settings, alias=f"prep-{strategy}")
    for i in range(25):
        cur = db.cursor()
        assert cur.execute("SELECT %s::int", [i]).fetchone() == (i,)
        assert cur.execute("SELECT 1").fetchone() == (1,)
        if i % 5 == 0:
            db.connection.execute("PREPARE by_hand AS SELECT 2")
        db.close()
    fp = session_fingerprint(db.ensure_connection(), driver_statements="include")
    assert fp.prepared_statements == ()
    if strategy == "discard_all":
        assert fp.driver_prepared_statements == ()
    db.close()


def test_fingerprint_does_not_change_state(postgres):
    with postgres.connect() as conn:
        conn.autocommit = False
        before = session_fingerprint(conn)
        assert before.transaction_status == "IDLE"
        again = session_fingerprint(conn)
        assert conn.info.transaction_status.name == "IDLE"
        assert before == again and before.diff(again) == []
        assert eval(repr(before), {"SessionFingerprint": type(before)}) == before
        hash(before)
        conn.execute("SELECT 1")
        assert session_fingerprint(conn).transaction_status == "INTRANS"
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        failed = session_fingerprint(conn)
        assert failed.transaction_status == "INERROR" and failed.timezone is None
        conn.rollback()


def test_a_failed_configuration_raises_the_servers_own_error(postgres, make_db_settings):
    """``SET ROLE`` to a role that does not exist fails at checkout with the server's
    error class and SQLSTATE (22023), as psycopg's ``execute`` would raise it: callers
    and the suite's judge read the cause, not a bare OperationalError."""
    settings = make_db_settings(
        postgres, POSTGRES_OPTIONS={"assume_role": "plain_pool_no_such_role"}
    )
    db = DatabaseWrapper(settings, alias="no_such_role")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        db.ensure_connection()
    assert caught.value.sqlstate == "22023"
    assert "plain_pool_no_such_role" in str(caught.value)
    db.close()


def test_a_pool_that_cannot_configure_names_why_it_times_out(postgres, make_db_settings):
    """Pooled, the same failure happens in psycopg_pool's worker, which logs it and
    retries: the caller got a bare PoolTimeout (Django's pooled backend still does).
    The timeout names the last setup failure and chains it as its cause."""
    settings = make_db_settings(
        postgres,
        POSTGRES_POOL={"min_size": 1, "max_size": 2, "timeout": 1.5},
        POSTGRES_OPTIONS={"assume_role": "plain_pool_no_such_role"},
    )
    db = DatabaseWrapper(settings, alias="no_such_role_pooled")
    with pytest.raises(PoolTimeout) as caught:
        db.ensure_connection()
    assert isinstance(caught.value.__cause__, psycopg.errors.InvalidParameterValue)
    assert "plain_pool_no_such_role" in str(caught.value)
    assert "InvalidParameterValue" in str(caught.value)
    db.close()


def test_a_pool_that_cannot_connect_names_why_it_times_out(postgres, make_db_settings):
    """The same when the connection itself is refused (a database that does not exist
    here; PgBouncer's max_client_conn in evidence/pgbouncer/max_client_conn.py):
    psycopg_pool logs the error and retries, and the caller's PoolTimeout names it and
    chains it."""
    settings = make_db_settings(
        postgres,
        POSTGRES_POOL={"min_size": 1, "max_size": 2, "timeout": 1.0},
        POSTGRES_DATABASE="plain_pool_no_such_db",
    )
    db = DatabaseWrapper(settings, alias="no_such_db_pooled")
    with pytest.raises(PoolTimeout) as caught:
        db.ensure_connection()
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert 'database "plain_pool_no_such_db" does not exist' in str(caught.value)
    db.close()
    db.close_pool()
