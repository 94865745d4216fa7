"""Queries at the libpq level with a deadline.

Why: psycopg's ``execute`` waits without a deadline, so over a half-open link
(a dead peer behind something that still ACKs) it blocks until the kernel
gives up, far past any checkout timeout. The health probe and the reset in
flight both need "send now, and give up at this instant". The socket is the
caller's alone while this runs (a checked-out connection, or one the pool
has not handed to anybody).
"""

from __future__ import annotations

import select
from time import monotonic

import psycopg
from psycopg import pq


class AnswerTimeout(psycopg.OperationalError):
    """The server did not answer in time: the connection is treated as dead."""


def send(pgconn: pq.abc.PGconn, query: bytes) -> None:
    """Send ``query`` (simple protocol) without waiting for its result.

    psycopg's connections are non-blocking: what the kernel does not take at
    once stays in libpq's buffer and goes out in :func:`wait_until_answered`.
    """
    pgconn.send_query(query)
    pgconn.flush()


def wait_until_answered(pgconn: pq.abc.PGconn, deadline: float, what: str) -> bool:
    """Flush, then read until the results of what was sent are all in.

    Returns True if it had to wait on the socket (the answer arrived just now:
    the server was alive a moment ago), False if the answer was already
    buffered. Raises :class:`AnswerTimeout` at ``deadline``. ``poll``, not a
    selector: no descriptor to create and close on every call.
    """
    if pgconn.flush() == 0:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return False  # already there: the common case for a reset in flight
    fd = pgconn.socket
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while pgconn.flush() != 0:
        if not _poll(poller, deadline):
            raise AnswerTimeout(f"could not send the {what} in time")
    poller.modify(fd, select.POLLIN)
    while True:
        if not _poll(poller, deadline):
            raise AnswerTimeout(f"no answer to the {what} in time")
        pgconn.consume_input()
        if not pgconn.is_busy():
            return True


def _poll(poller: select.poll, deadline: float) -> bool:
    remaining = deadline - monotonic()
    return remaining > 0 and bool(poller.poll(remaining * 1000))


def collect(pgconn: pq.abc.PGconn, ok: tuple[pq.ExecStatus, ...], what: str) -> None:
    """Read every result (the connection is then idle); raise if one is not ``ok``.

    A server error is raised as psycopg raises it from ``execute``: its own
    class, SQLSTATE and diagnostics (a ``SET ROLE`` to a role not granted is
    ``InsufficientPrivilege``, 42501), so callers and judges see the cause.
    """
    failure: psycopg.Error | None = None
    while (result := pgconn.get_result()) is not None:
        if failure is None and result.status not in ok:
            failure = _error(result, what)
    if failure is not None:
        raise failure


def _error(result: pq.abc.PGresult, what: str) -> psycopg.Error:
    if result.status == pq.ExecStatus.FATAL_ERROR:
        # Decoded as UTF-8 with replacement (psycopg's Diagnostic decodes with "replace"):
        # the message text is for people, the SQLSTATE and class are what code reads.
        return psycopg.errors.error_from_result(result, encoding="utf-8")
    status = pq.ExecStatus(result.status).name
    return psycopg.OperationalError(f"{what} failed: unexpected result {status}")


def run(
    pgconn: pq.abc.PGconn, query: bytes, deadline: float, ok: tuple[pq.ExecStatus, ...], what: str
) -> None:
    """:func:`send`, :func:`wait_until_answered`, :func:`collect`: one query, bounded."""
    send(pgconn, query)
    wait_until_answered(pgconn, deadline, what)
    collect(pgconn, ok, what)


def drop_notifications(pgconn: pq.abc.PGconn) -> None:
    """Notifications libpq read but nobody took: nobody will (the session was reset)."""
    while pgconn.notifies() is not None:
        pass
