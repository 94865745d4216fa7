"""The per-process pool registry, and fork safety.

Why a registry: every thread has its own ``DatabaseWrapper`` but they must
share one pool per database alias (a pool per thread would multiply the
connections). The first creator wins (``dict.setdefault`` under a lock);
the pool object is remembered by each connection's wrapper so a connection
always goes back to ITS pool, even after the registry moved on to a new one
(psycopg_pool's ``putconn`` refuses a connection from another pool with
``ValueError``, and a pool that accepted it would hand out a session made for
other settings).

Keys are ``(wrapper class, alias, settings identity)``: two wrapper classes
never share a pool because the pool captures the creating class's configurer
and policies (a subclass must be honoured, Django #35688), and
two servers behind the same alias (tests!) never share one either. The time
zone is NOT part of the key: a zone change is handled by closing and
forgetting the pool, whose idle sessions have the old zone in their startup
options (see ``DatabaseSettings._compute_identity``).

Fork safety: a child (a pre-forking server's worker, multiprocessing) must
never use its parent's pool or connections. Dropping or closing an inherited
psycopg connection in the child runs ``PQfinish``, which sends a Terminate
message over the socket the parent still uses - killing the parent's session.
So in the child we first ``dup2`` ``/dev/null`` onto every reachable inherited socket (the fd
number stays occupied, a later ``PQfinish`` writes into /dev/null), then
close those connections and forget the parent's pools. Reachable means the
pools' idle connections and every wrapper's connection: a ``before fork``
hook keeps strong references to the latter, because CPython clears the
other threads' thread-locals in the child *before* ``after_in_child`` hooks
run, which would otherwise finalise those connections on the shared socket.
A pid check backs the hooks up for forks that bypass ``os.fork``. Each of
these steps is a method of :class:`ForkSafety` (a wrapper class's
``fork_safety``, captured by the pools it creates), which a broken variant
of the test harness replaces to show the suite catches a child that shares.

Taking an inherited pool apart needs psycopg_pool's private idle deque and
closed flag, and a connection's private pool reference: all through
:mod:`plain_pool._compat`, whose fallback (shape changed) keeps such a pool
referenced for the child's lifetime instead, so nothing finalises it here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from plain_pool import _compat

if TYPE_CHECKING:
    from plain_pool.configuration import SessionConfigurer


class ForkSafety:
    """What a forked child does with what it inherited (see the module docstring)."""

    def keep_for_child(self, wrapper: Any) -> psycopg.Connection | None:
        """Before a fork: the wrapper's connection, referenced until the child neutralises it."""
        return wrapper.connection

    def take_apart(self, entry: PoolEntry) -> bool:
        """In the child, a pool of the parent's: its idle connections neutralised, the pool
        marked closed without its (absent) workers. True: the registry forgets it."""
        pool = entry.pool
        idle = _compat.take_idle_connections(pool)
        # The worker threads do not exist here; mark closed so nothing
        # (including __del__) tries to stop them or to close connections.
        if not _compat.mark_closed_without_workers(pool) or idle is None:
            _inherited_kept.append(pool)
        for conn in idle or ():
            neutralise(conn)
        return True

    def drop_inherited(self, wrapper: Any) -> None:
        """In the child (the fork hook): the wrapper neutralises and drops its connection."""
        wrapper._after_fork_in_child()

    def check(self, wrapper: Any) -> None:
        """On every use of a wrapper: last used in another process (a fork the hooks
        missed), it drops what it holds."""
        if wrapper._pid != os.getpid():
            _check_pid()
            wrapper._after_fork_in_child()


@dataclass(eq=False)
class PoolEntry:
    """A pool plus what the backend needs to know about it."""

    pool: Any  # psycopg_pool.ConnectionPool
    key: Hashable
    #: The zone in the pool's startup options: what DISCARD ALL resets to.
    zone: str
    #: The creating wrapper class's fork safety: what a forked child does with this pool.
    fork_safety: ForkSafety = field(default_factory=ForkSafety, repr=False)
    pid: int = field(default_factory=os.getpid)
    #: Backend counters: checks_failed, drains, resets, reset_failures.
    counters: Counter[str] = field(default_factory=Counter)
    #: monotonic() of the last drain (0 = never): connections created before are suspect.
    last_drain: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The SessionConfigurer frozen at the settings this pool was made for: it configures
    #: the pool's connections (new ones, and after every reset).
    configurer: SessionConfigurer = None  # type: ignore[assignment]  # set by the wrapper
    #: The error of the pool's last failed connection setup (its ``configure``: ``SET ROLE``
    #: to a role that does not exist...), None once one succeeds. psycopg_pool only logs it
    #: and retries, so a checkout times out with no cause; this one is chained to it.
    last_setup_error: BaseException | None = None


