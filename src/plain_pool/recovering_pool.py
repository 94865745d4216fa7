"""``RecoveringConnectionPool``: psycopg_pool with a short reconnection backoff.

Why: after the server goes away, psycopg_pool retries each failed
connection attempt with ``AttemptWithBackoff`` (1 s initial, x2, 10% jitter).
If a caller asked for a connection while the server was down, the
replacement attempts are then sleeping for up to seconds when the server
comes back, and the first caller waits for them. Our target is a working
connection within 100 ms of the server accepting connections again, so the
attempts here start at 20 ms and grow x1.5 up to a 50 ms cap, still giving
up after ``reconnect_timeout`` and calling ``reconnect_failed`` like the
original. A refused connection on a reachable host costs well under a
millisecond, so polling every 50 ms is cheap.

This overrides psycopg_pool's PRIVATE ``_add_connection(attempt, growing)``,
``_reset_connection(conn)`` and ``_connect(timeout)`` (to remember why the
last connection attempt failed) and subclasses its ``AttemptWithBackoff``.
Their shape is checked once, at import, by :mod:`plain_pool._compat`: if it
changed, a ``RuntimeWarning`` says so and the pool falls back to
psycopg_pool's own backoff (slower recovery, still correct) and to no reset
in flight (the reset runs on return; ``accepts_reset_in_flight`` is False).
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from psycopg_pool import ConnectionPool

from plain_pool import _compat, session_reset
from plain_pool.health import RESET_TIMEOUT

INITIAL_DELAY = 0.02
BACKOFF = 1.5
MAX_DELAY = 0.05

if _compat.BACKOFF_OK:

    class ShortBackoff(_compat.AttemptWithBackoff):  # type: ignore[misc,name-defined]
        """20 ms, x1.5, capped at 50 ms; gives up at the same deadline as the original."""

        INITIAL_DELAY = INITIAL_DELAY
        DELAY_BACKOFF = BACKOFF

        def update_delay(self, now: float) -> None:
            super().update_delay(now)
            self.delay = min(self.delay, MAX_DELAY)


class RecoveringConnectionPool(ConnectionPool):
    """A ConnectionPool whose reconnection attempts use :class:`ShortBackoff`, and which
    keeps connections returned with their session reset in flight.

    psycopg_pool closes a connection returned ACTIVE (a query still running):
    right for a caller that walked away mid-query, wrong for one whose
    ``DISCARD ALL`` was sent on purpose and will be read at the next checkout
    (``plain_pool.session_reset.send_reset``). Its ``check()`` reads that
    result before probing; ``getconn`` hands such a connection out as is: the
    wrapper's checkout finishes the reset (a connection taken straight from
    the pool fails its first query loudly, never runs it on a dirty session).
    """

    #: Read by the wrapper: the reset may be sent on return and finished at checkout.
    accepts_reset_in_flight = _compat.RESET_IN_FLIGHT_OK

    #: Why the pool's last connection attempt failed (connecting or its ``configure``),
    #: None once one succeeds. psycopg_pool only logs it and retries, so a checkout that
    #: times out while the pool cannot connect (the server refuses it, PgBouncer's
    #: ``max_client_conn``) would say nothing more than "couldn't get a connection"
    #: (evidence/pgbouncer/max_client_conn.py); the checkout's PoolTimeout names it.
    last_connect_error: BaseException | None = None

    if _compat.CONNECT_ERROR_OK:

        def _connect(self, timeout: float | None = None) -> Any:
            try:
                conn = super()._connect(timeout)
            except BaseException as exc:
                self.last_connect_error = exc
                raise
            self.last_connect_error = None
            return conn

    def _add_connection(self, attempt: Any, growing: bool = False) -> None:
        if attempt is None and _compat.BACKOFF_OK:
            attempt = ShortBackoff(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing=growing)

    def _reset_connection(self, conn: Any) -> None:
        if session_reset.reset_in_flight(conn):
            return  # left ACTIVE on purpose: finished at the next checkout
        super()._reset_connection(conn)

    @staticmethod
    def check_connection(conn: Any) -> None:
        """``check()``'s probe: the reset in flight first (bounded), then psycopg_pool's."""
        try:
            session_reset.finish_reset(
                conn, monotonic() + RESET_TIMEOUT, answer_within=RESET_TIMEOUT
            )
        except session_reset.ResetFailed:
            conn.close()  # check() drops it without closing: it may still be open
            raise
        ConnectionPool.check_connection(conn)
