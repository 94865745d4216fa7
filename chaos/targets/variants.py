"""Deliberately broken plain_pool backends: test equipment for the canaries.

Each subclass reintroduces one bug - one that Django's or Plain's pool has
or had, or one this backend must not make - with (about) one line of
difference from :class:`plain_pool.DatabaseWrapper`; the suite's canaries
run the same checks against them and assert that the checks fail: proof that
the checks can catch the bug. They live with the harness, not in the
installed backend: targets and scenarios select them by name from
:data:`VARIANTS` (``TargetOptions(variant=...)``, a scenario's ``variant``).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from plain_pool import DatabaseWrapper, _compat, health, pools, session_reset
from plain_pool.checking_out import CheckoutPolicy
from plain_pool.configuration import SessionConfigurer
from plain_pool.giving_back import ReturnPolicy
from plain_pool.lease import Lease, PoolHandle
from plain_pool.recovering_pool import RecoveringConnectionPool
from plain_pool.replacing import PoolReplacement


class NoResetOnReturn(DatabaseWrapper):
    """No session reset on return, as Django's and Plain's pools (neither gives
    psycopg_pool a ``reset``): one request's SET, role, temp tables... reach the next."""

    class _NoReset(ReturnPolicy):
        def reset(self, wrapper: Any, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
            pass

    return_policy = _NoReset()


class ResetAllOnly(DatabaseWrapper):
    """RESET ALL instead of DISCARD ALL (keeps SET ROLE, temp tables, locks...)."""

    return_policy = ReturnPolicy(reset="reset_all")


class PoolNotClosedOnTimezoneChange(DatabaseWrapper):
    """A zone change keeps the pool, whose idle sessions have the old zone."""

    class _KeepsPool(PoolReplacement):
        def on_timezone_change(self, entry: pools.PoolEntry) -> None:
            pass

    replacement = _KeepsPool()


class PoolClosedButNotForgotten(DatabaseWrapper):
    """A zone change closes the pool but leaves it registered: the next use fails."""

    class _NeverForgets(PoolReplacement):
        def forget(self, entry: pools.PoolEntry) -> None:
            pass

    replacement = _NeverForgets()


class NoHealthCheck(DatabaseWrapper):
    """Health checks on, but no check wired: dead connections handed out."""

    class _NoCheck(CheckoutPolicy):
        def check_for(self, settings: Any) -> Any:
            return None

    checkout_policy = _NoCheck()


class PutconnToCurrentPool(DatabaseWrapper):
    """Returns to the alias's CURRENT pool, not the connection's own."""

    class _ToCurrentPool(ReturnPolicy):
        def putconn(self, wrapper: Any, entry: pools.PoolEntry, conn: Any) -> None:
            (wrapper.pool_handle.entry() or entry).pool.putconn(conn)

    return_policy = _ToCurrentPool()


class _ConfiguresNothing(SessionConfigurer):
    def configure(self, conn: psycopg.Connection, *, session_zone: str | None = None) -> None:
        pass


class ConfigureOnlyWhenNotPooled(DatabaseWrapper):
    """Configuration only on the non-pooled path (the pool's configurer does nothing)."""

    class _ConfiguresNothingPooled(PoolHandle):
        def configurer(self, settings: Any) -> SessionConfigurer:
            return _ConfiguresNothing(settings)

    pool_handle_class = _ConfiguresNothingPooled


class CommitOnReturn(DatabaseWrapper):
    """A transaction left open at return is COMMITTED instead of rolled back."""

    class _Commits(ReturnPolicy):
        def end_transaction(self, conn: psycopg.Connection) -> None:
            conn.commit()

    return_policy = _Commits()


class HardWiredConfiguration(DatabaseWrapper):
    """The pool configures with the base configurer: a subclass is ignored (Django #35688)."""

    class _BaseConfigurer(PoolHandle):
        def configurer(self, settings: Any) -> SessionConfigurer:
            return SessionConfigurer(settings)

    pool_handle_class = _BaseConfigurer


class SharedAcrossFork(DatabaseWrapper):
    """No fork detection: a child uses the parent's pool and sockets.

    The fork hooks skip its wrappers and pools: nothing is kept referenced across
    the fork, the child keeps the parent's pool registered (idle sockets and all)
    and its wrappers keep their connections until their own pid check drops them.
    """

    class _Shares(pools.ForkSafety):
        def keep_for_child(self, wrapper: Any) -> psycopg.Connection | None:
            return None

        def take_apart(self, entry: pools.PoolEntry) -> bool:
            return False

        def drop_inherited(self, wrapper: Any) -> None:
            pass

    fork_safety = _Shares()


class BackoffRecovery(DatabaseWrapper):
    """Bare psycopg_pool: its check loop and reconnect backoff (1, 2, 4 s: seconds to recover)."""

    class _PoolChecks(CheckoutPolicy):
        def check_for(self, settings: Any) -> Any:
            return None

        def pool_check(self, settings: Any) -> Any:
            user_check = (settings.pool or {}).get("check")
            if user_check is not None:
                return user_check
            return ConnectionPool.check_connection if settings.conn_health_checks else None

    pool_class = ConnectionPool
    checkout_policy = _PoolChecks()


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

    class _KeepsHandlers(ReturnPolicy):
        def reset(self, wrapper: Any, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
            handlers = _compat.notice_handlers(conn)  # psycopg has no public getter
            super().reset(wrapper, conn, entry)
            for handler in handlers:
                conn.add_notice_handler(handler)

    return_policy = _KeepsHandlers()


class KeepsRowFactory(DatabaseWrapper):
    """The reset forgets the row factory: the next request gets dicts where it expects tuples."""

    class _KeepsRowFactory(ReturnPolicy):
        def reset(self, wrapper: Any, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
            row_factory = conn.row_factory
            super().reset(wrapper, conn, entry)
            conn.row_factory = row_factory

    return_policy = _KeepsRowFactory()


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

    class _ForgetsOnly(PoolReplacement):
        def retire(self, entry: pools.PoolEntry) -> None:
            self.forget(entry)
            retired = PoolForgottenNotClosed.retired
            retired[:] = [e for e in retired if not e.pool.closed] + [entry]

    replacement = _ForgetsOnly()


class CatchesOnlyPsycopgErrorsInCheck(DatabaseWrapper):
    """Only psycopg.Error counts as a failed check: a user check raising ValueError (or any
    other exception) reaches the caller, and its connection goes back to the pool."""

    class _PsycopgErrorsOnly(CheckoutPolicy):
        failures = (psycopg.Error,)

    checkout_policy = _PsycopgErrorsOnly()


class TrustsUserCheck(DatabaseWrapper):
    """A user check that returns is trusted: one that closed the connection (and returned
    normally) gets that closed connection handed to the caller."""

    class _Trusting(CheckoutPolicy):
        def check_for(self, settings: Any) -> Any:
            return self.health_check(settings)

    checkout_policy = _Trusting()


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

    class _Unaware(SharedAcrossFork._Shares):
        def check(self, wrapper: Any) -> None:
            pass

    fork_safety = _Unaware()


VARIANTS[ForkUnaware.__name__] = ForkUnaware


class SharesConnectionAcrossThreads(DatabaseWrapper):
    """A connection cached per alias, not per thread: two requests use one session."""

    _shared: ClassVar[dict[str, Lease]] = {}

    def connect(self) -> None:
        shared = self._shared.get(self.alias)
        if shared is not None and not shared.connection.closed:
            self.lease, self.connection = shared, shared.connection
            return
        super().connect()
        assert self.lease is not None and self.connection is not None
        self._shared[self.alias] = self.lease

    def close(self) -> None:
        shared = self._shared.get(self.alias)
        if shared is not None and shared.connection is self.connection:
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

    pool_class = _ImmortalPool


class KeepsStatementCache(DatabaseWrapper):
    """The reset's DISCARD ALL may be prepared, and psycopg's cache is not forgotten."""

    class _PreparableReset(ReturnPolicy):
        def reset(self, wrapper: Any, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
            session_reset.restore_client_attributes(
                conn,
                prepare_threshold=entry.configurer.settings.prepare_threshold,
                cursor_factory=entry.configurer.cursor_factory(),
            )
            # prepare left to psycopg: run five times, DISCARD ALL gets prepared itself, and
            # from then on psycopg's cache names statements the server dropped (psycopg 3.3.9).
            conn.execute("DISCARD ALL")
            entry.configurer.configure(conn)
            # missing too: session_reset.forget_client_prepared_statements(conn)

    return_policy = _PreparableReset()


class _OversizedPool(RecoveringConnectionPool):
    def __init__(self, *args: Any, max_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, max_size=(max_size or kwargs.get("min_size", 4)) + 2, **kwargs)


class IgnoresMaxSize(DatabaseWrapper):
    """The pool grows past POSTGRES_POOL["max_size"]."""

    pool_class = _OversizedPool


class UnboundedRollbackOnReturn(DatabaseWrapper):
    """Rolls back a transaction left open BEFORE the return deadline starts (the slip a
    refactor makes): over a half-open link, returning the connection blocks as long as
    the link stays half-open."""

    class _RollbackFirst(ReturnPolicy):
        def give_back(self, wrapper: Any, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
            if not conn.closed and conn.info.transaction_status in (
                TransactionStatus.INTRANS,
                TransactionStatus.INERROR,
            ):
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            super().give_back(wrapper, conn, entry)

    return_policy = _RollbackFirst()


class ProbesPoolBeforeReplacing(DatabaseWrapper):
    """Replaces a pool only after psycopg_pool's check() of its idle connections, which has
    no deadline: over a half-open link, ensure_timezone() / close_pool() wait for it."""

    class _ProbesFirst(PoolReplacement):
        def retire(self, entry: pools.PoolEntry) -> None:
            with contextlib.suppress(Exception):
                entry.pool.check()
            super().retire(entry)

    replacement = _ProbesFirst()


class ResetOnlyWithHealthChecks(DatabaseWrapper):
    """The reset wired into the health-check path: with checks off, nothing is reset."""

    class _ResetWithChecks(ReturnPolicy):
        def reset(self, wrapper: Any, conn: psycopg.Connection, entry: pools.PoolEntry) -> None:
            if wrapper.settings.conn_health_checks:
                super().reset(wrapper, conn, entry)

    return_policy = _ResetWithChecks()


class HandsOutResetInFlight(DatabaseWrapper):
    """The checkout never reads the reset sent on return: the next request gets a
    connection whose ``DISCARD ALL`` is still on the wire."""

    class _NeverFinishes(CheckoutPolicy):
        def finish_reset(
            self, entry: pools.PoolEntry, conn: psycopg.Connection, deadline: float
        ) -> bool | None:
            return None

    checkout_policy = _NeverFinishes()


class ConfiguresOnlyWhatItFinished(DatabaseWrapper):
    """Configures a session only when this checkout read its reset: a reset finished
    by the pool's own ``check()`` leaves the session unconfigured (no ``SET ROLE``).
    The suite found this one in the first version of the reset in flight."""

    class _ConfiguresWhatItFinished(CheckoutPolicy):
        def finish_reset(
            self, entry: pools.PoolEntry, conn: psycopg.Connection, deadline: float
        ) -> bool | None:
            fresh = session_reset.finish_reset(conn, deadline, answer_within=health.RESET_TIMEOUT)
            session_reset.take_configure_due(conn)
            if fresh is not None:
                entry.configurer.configure(conn)
            return fresh

    checkout_policy = _ConfiguresWhatItFinished()


VARIANTS.update(
    {
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
)
