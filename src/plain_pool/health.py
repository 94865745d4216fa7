"""Checkout with a health check and fast recovery.

Why not psycopg_pool's own ``check``: its ``_getconn_with_check_loop``
sleeps 1, 2, 4 s between failed checks, so after a fast server restart a
pool of 4 dead connections makes the first caller wait ~6.6 s (spec
section 3). Here the pool is created with ``check=None`` and the check runs
in this loop instead:

1. ``getconn(timeout=remaining)``;
2. run the check (the user's ``check`` if given, else
   ``ConnectionPool.check_connection``);
3. on failure - the check raised ANY ``Exception``, not only ``psycopg.Error``
   (a user check is arbitrary code: ValueError, RuntimeError, ...), or a user
   check returned but left the connection closed, broken or in a transaction
   (:func:`verified`) - close the connection and ``putconn`` it (the pool discards
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

The default check is :func:`check_connection`, which - unlike
``ConnectionPool.check_connection`` - has a client-side deadline. A pooled
connection whose peer stopped answering without closing (a half-open link:
a dead host behind a live proxy or NAT, a black-holing firewall) would
otherwise block the check until the kernel gives up, far past the checkout
timeout. TCP keepalives do not help when something in between still ACKs;
``statement_timeout`` does not help when the query never reaches the
server. So the probe is bounded by ``min(remaining, HEALTH_CHECK_TIMEOUT)``
and a connection that misses it is treated as dead.

The same hazard exists on the way back: the rollback and session reset run
when a connection is returned are ordinary queries, and over a half-open
link they block until the link heals (measured: ``close()`` returned only
when the fault was removed, 4 s later). :func:`return_deadline` bounds them
by :data:`RESET_TIMEOUT`: past it the connection's socket is shut down, the
reset fails at once and the connection is discarded like any broken one.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from time import monotonic
from typing import Any

import psycopg
from psycopg import pq

from plain_pool import _wire
from plain_pool._redact import redact
from plain_pool.pools import PoolEntry

logger = logging.getLogger("plain_pool.health")

#: Attribute stamped on each connection by the pool's configure callback.
CREATED_AT = "_plain_pool_created_at"

#: Upper bound of one health probe, in seconds. Generous next to a round trip
#: (a slow but working link still passes), short next to a checkout timeout
#: (a half-open connection does not eat a caller's whole budget).
HEALTH_CHECK_TIMEOUT = 2.0


#: Upper bound of the rollback + session reset when a connection is returned.
RESET_TIMEOUT = 2.0

#: How often the deadline watchdog looks for connections past their deadline.
WATCHDOG_TICK = 0.1


class HealthCheckTimeout(_wire.AnswerTimeout):
    """The health probe got no answer in time: the connection is treated as dead."""


def check_connection(conn: psycopg.Connection, timeout: float = HEALTH_CHECK_TIMEOUT) -> None:
    """Send an empty query and wait at most ``timeout`` seconds for its answer.

    Works at the libpq level so that the wait has a deadline (psycopg's
    ``execute`` has none) and so that no ``BEGIN`` is sent whatever the
    connection's autocommit setting. The connection is checked out by the
    caller alone, so nothing else uses its socket meanwhile.
    """
    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        name = pq.TransactionStatus(pgconn.transaction_status).name
        raise psycopg.OperationalError(f"the connection is not idle ({name})")
    try:
        _wire.run(
            pgconn,
            b"",
            monotonic() + timeout,
            (pq.ExecStatus.EMPTY_QUERY, pq.ExecStatus.COMMAND_OK),
            "health probe",
        )
    except _wire.AnswerTimeout as exc:
        raise HealthCheckTimeout(f"no answer to the health probe within {timeout:.2f} s") from exc


def stamp_created(conn: psycopg.Connection) -> None:
    """Record when a connection was made (compared with the last drain)."""
    setattr(conn, CREATED_AT, monotonic())


def setup_failure(entry: PoolEntry) -> BaseException | None:
    """Why the pool's last attempt to set up a connection failed (None: it did not):
    connecting (RecoveringConnectionPool records it), else its ``configure``."""
    return getattr(entry.pool, "last_connect_error", None) or entry.last_setup_error


def _timed_out(
    timeout: float, timeout_class: type[Exception], failure: BaseException | None
) -> Exception:
    """The checkout's PoolTimeout, naming the pool's last setup failure when there is one."""
    message = f"couldn't get a connection after {timeout:.2f} sec"
    if failure is not None:
        cause = redact(str(failure).strip().splitlines()[0] if str(failure).strip() else "")
        message += (
            f"; the pool's last attempt to set up a connection failed: "
            f"{type(failure).__name__}: {cause}"
        )
    return timeout_class(message)


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


def require_usable(conn: psycopg.Connection) -> None:
    """Raise unless ``conn`` is open and idle (what a check that returned must leave)."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the check left the connection closed")
    status = conn.pgconn.transaction_status
    if status != pq.TransactionStatus.IDLE:
        name = pq.TransactionStatus(status).name
        raise psycopg.OperationalError(f"the check left the connection not idle ({name})")


def verified(check: Callable[[psycopg.Connection], Any]) -> Callable[[psycopg.Connection], None]:
    """``check``, then :func:`require_usable`: a user check that closed the connection
    (or left a transaction open) and returned normally has failed it - handing the
    connection out would fail the caller's first query instead."""

    def verified_check(conn: psycopg.Connection) -> None:
        check(conn)
        require_usable(conn)

    return verified_check


