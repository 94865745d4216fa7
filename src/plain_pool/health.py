"""Checkout with a health check and fast recovery.

Why not psycopg_pool's own ``check``: its ``_getconn_with_check_loop``
sleeps 1, 2, 4 s between failed checks, so after a fast server restart a
pool of 4 dead connections makes the first caller wait ~6.6 s (spec
section 3). Here the pool is created with ``check=None`` and the check runs
in this loop instead:

1. ``getconn(timeout=remaining)``;
2. run the check (the user's ``check`` if given, else
   ``ConnectionPool.check_connection``);
3. on failure: close the connection and ``putconn`` it (the pool discards
   it and schedules a replacement); unless the last drain already covered
   this connection, ``drain()`` the pool - one dead pooled connection means every
   idle connection from before the failure is suspect, and connections
   checked out now are discarded when returned; then retry at once, without
   sleeping.

A connection created BEFORE the last drain does not trigger another drain:
that drain already condemned it and every sibling of its generation (when
several callers hold dead connections at once, only the first failure
drains). A connection created AFTER the last drain that fails is a new
failure (e.g. a second restart), so it drains again.

Everything happens within the pool's timeout: ``PoolTimeout`` at the deadline,
like the pool's own ``getconn``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic
from typing import Any

import psycopg

from plain_pool.pools import PoolEntry

logger = logging.getLogger("plain_pool.health")

#: Attribute stamped on each connection by the pool's configure callback.
CREATED_AT = "_plain_pool_created_at"


def stamp_created(conn: psycopg.Connection) -> None:
    """Record when a connection was made (compared with the last drain)."""
    setattr(conn, CREATED_AT, monotonic())


def covered_by_last_drain(entry: PoolEntry, conn: psycopg.Connection) -> bool:
    """True if ``conn`` was made before the last drain (which already handled it)."""
    return getattr(conn, CREATED_AT, 0.0) <= entry.last_drain


def drain_for(entry: PoolEntry, conn: psycopg.Connection) -> bool:
    """Drain the pool unless the last drain already covered ``conn``. True if drained."""
    with entry.lock:
        if covered_by_last_drain(entry, conn):
            return False
        entry.last_drain = monotonic()
    entry.counters["drains"] += 1
    try:
        entry.pool.drain()
    except Exception as exc:  # a closed pool: nothing to drain
        logger.info("drain of %r skipped: %s", entry.pool, exc)
    return True


def checkout(
    entry: PoolEntry,
    check: Callable[[psycopg.Connection], Any] | None,
    timeout: float | None = None,
) -> psycopg.Connection:
    """Get a connection from ``entry.pool`` that passed ``check`` (if any)."""
    from psycopg_pool import PoolTimeout  # lazily: plain_pool imports without psycopg_pool

    pool = entry.pool
    if timeout is None:
        timeout = pool.timeout
    if check is None:
        return pool.getconn(timeout=timeout)
    deadline = monotonic() + timeout
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise PoolTimeout(f"couldn't get a connection after {timeout:.2f} sec")
        try:
            conn = pool.getconn(timeout=remaining)
        except PoolTimeout:
            raise PoolTimeout(f"couldn't get a connection after {timeout:.2f} sec") from None
        try:
            check(conn)
        except Exception as exc:
            entry.counters["checks_failed"] += 1
            logger.info("pooled connection failed its check: %s", exc)
            discard(entry, conn)
            drain_for(entry, conn)
            continue
        except BaseException:
            pool.putconn(conn)
            raise
        return conn


def discard(entry: PoolEntry, conn: psycopg.Connection) -> None:
    """Close a connection and hand it back so the pool replaces it."""
    try:
        conn.close()
    finally:
        try:
            entry.pool.putconn(conn)
        except Exception as exc:
            logger.warning("putconn of a discarded connection failed: %s", exc)
