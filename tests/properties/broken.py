"""Broken backends for the canaries of invariants plain_pool.variants has no variant for.

Each is one small override of :class:`plain_pool.DatabaseWrapper` (or its pool)
that breaks exactly one guarantee; the canaries assert the machines catch it.
They belong with the suite, not the package: they exist to prove checks.
(Candidates for plain_pool.variants - see the machines' report.)
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg

from plain_pool import DatabaseWrapper, pools
from plain_pool.recovering_pool import RecoveringConnectionPool


class LendsReturnedConnection(DatabaseWrapper):
    """Hands the last returned connection straight to the next checkout, though it is
    idle in the pool too: the pool can lend the same session to another request."""

    _last: ClassVar[list[tuple[pools.PoolEntry, psycopg.Connection]]] = []

    def _putconn(self, entry: pools.PoolEntry, conn: psycopg.Connection) -> None:
        if conn not in entry.pool._pool:  # lent by us while idle in the pool: already there
            super()._putconn(entry, conn)
        self._last[:] = [(entry, conn)]

    def _checkout(self, entry: pools.PoolEntry) -> psycopg.Connection:
        if self._last and self._last[0][0] is entry and not self._last[0][1].closed:
            return self._last.pop()[1]
        return super()._checkout(entry)


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
    """DISCARD ALL on return, but psycopg's prepared-statement cache is not forgotten."""

    def _reset_session(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        from plain_pool import session_reset

        session_reset.restore_client_attributes(
            conn,
            prepare_threshold=self.settings.prepare_threshold,
            cursor_factory=self._cursor_factory(),
        )
        conn.execute("DISCARD ALL", prepare=False)
        self._configure_pooled(conn)
        # missing: session_reset.forget_client_prepared_statements(conn)


class _OversizedPool(RecoveringConnectionPool):
    def __init__(self, *args: Any, max_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, max_size=(max_size or kwargs.get("min_size", 4)) + 2, **kwargs)


class IgnoresMaxSize(DatabaseWrapper):
    """The pool grows past POSTGRES_POOL["max_size"]."""

    def _pool_class(self) -> Any:
        return _OversizedPool


BROKEN: dict[str, type[DatabaseWrapper]] = {
    cls.__name__: cls
    for cls in (LendsReturnedConnection, NeverExpires, KeepsStatementCache, IgnoresMaxSize)
}