def checkout(
    entry: PoolEntry,
    check: Callable[[psycopg.Connection], Any] | None,
    timeout: float | None = None,
    *,
    failures: tuple[type[BaseException], ...] = (Exception,),
    finish_reset: Callable[[PoolEntry, psycopg.Connection, float], bool | None] | None = None,
) -> psycopg.Connection:
    """Get a connection from ``entry.pool`` whose reset finished and that passed ``check``.

    ``finish_reset(entry, conn, deadline)`` reads the reset sent when the
    connection was last returned (None: none was in flight, True: its answer
    arrived just now). A reset that fails discards the connection like a
    failed check. The default probe is skipped when the reset's answer
    arrived just now: that answer IS a probe. ``failures``: what a failing
    check may raise for its connection to be discarded and the checkout
    retried (anything else propagates).
    """
    from psycopg_pool import PoolTimeout  # lazily: plain_pool imports without psycopg_pool

    pool = entry.pool
    if timeout is None:
        timeout = pool.timeout
    deadline = monotonic() + timeout
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            failure = setup_failure(entry)  # read once: the pool may clear it meanwhile
            raise _timed_out(timeout, PoolTimeout, failure) from failure
        try:
            conn = pool.getconn(timeout=remaining)
        except PoolTimeout:
            failure = setup_failure(entry)
            raise _timed_out(timeout, PoolTimeout, failure) from failure
        fresh: bool | None = None
        if finish_reset is not None:
            try:
                fresh = finish_reset(entry, conn, deadline)
            except Exception as exc:
                _reject(entry, conn, "reset_failures", "its session reset", exc)
                continue
            except BaseException:
                discard(entry, conn)  # its reset was interrupted: the session may be dirty
                raise
        if check is None or (fresh and check is check_connection):
            return conn
        try:
            if check is check_connection:
                check_connection(conn, min(deadline - monotonic(), HEALTH_CHECK_TIMEOUT))
            else:
                check(conn)
        except failures as exc:
            _reject(entry, conn, "checks_failed", "its check", exc)
            continue
        except BaseException:
            pool.putconn(conn)
            raise
        return conn


def _reject(
    entry: PoolEntry, conn: psycopg.Connection, counter: str, what: str, exc: Exception
) -> None:
    """A connection that failed at checkout: count it, discard it, drain its generation."""
    entry.counters[counter] += 1
    logger.info("pooled connection failed %s: %s", what, exc)
    discard(entry, conn)
    drain_for(entry, conn)


def discard(entry: PoolEntry, conn: psycopg.Connection) -> None:
    """Close a connection and hand it back so the pool replaces it."""
    try:
        conn.close()
    finally:
        try:
            entry.pool.putconn(conn)
        except Exception as exc:
            logger.warning("putconn of a discarded connection failed: %s", exc)


def shutdown_socket(conn: psycopg.Connection) -> None:
    """Shut the connection's socket down: whatever waits on it wakes up with EOF.

    The descriptor itself stays psycopg's (a duplicate is shut down and closed).
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # already closed
    dup = os.dup(fd)
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that shuts down the sockets of connections past their deadline.

    Cheaper than a ``threading.Timer`` per return (a thread each): arming is a
    heap push under a lock and wakes nobody - the thread looks at the heap
    every :data:`WATCHDOG_TICK` seconds, so a deadline fires up to one tick
    late (the deadlines are seconds long). A wake-up per arm measured as a
    thread switch per checkout. The shutdown runs under the lock, so a
    disarmed entry's connection (which its owner may close right after) is
    never touched.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heap: list[list[Any]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, conn: psycopg.Connection, seconds: float) -> list[Any]:
        entry = [monotonic() + seconds, next(self._seq), conn]
        with self._lock:
            heapq.heappush(self._heap, entry)
            if self._thread is None:  # first use, or the first since a fork (see forget_thread)
                self._thread = threading.Thread(
                    target=self._run, name="plain_pool-return-deadline", daemon=True
                )
                self._thread.start()
        return entry

    def forget_thread(self) -> None:
        """In a forked child: the thread is gone, and so is whatever it was watching."""
        self._lock = threading.Lock()
        self._heap = []
        self._thread = None

    def disarm(self, entry: list[Any]) -> None:
        with self._lock:
            entry[2] = None

    def _run(self) -> None:
        while True:
            time.sleep(WATCHDOG_TICK)
            now = monotonic()
            with self._lock:
                while self._heap and (self._heap[0][2] is None or self._heap[0][0] <= now):
                    entry = heapq.heappop(self._heap)
                    conn, entry[2] = entry[2], None
                    if conn is None:
                        continue
                    try:
                        shutdown_socket(conn)
                    except Exception as exc:  # never let the watchdog die
                        logger.warning("could not shut down %r past its deadline: %s", conn, exc)


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.forget_thread)


class return_deadline:
    """Bound the block (a rollback on return, configuring after a reset): past
    ``seconds`` the socket is shut down. A class, not a generator-based context
    manager: it is on every checkout's path."""

    __slots__ = ("_conn", "_entry", "_seconds")

    def __init__(self, conn: psycopg.Connection, seconds: float = RESET_TIMEOUT) -> None:
        self._conn = conn
        self._seconds = seconds

    def __enter__(self) -> None:
        self._entry = _WATCHDOG.arm(self._conn, self._seconds)

    def __exit__(self, *exc_info: object) -> None:
        _WATCHDOG.disarm(self._entry)
