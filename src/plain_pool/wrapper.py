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

The pool side lives in lease.py: the wrapper's ``pool_handle`` finds or
creates the alias's pool and checks out a :class:`~plain_pool.lease.Lease`
(the connection and the pool it goes back to), which the wrapper holds as
``lease`` until ``close()`` gives it back.
"""

from __future__ import annotations

import logging
import os
import threading
from time import monotonic
from typing import Any, ClassVar

import psycopg
from psycopg import sql

from plain_pool import pools
from plain_pool.checking_out import CheckoutPolicy
from plain_pool.configuration import SessionConfigurer
from plain_pool.exceptions import (
    ConnectionClosedInAtomicBlock,
    ServerSideCursorsDisabled,
    TransactionManagementError,
)
from plain_pool.giving_back import ReturnPolicy
from plain_pool.lease import Lease, PoolHandle
from plain_pool.replacing import PoolReplacement
from plain_pool.settings import DatabaseSettings
from plain_pool.transactions import Atomic

logger = logging.getLogger("plain_pool")


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

    # Each behaviour has one home; change one by subclassing and naming another.
    #: How sessions are configured (time zone, role), on every path (Django #35688).
    configurer_class: ClassVar[type[SessionConfigurer]] = SessionConfigurer
    #: Checkout: which check, what fails it, the end of the reset in flight.
    checkout_policy: ClassVar[CheckoutPolicy] = CheckoutPolicy()
    #: Return: roll back, reset (``ReturnPolicy(reset="keep_prepared")`` keeps
    #: psycopg's prepared statements), putconn to the connection's own pool.
    return_policy: ClassVar[ReturnPolicy] = ReturnPolicy()
    #: Retiring a pool on a zone change or ``close_pool()``.
    replacement: ClassVar[PoolReplacement] = PoolReplacement()
    #: The pool class; None: :class:`~plain_pool.recovering_pool.RecoveringConnectionPool`
    #: (psycopg_pool's, with a short reconnection backoff), imported with the first pool
    #: so that plain_pool imports without psycopg_pool (non-pooled mode).
    pool_class: ClassVar[type[Any] | None] = None
    #: What a forked child does with the pools and connections it inherited (pools.py).
    fork_safety: ClassVar[pools.ForkSafety] = pools.ForkSafety()
    #: The pool side: registry entry, checkout, close, stats (lease.py).
    pool_handle_class: ClassVar[type[PoolHandle]] = PoolHandle

    def __init__(
        self,
        settings: DatabaseSettings | dict[str, Any] | str,
        alias: str = "default",
        *,
        settings_ref: SettingsRef | None = None,
    ) -> None:
        self.alias = alias
        self._settings_ref = settings_ref or SettingsRef(DatabaseSettings.coerce(settings))
        #: The alias's pool as this wrapper's class makes and uses it.
        self.pool_handle = self.pool_handle_class(type(self), alias, self._settings_ref)
        #: The connection in use (Django's attribute); pooled: ``lease.connection``.
        self.connection: psycopg.Connection | None = None
        #: What the pool lent: the connection and the pool it goes back to (None: not pooled).
        self.lease: Lease | None = None
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
        if self.lease is None and self.connection is not None:
            self.configurer_class(self.settings).configure(self.connection)

    # -- the pool -----------------------------------------------------------------
    @property
    def pool(self) -> Any:
        """The alias's current pool (created lazily, opened on first checkout), or None."""
        entry = self.pool_handle.entry(create=True)
        return entry.pool if entry is not None else None

    def close_pool(self) -> None:
        """Close the alias's pool and forget it: the next use creates a new one."""
        self.pool_handle.close()

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's get_stats() plus the backend's own counters."""
        return self.pool_handle.stats(self.lease)

    # -- connection lifecycle ---------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """Drop (after neutralising) a connection inherited from the parent (``fork_safety``)."""
        if self._pid == os.getpid():
            return
        conn = self.connection
        if conn is not None:
            pools.neutralise(conn)
        self.connection = None
        self.lease = None
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
        self.fork_safety.check(self)
        s = self.settings
        if s.pooled:
            lease = self.lease = self.pool_handle.checkout()
            conn = lease.connection
            self.close_at = monotonic()  # CONN_MAX_AGE is 0 with a pool
        else:
            conn = psycopg.Connection.connect(**self.configurer_class(s).connect_kwargs())
            self.lease = None
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
        self.fork_safety.check(self)
        if self.connection is None:
            self.connect()
        assert self.connection is not None
        return self.connection

    def close(self) -> None:
        """Return the connection to its pool (after a reset) or close it."""
        self.fork_safety.check(self)
        conn = self.connection
        if conn is None:
            return
        try:
            lease = self.lease
            if lease is None:
                conn.close()
            else:
                lease.give_back(self)
        finally:
            if self.in_atomic_block:
                self.closed_in_transaction = True
                self.needs_rollback = True
            self.connection = None
            self.lease = None

    # -- time zone ------------------------------------------------------------
    def ensure_timezone(self) -> bool:
        """Apply a TIME_ZONE / USE_TZ change. Return True if anything changed.

        Closes and forgets the alias's pool if it was made for another zone
        (the next use creates a new one), then reconfigures the connection
        this wrapper holds. A connection held by another thread goes back to
        its own (closed) pool, which closes it.
        """
        changed = self.pool_handle.replace_for_zone(self.timezone_name)
        conn = self.connection
        if conn is not None and not conn.closed:
            changed = self.configurer_class(self.settings).configure_timezone(conn) or changed
        return changed

    # -- queries -----------------------------------------------------------------
    def close_if_health_check_failed(self) -> None:
        """Non-pooled: check a reused persistent connection once per request."""
        if (
            self.connection is None
            or self.lease is not None
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
