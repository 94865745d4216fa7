"""Deliberately broken backends. They exist for the test suite ONLY.

Each subclass reintroduces one bug - one that Django's or Plain's pool has
or had, or one this backend must not make - with (about) one line of
difference from :class:`DatabaseWrapper`; the suite's canaries run
the same checks against them and assert that the checks fail - proof that
the checks can catch the bug. Never use them in an application.

They live in the package (not under tests/) so that the Hypothesis state
machines and scenarios can select them by name from :data:`VARIANTS`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg

from plain_pool import pools
from plain_pool.configuration import SessionConfigurer
from plain_pool.wrapper import DatabaseWrapper


class NoResetOnReturn(DatabaseWrapper):
    """No session reset on return, as Django's and Plain's pools (neither gives
    psycopg_pool a ``reset``): one request's SET, role, temp tables... reach the next."""

    def _reset_session(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        pass


class ResetAllOnly(DatabaseWrapper):
    """RESET ALL instead of DISCARD ALL (keeps SET ROLE, temp tables, locks...)."""

    reset_strategy = "reset_all"


class PoolNotClosedOnTimezoneChange(DatabaseWrapper):
    """A zone change keeps the pool, whose idle sessions have the old zone."""

    def _on_timezone_change(self, entry: pools.PoolEntry) -> None:
        pass


class PoolClosedButNotForgotten(DatabaseWrapper):
    """A zone change closes the pool but leaves it registered: the next use fails."""

    def _forget_pool(self, entry: pools.PoolEntry) -> None:
        pass


class NoHealthCheck(DatabaseWrapper):
    """Health checks on, but no check wired: dead connections handed out."""

    def _checkout_check(self) -> Any:
        return None


class PutconnToCurrentPool(DatabaseWrapper):
    """Returns to the alias's CURRENT pool, not the connection's own."""

    def _putconn(self, entry: pools.PoolEntry, conn: psycopg.Connection) -> None:
        (self._pool_entry(create=True) or entry).pool.putconn(conn)


class _ConfiguresNothing(SessionConfigurer):
    def configure(self, conn: psycopg.Connection, *, session_zone: str | None = None) -> None:
        pass


class ConfigureOnlyWhenNotPooled(DatabaseWrapper):
    """Configuration only on the non-pooled path (the pool's configurer does nothing)."""

    def _pool_configurer(self) -> SessionConfigurer:
        return _ConfiguresNothing(self.settings)


class CommitOnReturn(DatabaseWrapper):
    """A transaction left open at return is COMMITTED instead of rolled back."""

    def _end_transaction_on_return(self, conn: psycopg.Connection) -> None:
        conn.commit()


class HardWiredConfiguration(DatabaseWrapper):
    """The pool configures with the base configurer: a subclass is ignored (Django #35688)."""

    def _pool_configurer(self) -> SessionConfigurer:
        return SessionConfigurer(self.settings)


class SharedAcrossFork(DatabaseWrapper):
    """No fork detection: a child uses the parent's pool and sockets."""

    fork_safe = False


class BackoffRecovery(DatabaseWrapper):
    """Bare psycopg_pool: its check loop and reconnect backoff (1, 2, 4 s: seconds to recover)."""

    def _pool_class(self) -> Any:
        from psycopg_pool import ConnectionPool

        return ConnectionPool

    def _checkout_check(self) -> Any:
        return None

    def _pool_check_callback(self) -> Any:
        from psycopg_pool import ConnectionPool

        user_check = (self.settings.pool or {}).get("check")
        if user_check is not None:
            return user_check
        return ConnectionPool.check_connection if self.settings.conn_health_checks else None


VARIANTS: dict[str, type[DatabaseWrapper]] = {
    cls.__name__: cls
    for cls in (
        NoResetOnReturn,
        ResetAllOnly,
        PoolNotClosedOnTimezoneChange,
        PoolClosedButNotForgotten,
        NoHealthCheck,
        PutconnToCurrentPool,
        ConfigureOnlyWhenNotPooled,
        CommitOnReturn,
        HardWiredConfiguration,
        SharedAcrossFork,
        BackoffRecovery,
    )
}


class KeepsNoticeHandlers(DatabaseWrapper):
    """The reset forgets the notice handlers a request added: they see the next one's notices."""

    def _reset_session(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        handlers = list(getattr(conn, "_notice_handlers", ()))  # psycopg has no public getter
        super()._reset_session(conn, entry)
        for handler in handlers:
            conn.add_notice_handler(handler)


class KeepsRowFactory(DatabaseWrapper):
    """The reset forgets the row factory: the next request gets dicts where it expects tuples."""

    def _reset_session(self, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
        row_factory = conn.row_factory
        super()._reset_session(conn, entry)
        conn.row_factory = row_factory


VARIANTS.update({cls.__name__: cls for cls in (KeepsNoticeHandlers, KeepsRowFactory)})


class PoolForgottenNotClosed(DatabaseWrapper):
    """A replaced pool (zone change, close_pool) is forgotten but never closed.

    Its idle sessions and worker threads linger. The slip as it is usually
    written: "connections may still be out of the old pool, so keep it (for
    them to come back to) instead of closing it" - and nothing closes it
    later. Kept referenced, as that list would: a pool nothing references is
    finalised by CPython's refcounting (its workers stop, its idle connections
    close), which would hide the leak until some reference keeps it alive.
    """

    retired: ClassVar[list[pools.PoolEntry]] = []

    def _close_and_forget_pool(self, entry: pools.PoolEntry) -> None:
        self._forget_pool(entry)
        type(self).retired[:] = [e for e in type(self).retired if not e.pool.closed] + [entry]


class CatchesOnlyPsycopgErrorsInCheck(DatabaseWrapper):
    """Only psycopg.Error counts as a failed check: a user check raising ValueError (or any
    other exception) reaches the caller, and its connection goes back to the pool."""

    check_failures = (psycopg.Error,)


class TrustsUserCheck(DatabaseWrapper):
    """A user check that returns is trusted: one that closed the connection (and returned
    normally) gets that closed connection handed to the caller."""

    def _checkout_check(self) -> Any:
        return self._health_check()


VARIANTS.update(
    {
        cls.__name__: cls
        for cls in (PoolForgottenNotClosed, CatchesOnlyPsycopgErrorsInCheck, TrustsUserCheck)
    }
)


class ForkUnaware(SharedAcrossFork):
    """No fork detection at all: neither the pool registry nor the wrapper checks the pid.

    A child's ``close()`` of a wrapper it inherited takes the parent's connection for its
    own: it rolls back and resets the parent's session, returns it to the child's copy of
    the pool, and closing that pool sends Terminate on the parent's socket (what Django's
    ``connections.close_all()`` in a forked child does to the parent's sessions).
    """

    def _check_fork(self) -> None:
        pass


VARIANTS[ForkUnaware.__name__] = ForkUnaware
