"""``DatabaseWrapper``: one thread's handle on one database alias.

Pooled mode (``POSTGRES_POOL``): a connection is checked out of the
process-wide pool of the alias on first use and returned on ``close()``,
its session reset sent on the way back and read at the next checkout
(session_reset.py). Non-pooled mode keeps the classic Django behaviour:
``CONN_MAX_AGE`` persistent connections, a health check once per request,
``close_if_unusable_or_obsolete`` at request start and end.

Sessions are configured by a :class:`~plain_pool.configuration.SessionConfigurer`
(``configurer_class``) on every path - new pooled connection, after each
reset, non-pooled ``init_connection_state`` - so a subclass of it is always
honoured (Django #35688).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from plain_pool import health, pools, session_reset
from plain_pool.configuration import SessionConfigurer
from plain_pool.exceptions import (
    ConnectionClosedInAtomicBlock,
    ImproperlyConfigured,
    ServerSideCursorsDisabled,
    TransactionManagementError,
)
from plain_pool.settings import DatabaseSettings
from plain_pool.transactions import Atomic

logger = logging.getLogger("plain_pool")

#: Seconds ``close()`` waits for each of a replaced pool's worker threads.
POOL_CLOSE_TIMEOUT = 0.2

#: Counters every pool_stats() includes (zero when nothing happened).
BACKEND_COUNTERS = ("checks_failed", "drains", "resets", "reset_failures")


class SettingsRef:
    """A shared, replaceable reference to an alias's settings.

    Every thread's wrapper of an alias reads the same ref, so
    ``ConnectionHandler.update_settings`` reaches all of them at once.
    """

    __slots__ = ("current",)

    def __init__(self, current: DatabaseSettings) -> None:
        self.current = current


class DatabaseWrapper:
    """A thread's connection to one database alias (pooled or not)."""

    #: False only in the SharedAcrossFork canary.
    fork_safe: ClassVar[bool] = True
    #: Reset strategy on return: "discard_all" (default) or "keep_prepared"
    #: (deadpool-style, keeps psycopg's prepared statements).
    reset_strategy: ClassVar[str] = "discard_all"
    #: How sessions are configured (time zone, role): subclass it to change that, on
    #: every path (Django #35688).
    configurer_class: ClassVar[type[SessionConfigurer]] = SessionConfigurer
    #: What a failing health check may raise for the connection to be discarded and the
    #: checkout retried: any Exception - a user ``check`` is arbitrary code.
    check_failures: ClassVar[tuple[type[BaseException], ...]] = (Exception,)

    def __init__(
        self,
        settings: DatabaseSettings | dict[str, Any] | str,
        alias: str = "default",
        *,
        settings_ref: SettingsRef | None = None,
    ) -> None:
        self.alias = alias
        self._settings_ref = settings_ref or SettingsRef(DatabaseSettings.coerce(settings))
        self.connection: psycopg.Connection | None = None
        #: The pool entry the current connection came from (None: not pooled).
        self._conn_entry: pools.PoolEntry | None = None
        self._pid = os.getpid()
        self._thread_ident = threading.get_ident()
        self._savepoint_count = 0
        self.autocommit = True
        self.in_atomic_block = False
        self.savepoint_ids: list[str | None] = []
        self.atomic_blocks: list[Atomic] = []
        self.needs_rollback = False
        self.closed_in_transaction = False
        self.commit_on_exit = True
        self.close_at: float | None = None
        self.health_check_done = False
        pools.register_wrapper(self)

    # -- settings -----------------------------------------------------------
    @property
    def settings(self) -> DatabaseSettings:
        return self._settings_ref.current

    @property
    def timezone_name(self) -> str:
        """The zone sessions must have: "UTC" when USE_TZ, else TIME_ZONE."""
        return self.settings.connection_timezone

    @property
    def pooled(self) -> bool:
        return self.settings.pooled

    # -- configuration -------------------------------------------------------------
    def init_connection_state(self) -> None:
        """Configure a non-pooled connection; pooled ones were configured by the pool."""
        if self._conn_entry is None and self.connection is not None:
            self.configurer_class(self.settings).configure(self.connection)

    def _pool_configurer(self) -> SessionConfigurer:
        """The configurer a new pool captures: frozen at the settings it is made for."""
        return self.configurer_class(self.settings)

    # -- the pool -----------------------------------------------------------------
    def _pool_key(self) -> tuple[Any, ...]:
        return (type(self), self.alias, self.settings.identity())

    def _health_check(self) -> Callable[[psycopg.Connection], Any] | None:
        """The user's ``check`` wins; else check_connection when health checks are on."""
        s = self.settings
        if s.pool and s.pool.get("check") is not None:
            return s.pool["check"]
        if s.conn_health_checks:
            return health.check_connection
        return None

    def _checkout_check(self) -> Callable[[psycopg.Connection], Any] | None:
        """The check our checkout loop runs (see health.py); a user check is
        :func:`~plain_pool.health.verified` (it must leave the connection usable)."""
        check = self._health_check()
        if check is None or check is health.check_connection:
            return check
        return health.verified(check)

    def _pool_check_callback(self) -> Callable[[psycopg.Connection], Any] | None:
        """psycopg_pool's own ``check``: None, our loop runs the check instead."""
        return None

    def _pool_class(self) -> Any:
        """The pool class (bare psycopg_pool.ConnectionPool in the BackoffRecovery canary)."""
        from plain_pool.recovering_pool import RecoveringConnectionPool

        return RecoveringConnectionPool

    def _create_pool_entry(self) -> pools.PoolEntry:
        s = self.settings
        if s.pool is None:
            raise ImproperlyConfigured("POSTGRES_POOL is not enabled")
        configurer = self._pool_configurer()
        options = {k: v for k, v in s.pool.items() if k != "check"}
        options.setdefault("name", f"plain_pool-{self.alias}")

        def configure_new_connection(conn: psycopg.Connection) -> None:
            """The pool's ``configure`` callback (runs in a pool worker thread)."""
            health.stamp_created(conn)
            configurer.configure(conn)

        pool = self._pool_class()(
            conninfo="",
            kwargs=configurer.connect_kwargs(),
            open=False,
            configure=configure_new_connection,
            check=self._pool_check_callback(),
            **options,
        )
        return pools.PoolEntry(
            pool=pool,
            key=self._pool_key(),
            zone=configurer.zone,
            fork_safe=self.fork_safe,
            configurer=configurer,
        )

    def _pool_entry(self, create: bool = True) -> pools.PoolEntry | None:
        if not self.pooled:
            return None
        if create:
            return pools.get_or_create(self._pool_key(), self._create_pool_entry)
        return pools.current(self._pool_key())

    @property
    def pool(self) -> Any:
        """The alias's current pool (created lazily, opened on first checkout), or None."""
        entry = self._pool_entry(create=True)
        return entry.pool if entry is not None else None

    def _checkout(self, entry: pools.PoolEntry) -> psycopg.Connection:
        return health.checkout(
            entry,
            self._checkout_check(),
            failures=self.check_failures,
            finish_reset=self._finish_reset,
        )

    def _get_pooled_connection(self) -> tuple[pools.PoolEntry, psycopg.Connection]:
        from psycopg_pool import PoolClosed

        retried = False
        while True:
            entry = self._pool_entry(create=True)
            assert entry is not None
            try:
                if entry.pool.closed:
                    entry.pool.open()
                return entry, self._checkout(entry)
            except PoolClosed:
                # Another thread swapped the pool between our lookup and use:
                # retry once with the new one. A closed pool still registered
                # (closed but not forgotten: every later checkout would fail) is an error.
                if retried or pools.current(entry.key) is entry:
                    raise
                retried = True

    def _forget_pool(self, entry: pools.PoolEntry) -> None:
        pools.forget(entry)

    def _close_and_forget_pool(self, entry: pools.PoolEntry) -> None:
        """Forget the pool (new callers get a new one), then close it without waiting long.

        psycopg_pool's ``close()`` joins its worker threads for up to 5 s each;
        a worker stuck in a connection attempt (server down, half-open link)
        would block ``ensure_timezone()`` / ``close_pool()`` for seconds (found
        by the state machines under a half-open fault). The workers are
        daemon threads and a closed pool closes whatever they still bring
        back, so a short join is enough.
        """
        try:
            self._forget_pool(entry)
        finally:
            entry.pool.close(timeout=POOL_CLOSE_TIMEOUT)

    def close_pool(self) -> None:
        """Close the alias's pool and forget it: the next use creates a new one."""
        entry = self._pool_entry(create=False)
        if entry is not None:
            self._close_and_forget_pool(entry)

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's get_stats() plus the backend's own counters."""
        entry = self._pool_entry(create=False) or self._conn_entry
        stats: dict[str, int] = dict.fromkeys(BACKEND_COUNTERS, 0)
        if entry is not None:
            stats.update(entry.pool.get_stats())
            stats.update(entry.counters)
        return stats

    # -- connection lifecycle ---------------------------------------------------
    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            pools._check_pid()
            self._after_fork_in_child()

    def _after_fork_in_child(self) -> None:
        """Drop (after neutralising) a connection inherited from the parent."""
        if self._pid == os.getpid():
            return
        conn = self.connection
        if conn is not None:
            pools.neutralise(conn)
        self.connection = None
        self._conn_entry = None
        if self.in_atomic_block:
            self.closed_in_transaction = True
            self.needs_rollback = True
        self._pid = os.getpid()

    def connect(self) -> None:
        """Get a connection: from the pool, or a new one (non-pooled)."""
        if self.in_atomic_block and self.closed_in_transaction:
            raise ConnectionClosedInAtomicBlock(
                "Cannot open a new connection in an atomic block: "
                "the connection was closed inside it"
            )
        self._check_fork()
        s = self.settings
        if s.pooled:
            entry, conn = self._get_pooled_connection()
            self._conn_entry = entry
            self.close_at = monotonic()  # CONN_MAX_AGE is 0 with a pool
        else:
            conn = psycopg.Connection.connect(**self.configurer_class(s).connect_kwargs())
            self._conn_entry = None
            age = s.conn_max_age
            self.close_at = None if age is None else monotonic() + age
        self.connection = conn
        self._pid = os.getpid()
        self.autocommit = True
        self.needs_rollback = False
        self.health_check_done = True
        try:
            self.init_connection_state()
        except BaseException:
            self.close()
            raise

    def ensure_connection(self) -> psycopg.Connection:
        self._check_fork()
        if self.connection is None:
            self.connect()
        assert self.connection is not None
        return self.connection

    def close(self) -> None:
        """Return the connection to its pool (after a reset) or close it."""
        self._check_fork()
        if self.connection is None:
            return
        try:
            self._close()
        finally:
            if self.in_atomic_block:
                self.closed_in_transaction = True
                self.needs_rollback = True
            self.connection = None
            self._conn_entry = None

    def _close(self) -> None:
        conn, entry = self.connection, self._conn_entry
        assert conn is not None
        if entry is None:
            conn.close()
        else:
            self._return_to_pool(conn, entry)

    def _return_to_pool(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        """Roll back, reset, then putconn to the connection's OWN pool."""
        pool = entry.pool
        status = conn.info.transaction_status
        if conn.closed or status in (TransactionStatus.UNKNOWN, TransactionStatus.ACTIVE):
            if conn.broken:
                # The socket died: the server probably went away, so every
                # idle connection from before now is suspect.
                health.drain_for(entry, conn)
            self._putconn(entry, conn)
            return
        if pool.closed:
            self._putconn(entry, conn)  # a closed pool closes it
            return
        try:
            if status != TransactionStatus.IDLE:
                with health.return_deadline(conn):  # a half-open link must not hang close()
                    self._end_transaction_on_return(conn)
            self._reset_session(conn, entry)
        except Exception as exc:
            entry.counters["reset_failures"] += 1
            logger.warning("session reset failed, discarding the connection: %s", exc)
            conn.close()
            if conn.broken:
                health.drain_for(entry, conn)
        self._putconn(entry, conn)

    def _putconn(self, entry: pools.PoolEntry, conn: psycopg.Connection) -> None:
        entry.pool.putconn(conn)

    def _end_transaction_on_return(self, conn: psycopg.Connection) -> None:
        """A transaction left open is rolled back, NEVER committed."""
        if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            conn.rollback()

    def _reset_session(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        """The reset on return (see session_reset.py). Overridable strategy.

        ``discard_all`` on a pool that accepts it: sent now, finished at the next
        checkout (:meth:`_finish_reset`). Otherwise run here, within the return deadline.
        """
        configurer = entry.configurer  # configure for the POOL's settings
        prepare_threshold = configurer.settings.prepare_threshold
        cursor_factory = configurer.cursor_factory()
        if self.reset_strategy == "discard_all" and getattr(
            entry.pool, "accepts_reset_in_flight", False
        ):
            session_reset.send_reset(
                conn, prepare_threshold=prepare_threshold, cursor_factory=cursor_factory
            )
            entry.counters["resets"] += 1
            return
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

    def _finish_reset(
        self, entry: pools.PoolEntry, conn: psycopg.Connection, deadline: float
    ) -> bool | None:
        """At checkout: the reset sent on return, read; then the pool's configuration.

        ``None``: no reset was in flight (a new connection, configured by the
        pool). True: its answer arrived just now (the connection is alive).
        """
        fresh = session_reset.finish_reset(conn, deadline, answer_within=health.RESET_TIMEOUT)
        if session_reset.take_configure_due(conn):
            with health.return_deadline(conn):  # SET ROLE over a half-open link
                entry.configurer.configure(conn)
        return fresh

    # -- time zone ------------------------------------------------------------
    def _on_timezone_change(self, entry: pools.PoolEntry) -> None:
        """The pool's sessions have the old zone in their startup options: replace it."""
        self._close_and_forget_pool(entry)

    def ensure_timezone(self) -> bool:
        """Apply a TIME_ZONE / USE_TZ change. Return True if anything changed.

        Closes and forgets the alias's pool if it was made for another zone
        (the next use creates a new one), then reconfigures the connection
        this wrapper holds. A connection held by another thread goes back to
        its own (closed) pool, which closes it.
        """
        zone = self.timezone_name
        changed = False
        entry = self._pool_entry(create=False)
        if entry is not None and entry.zone != zone:
            self._on_timezone_change(entry)
            changed = True
        conn = self.connection
        if conn is not None and not conn.closed:
            changed = self.configurer_class(self.settings).configure_timezone(conn) or changed
        return changed

    # -- queries -----------------------------------------------------------------
    def close_if_health_check_failed(self) -> None:
        """Non-pooled: check a reused persistent connection once per request."""
        if (
            self.connection is None
            or self._conn_entry is not None
            or not self.settings.conn_health_checks
            or self.health_check_done
        ):
            return
        if not self.is_usable():
            self.close()
        self.health_check_done = True

    def cursor(
        self, name: str | None = None, *, withhold: bool = False, scrollable: bool | None = None
    ) -> psycopg.Cursor[Any] | psycopg.ServerCursor[Any]:
        """A cursor; a named one is server-side unless server-side cursors are disabled.

        With POSTGRES_DISABLE_SERVER_SIDE_CURSORS a named cursor falls back to
        a client-side cursor (the whole result is fetched at once, like
        Django's chunked_cursor), and ``withhold=True`` is refused.
        """
        self.close_if_health_check_failed()
        conn = self.ensure_connection()
        self.validate_no_broken_transaction()
        if not name:
            return conn.cursor()
        if self.settings.disable_server_side_cursors:
            if withhold:
                raise ServerSideCursorsDisabled(
                    "WITH HOLD cursors need server-side cursors, which "
                    "POSTGRES_DISABLE_SERVER_SIDE_CURSORS disables"
                )
            return conn.cursor()
        return conn.cursor(name, withhold=withhold, scrollable=scrollable)

    def is_usable(self) -> bool:
        if self.connection is None:
            return False
        try:
            self.connection.execute("SELECT 1", prepare=False)
        except psycopg.Error:
            return False
        return True

    def close_if_unusable_or_obsolete(self) -> None:
        """At request start and end: give back / close what should not outlive it."""
        if self.connection is None:
            return
        self.health_check_done = False
        conn = self.connection
        if conn.closed or conn.broken:
            self.close()
            return
        if self.in_atomic_block:
            return
        if self.get_autocommit() is not True:
            self.close()
            return
        if self.close_at is not None and monotonic() >= self.close_at:
            self.close()

    # -- transactions ---------------------------------------------------------
    def validate_no_atomic_block(self) -> None:
        if self.in_atomic_block:
            raise TransactionManagementError("This is forbidden when an 'atomic' block is active.")

    def validate_no_broken_transaction(self) -> None:
        if self.needs_rollback and self.in_atomic_block:
            raise TransactionManagementError(
                "An error occurred in the current transaction. You can't execute "
                "queries until the end of the 'atomic' block."
            )

    def get_autocommit(self) -> bool:
        self.ensure_connection()
        return self.autocommit

    def set_autocommit(self, autocommit: bool, *, _force: bool = False) -> None:
        if not _force:
            self.validate_no_atomic_block()
        conn = self.ensure_connection()
        conn.autocommit = autocommit
        self.autocommit = autocommit

    def commit(self, *, _force: bool = False) -> None:
        if not _force:
            self.validate_no_atomic_block()
        if self.connection is not None:
            self.connection.commit()

    def rollback(self, *, _force: bool = False) -> None:
        if not _force:
            self.validate_no_atomic_block()
        if self.connection is not None:
            self.connection.rollback()
        self.needs_rollback = False

    def atomic(self, savepoint: bool = True) -> Atomic:
        """Outermost block = transaction, nested blocks = savepoints (as Django)."""
        return Atomic(self, savepoint=savepoint)

    def savepoint(self) -> str:
        self._savepoint_count += 1
        sid = f"s{self._thread_ident & 0xFFFFFF}_x{self._savepoint_count}"
        self.ensure_connection().execute(
            sql.SQL("SAVEPOINT {}").format(sql.Identifier(sid)), prepare=False
        )
        return sid

    def savepoint_rollback(self, sid: str) -> None:
        self.ensure_connection().execute(
            sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(sid)), prepare=False
        )

    def savepoint_commit(self, sid: str) -> None:
        self.ensure_connection().execute(
            sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(sid)), prepare=False
        )

    def __repr__(self) -> str:
        mode = "pooled" if self.pooled else "direct"
        connected = self.connection is not None
        return f"<{type(self).__name__} alias={self.alias!r} {mode} connected={connected}>"
