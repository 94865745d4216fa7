"""A user ``check`` (POSTGRES_POOL["check"]) that fails, however it fails, costs a retry only.

The checkout must discard the connection the check failed and hand out
another one: never the check's exception, never the failed connection. Before
the fix, a check that closed the connection and returned normally had that
closed connection handed to the caller, whose first query then failed.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from plain_pool import ConnectionHandler, close_all_pools


@pytest.fixture(autouse=True)
def _close_pools():
    yield
    close_all_pools()


class OnceFailingCheck:
    """Fails its first call with ``fail(conn)``; records the pids it failed."""

    def __init__(self, fail: Callable[[psycopg.Connection], None]) -> None:
        self.fail = fail
        self.failed: list[int] = []

    def __call__(self, conn: psycopg.Connection) -> None:
        if self.failed:
            return
        self.failed.append(conn.info.backend_pid)
        self.fail(conn)


def _raise(exc: BaseException) -> Callable[[psycopg.Connection], None]:
    def fail(conn: psycopg.Connection) -> None:
        raise exc

    return fail


def _close_and_return(conn: psycopg.Connection) -> None:
    conn.close()


def _close_and_raise(conn: psycopg.Connection) -> None:
    conn.close()
    raise ValueError("closed it")


def _leave_transaction_open(conn: psycopg.Connection) -> None:
    conn.autocommit = False
    conn.execute("SELECT 1")


FAILURES = {
    "value_error": _raise(ValueError("rejected")),
    "runtime_error": _raise(RuntimeError("rejected")),
    "psycopg_error_subclass": _raise(psycopg.errors.AdminShutdown("rejected")),
    "close_and_return": _close_and_return,
    "close_and_raise": _close_and_raise,
    "leave_transaction_open": _leave_transaction_open,
}


@pytest.mark.parametrize("how", list(FAILURES))
def test_failing_user_check_discards_and_retries(postgres, make_db_settings, how):
    check = OnceFailingCheck(FAILURES[how])
    settings = make_db_settings(
        postgres, POSTGRES_POOL={"min_size": 1, "max_size": 1, "timeout": 5, "check": check}
    )
    db = ConnectionHandler({"user_check": settings})["user_check"]
    for _ in range(2):  # the second checkout: the failed connection is not back either
        conn = db.ensure_connection()
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.info.backend_pid not in check.failed
        db.close()
    assert len(check.failed) == 1
    assert db.pool_stats()["checks_failed"] == 1
