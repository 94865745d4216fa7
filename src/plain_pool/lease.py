"""The pool side of a ``DatabaseWrapper``: a :class:`PoolHandle` and the :class:`Lease` it lends.

A ``PoolHandle`` is one wrapper's view of its alias's pool: it finds or
creates the registry entry (pools.py, keyed by :func:`pool_key`), checks a
connection out (the wrapper class's ``checkout_policy``: its check, its
deadline, the end of the reset in flight), retires the pool (``replacement``)
and reports stats. A ``Lease`` is what a checkout lends: the connection and
the entry of the pool it came from, which it goes back to on ``give_back()``
(the ``return_policy``: roll back, reset, ``putconn`` under the return
deadline) even when the alias has a newer pool by then.

The wrapper holds one lease (None: not connected, or not pooled) and one
handle; the behaviours stay on the wrapper class (``checkout_policy``,
``return_policy``, ``replacement``, ``pool_class``, ``fork_safety``), where a
subclass names another.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from plain_pool import health, pools
from plain_pool.configuration import SessionConfigurer
from plain_pool.exceptions import ImproperlyConfigured
from plain_pool.settings import DatabaseSettings

if TYPE_CHECKING:
    from plain_pool.wrapper import DatabaseWrapper

#: Counters every stats() includes (zero when nothing happened).
BACKEND_COUNTERS = ("checks_failed", "drains", "resets", "reset_failures")


class _SettingsSource(Protocol):
    current: DatabaseSettings


def pool_key(owner: type[Any], alias: str, settings: DatabaseSettings) -> Hashable:
    """The registry key of an alias's pool: ``(wrapper class, alias, settings identity)``.

    The class is part of it because the pool captures that class's configurer and
    policies (pools.py); the zone is not (``ensure_timezone()`` retires the pool).
    """
    return (owner, alias, settings.identity())


class Lease:
    """A connection a pool lent, and the entry of that pool: where it goes back."""

    __slots__ = ("connection", "entry")

    def __init__(self, entry: pools.PoolEntry, connection: psycopg.Connection) -> None:
        self.entry = entry
        self.connection = connection

    @property
    def pool(self) -> Any:
        """The pool the connection came from (not necessarily the alias's current one)."""
        return self.entry.pool

    def give_back(self, wrapper: DatabaseWrapper) -> None:
        """Roll back, reset, putconn to ITS pool: the wrapper's ``return_policy``."""
        wrapper.return_policy.give_back(wrapper, self.connection, self.entry)

    def __repr__(self) -> str:
        return f"<Lease pool={id(self.entry.pool):#x} zone={self.entry.zone!r}>"


class PoolHandle:
    """One alias's pool, as one wrapper class makes and uses it."""

    __slots__ = ("_keyed", "_ref", "alias", "owner")

    def __init__(self, owner: type[DatabaseWrapper], alias: str, ref: _SettingsSource) -> None:
        self.owner = owner
        self.alias = alias
        self._ref = ref
        #: The settings the key was last computed for, and that key.
        self._keyed: tuple[DatabaseSettings | None, Hashable] = (None, None)

    def entry(self, create: bool = True) -> pools.PoolEntry | None:
        """The alias's registered pool entry (made if missing and ``create``); None: not pooled."""
        settings = self._ref.current
        if settings.pool is None:
            return None
        keyed = self._keyed
        if keyed[0] is not settings:  # identity() is cached per settings object: so is the key
            keyed = self._keyed = (settings, pool_key(self.owner, self.alias, settings))
        if create:
            return pools.get_or_create(keyed[1], self._create)
        return pools.current(keyed[1])

    def checkout(self) -> Lease:
        """A connection of the alias's pool (opened on first use), checked by the policy."""
        retried = False
        while True:
            entry = self.entry()
            assert entry is not None
            try:
                pool = entry.pool
                if pool.closed:
                    pool.open()
                conn = self.owner.checkout_policy.checkout(entry, self._ref.current)
                return Lease(entry, conn)
            except Exception as exc:
                from psycopg_pool import PoolClosed  # not on the hot path: no import per call

                # Another thread swapped the pool between our lookup and use:
                # retry once with the new one. A closed pool still registered
                # (closed but not forgotten: every later checkout would fail) is an error.
                if not isinstance(exc, PoolClosed) or retried or pools.current(entry.key) is entry:
                    raise
                retried = True

    def configurer(self, settings: DatabaseSettings) -> SessionConfigurer:
        """The configurer a new pool captures: the owner's, frozen at the pool's settings."""
        return self.owner.configurer_class(settings)

    def _create(self) -> pools.PoolEntry:
        s, key = self._keyed
        assert s is not None
        if s.pool is None:
            raise ImproperlyConfigured("POSTGRES_POOL is not enabled")
        owner = self.owner
        configurer = self.configurer(s)
        options = {k: v for k, v in s.pool.items() if k != "check"}
        options.setdefault("name", f"plain_pool-{self.alias}")

        created: list[pools.PoolEntry] = []  # the entry, once made (the callback needs it)

        def configure_new_connection(conn: psycopg.Connection) -> None:
            """The pool's ``configure`` callback (runs in a pool worker thread)."""
            health.stamp_created(conn)
            try:
                configurer.configure(conn)
            except BaseException as exc:
                if created:
                    created[0].last_setup_error = exc
                raise
            if created:
                created[0].last_setup_error = None

        pool_class = owner.pool_class
        if pool_class is None:
            from plain_pool.recovering_pool import RecoveringConnectionPool as pool_class
        pool = pool_class(
            conninfo="",
            kwargs=configurer.connect_kwargs(),
            open=False,
            configure=configure_new_connection,
            check=owner.checkout_policy.pool_check(s),
            **options,
        )
        entry = pools.PoolEntry(
            pool=pool,
            key=key,
            zone=configurer.zone,
            fork_safety=owner.fork_safety,
            configurer=configurer,
        )
        created.append(entry)
        return entry

    def close(self) -> None:
        """Retire the alias's pool (forget, then close): the next use creates a new one."""
        entry = self.entry(create=False)
        if entry is not None:
            self.owner.replacement.retire(entry)

    def replace_for_zone(self, zone: str) -> bool:
        """Retire the pool if it was made for another zone. True: it was."""
        entry = self.entry(create=False)
        if entry is None or entry.zone == zone:
            return False
        self.owner.replacement.on_timezone_change(entry)
        return True

    def stats(self, lease: Lease | None = None) -> dict[str, int]:
        """psycopg_pool's get_stats() plus the backend's counters: of the current pool, else
        of the lease's (a connection held from a retired pool)."""
        entry = self.entry(create=False) or (lease.entry if lease is not None else None)
        stats: dict[str, int] = dict.fromkeys(BACKEND_COUNTERS, 0)
        if entry is not None:
            stats.update(entry.pool.get_stats())
            stats.update(entry.counters)
        return stats