_lock = threading.Lock()
_entries: dict[Hashable, PoolEntry] = {}
_pid = os.getpid()
_wrappers: weakref.WeakSet[Any] = weakref.WeakSet()
_fork_stash: list[psycopg.Connection] = []
#: Inherited pools this process could not take apart (_compat fallback): kept
#: referenced so neither they nor their connections are ever finalised here.
_inherited_kept: list[Any] = []


def get_or_create(key: Hashable, factory: Callable[[], PoolEntry]) -> PoolEntry:
    """The entry for ``key``, created by ``factory`` if missing (first creator wins)."""
    _check_pid()
    entry = _entries.get(key)
    if entry is not None:
        return entry
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            entry = factory()
            _entries[key] = entry
        return entry


def current(key: Hashable) -> PoolEntry | None:
    """The registered entry for ``key``, without creating one."""
    _check_pid()
    return _entries.get(key)


def forget(entry: PoolEntry) -> bool:
    """Remove ``entry`` if it is still the registered one (compare-and-delete)."""
    with _lock:
        if _entries.get(entry.key) is entry:
            del _entries[entry.key]
            return True
    return False


def entries() -> list[PoolEntry]:
    _check_pid()
    return list(_entries.values())


def close_all(timeout: float = 5.0) -> None:
    """Close and forget every pool of this process (test teardown, shutdown)."""
    with _lock:
        items = list(_entries.values())
        _entries.clear()
    for entry in items:
        with contextlib.suppress(Exception):
            entry.pool.close(timeout=timeout)


def close_matching(predicate: Callable[[PoolEntry], bool], timeout: float = 5.0) -> int:
    """Close and forget the pools whose entry matches ``predicate``."""
    with _lock:
        items = [e for e in _entries.values() if predicate(e)]
        for e in items:
            del _entries[e.key]
    for entry in items:
        with contextlib.suppress(Exception):
            entry.pool.close(timeout=timeout)
    return len(items)


def register_wrapper(wrapper: Any) -> None:
    """Track a wrapper so the fork hooks can reach its connection."""
    _wrappers.add(wrapper)


# -- fork safety ------------------------------------------------------------
def neutralise(conn: psycopg.Connection) -> None:
    """Make an inherited connection harmless, then close it.

    ``dup2`` of /dev/null onto the socket fd: the parent's socket is no
    longer reachable from this process, and the Terminate message that
    ``PQfinish`` sends on close goes to /dev/null.
    """
    try:
        fd = conn.pgconn.socket
    except Exception:
        fd = -1
    if fd >= 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    _compat.detach_from_pool(conn)  # close() must not hand it back to a pool
    with contextlib.suppress(Exception):
        conn.close()


def _before_fork() -> None:
    _fork_stash.clear()
    for wrapper in list(_wrappers):
        conn = wrapper.fork_safety.keep_for_child(wrapper)
        if conn is not None:
            _fork_stash.append(conn)


def _after_fork_parent() -> None:
    _fork_stash.clear()


def _after_fork_child() -> None:
    global _lock
    _lock = threading.Lock()  # may have been held by another thread at fork time
    _forget_inherited()


def _forget_inherited() -> None:
    global _pid
    _pid = os.getpid()
    for conn in _fork_stash:
        neutralise(conn)
    _fork_stash.clear()
    for key, entry in list(_entries.items()):
        if entry.pid != _pid and entry.fork_safety.take_apart(entry):
            del _entries[key]
    for wrapper in list(_wrappers):
        wrapper.fork_safety.drop_inherited(wrapper)


def _check_pid() -> None:
    if _pid != os.getpid():
        _forget_inherited()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
