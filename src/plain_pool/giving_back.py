"""``ReturnPolicy``: how a checked-out connection goes back to its pool.

Three steps, each a method a variant can replace: the transaction left open
is rolled back, never committed (``end_transaction``); the session is reset
(``reset``: in flight by default, see session_reset.py); the connection goes
back to ITS OWN pool (``putconn``), even when the alias has a newer one
(psycopg_pool refuses a stranger, and a pool that accepted it would hand out
a session made for other settings). A connection that cannot be reset is
closed: its pool replaces it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus

from plain_pool import health, session_reset
from plain_pool.pools import PoolEntry

if TYPE_CHECKING:
    from plain_pool.wrapper import DatabaseWrapper

logger = logging.getLogger("plain_pool")


class ReturnPolicy:
    """Roll back, reset, putconn to the connection's own pool.

    ``reset``: ``"discard_all"`` (default: ``DISCARD ALL`` in flight) or
    ``"keep_prepared"`` (deadpool-style, keeps psycopg's prepared statements;
    run on return, in a pipeline).
    """

    def __init__(self, reset: str = "discard_all") -> None:
        if reset not in session_reset.STRATEGIES:
            names = ", ".join(sorted(session_reset.STRATEGIES))
            raise ValueError(f"unknown reset strategy {reset!r} (expected one of {names})")
        self.reset_strategy = reset

    def give_back(
        self, wrapper: DatabaseWrapper, conn: psycopg.Connection, entry: PoolEntry
    ) -> None:
        status = conn.pgconn.transaction_status
        if conn.closed or status in (TransactionStatus.UNKNOWN, TransactionStatus.ACTIVE):
            if conn.broken:
                # The socket died: the server probably went away, so every
                # idle connection from before now is suspect.
                health.drain_for(entry, conn)
            self.putconn(wrapper, entry, conn)
            return
        if entry.pool.closed:
            self.putconn(wrapper, entry, conn)  # a closed pool closes it
            return
        try:
            if status != TransactionStatus.IDLE:
                with health.return_deadline(conn):  # a half-open link must not hang close()
                    self.end_transaction(conn)
            self.reset(wrapper, conn, entry)
        except Exception as exc:
            entry.counters["reset_failures"] += 1
            logger.warning("session reset failed, discarding the connection: %s", exc)
            conn.close()
            if conn.broken:
                health.drain_for(entry, conn)
        self.putconn(wrapper, entry, conn)

    def end_transaction(self, conn: psycopg.Connection) -> None:
        """A transaction left open is rolled back, NEVER committed."""
        if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            conn.rollback()

    def reset(self, wrapper: DatabaseWrapper, conn: psycopg.Connection, entry: PoolEntry) -> None:
        """``discard_all`` on a pool that accepts it: sent now, finished at the next
        checkout. Otherwise run here, within the return deadline."""
        configurer = entry.configurer  # configure for the POOL's settings
        prepare_threshold = configurer.settings.prepare_threshold
        cursor_factory = configurer.cursor_factory()
        if self.reset_strategy == "discard_all" and getattr(
            entry.pool, "accepts_reset_in_flight", False
        ):
            session_reset.send_reset(
                conn, prepare_threshold=prepare_threshold, cursor_factory=cursor_factory
            )
        else:
            with health.return_deadline(conn):  # a half-open link must not hang close()
                session_reset.reset_session(
                    conn,
                    statements=session_reset.STRATEGIES[self.reset_strategy],
                    configure=configurer.configure,
                    session_zone_after_reset=entry.zone,
                    prepare_threshold=prepare_threshold,
                    cursor_factory=cursor_factory,
                )
        entry.counters["resets"] += 1

    def putconn(self, wrapper: DatabaseWrapper, entry: PoolEntry, conn: Any) -> None:
        entry.pool.putconn(conn)
