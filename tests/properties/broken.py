"""Broken backends for the canaries of invariants plain_pool.variants has no variant for.

Each is one small override of :class:`plain_pool.DatabaseWrapper` (or its pool)
that breaks exactly one guarantee; the canaries assert the machines catch it.
They belong with the suite, not the package: they exist to prove checks.
(Candidates for plain_pool.variants - see the machines' report.)
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import psycopg
from psycopg.pq import TransactionStatus

from plain_pool import DatabaseWrapper, pools
from plain_pool.recovering_pool import RecoveringConnectionPool


class SharesConnectionAcrossThreads(DatabaseWrapper):
    """A connection cached per alias, not per thread: two requests use one session."""

    _shared: ClassVar[dict[str, tuple[pools.PoolEntry, psycopg.Connection]]] = {}

    def connect(self) -> None:
        shared = self._shared.get(self.alias)
        if shared is not None and not shared[1].closed:
            self._conn_entry, self.connection = shared
            return
        super().connect()
        assert self._conn_entry is not None and self.connection is not None
        self._shared[self.alias] = (self._conn_entry, self.connection)

    def close(self) -> None:
        shared = self._shared.get(self.alias)
        if shared is not None and shared[1] is self.connection:
            del self._shared[self.alias]
        super().close()


class _ImmortalPool(RecoveringConnectionPool):
    def _add_to_pool(self, conn: Any) -> None:
        conn._expire_at = float("inf")  # max_lifetime never reached
        super()._add_to_pool(conn)

    def _return_connection(self, conn: Any, from_getconn: bool) -> None:
        conn._expire_at = float("inf")
        super()._return_connection(conn, from_getconn)


class NeverExpires(DatabaseWrapper):
    """max_lifetime is ignored: old connections are handed out again."""

    def _pool_class(self) -> Any:
        return _ImmortalPool


class KeepsStatementCache(DatabaseWrapper):
    """The reset's DISCARD ALL may be prepared, and psycopg's cache is not forgotten."""

    def _reset_session(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        from plain_pool import session_reset

        session_reset.restore_client_attributes(
            conn,
            prepare_threshold=entry.configurer.settings.prepare_threshold,
            cursor_factory=entry.configurer.cursor_factory(),
        )
        # prepare left to psycopg: run five times, DISCARD ALL gets prepared itself, and from
        # then on psycopg's cache names statements the server dropped (psycopg 3.3.9).
        conn.execute("DISCARD ALL")
        entry.configurer.configure(conn)
        # missing too: session_reset.forget_client_prepared_statements(conn)


class _OversizedPool(RecoveringConnectionPool):
    def __init__(self, *args: Any, max_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, max_size=(max_size or kwargs.get("min_size", 4)) + 2, **kwargs)


class IgnoresMaxSize(DatabaseWrapper):
    """The pool grows past POSTGRES_POOL["max_size"]."""

    def _pool_class(self) -> Any:
        return _OversizedPool


class UnboundedRollbackOnReturn(DatabaseWrapper):
    """Rolls back a transaction left open BEFORE the return deadline starts (the slip a
    refactor makes): over a half-open link, returning the connection blocks as long as
    the link stays half-open."""

    def _return_to_pool(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        if not conn.closed and conn.info.transaction_status in (
            TransactionStatus.INTRANS,
            TransactionStatus.INERROR,
        ):
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        super()._return_to_pool(conn, entry)


class ProbesPoolBeforeReplacing(DatabaseWrapper):
    """Replaces a pool only after psycopg_pool's check() of its idle connections, which has
    no deadline: over a half-open link, ensure_timezone() / close_pool() wait for it."""

    def _close_and_forget_pool(self, entry: pools.PoolEntry) -> None:
        with contextlib.suppress(Exception):
            entry.pool.check()
        super()._close_and_forget_pool(entry)


class ResetOnlyWithHealthChecks(DatabaseWrapper):
    """The reset wired into the health-check path: with checks off, nothing is reset."""

    def _reset_session(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        if self.settings.conn_health_checks:
            super()._reset_session(conn, entry)


class HandsOutResetInFlight(DatabaseWrapper):
    """The checkout never reads the reset sent on return: the next request gets a
    connection whose ``DISCARD ALL`` is still on the wire."""

    def _finish_reset(
        self, entry: pools.PoolEntry, conn: psycopg.Connection, deadline: float
    ) -> bool | None:
        return None


class ConfiguresOnlyWhatItFinished(DatabaseWrapper):
    """Configures a session only when this checkout read its reset: a reset finished
    by the pool's own ``check()`` leaves the session unconfigured (no ``SET ROLE``).
    The suite found this one in the first version of the reset in flight."""

    def _finish_reset(
        self, entry: pools.PoolEntry, conn: psycopg.Connection, deadline: float
    ) -> bool | None:
        from plain_pool import health, session_reset

        fresh = session_reset.finish_reset(conn, deadline, answer_within=health.RESET_TIMEOUT)
        session_reset.take_configure_due(conn)
        if fresh is not None:
            entry.configurer.configure(conn)
        return fresh


BROKEN: dict[str, type[DatabaseWrapper]] = {
    cls.__name__: cls
    for cls in (
        SharesConnectionAcrossThreads,
        NeverExpires,
        KeepsStatementCache,
        IgnoresMaxSize,
        UnboundedRollbackOnReturn,
        ProbesPoolBeforeReplacing,
        ResetOnlyWithHealthChecks,
        HandsOutResetInFlight,
        ConfiguresOnlyWhatItFinished,
    )
}
