"""plain_pool as a machine target: a ConnectionHandler, one thread per request.

Each target gets an alias of its own (``chaos<N>``), so the process-wide pool
registry never hands one example's pool to the next; :meth:`close` closes
every pool registered under that alias. A ``variant`` name picks a
deliberately broken wrapper from :data:`chaos.targets.variants.VARIANTS`
(the canaries); the expected fingerprints always come from the reference
:class:`~plain_pool.DatabaseWrapper`, straight to the server (no proxy, no
pool), configured for the same settings.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import time
import uuid
import weakref
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.pq import ConnStatus, ExecStatus, TransactionStatus

from chaos.faults.connect import CHAOS_TIMEOUTS
from chaos.fingerprint import session_fingerprint
from chaos.machines.model import Backend, SettingsValue
from chaos.targets import forking
from chaos.targets._common import apply_client_attr, backend_identity, refuse_broken
from chaos.targets.base import (
    CheckoutResult,
    ControlThreads,
    Session,
    SessionCapacity,
    StepTimeout,
    TargetOptions,
    TargetRequest,
    ThreadClients,
    ThreadedTarget,
)
from plain_pool import ConnectionHandler, DatabaseWrapper, _compat, _wire, pools, session_reset
from plain_pool.health import CREATED_AT
from plain_pool.lease import pool_key

_aliases = itertools.count(1)
#: Bounds of the fork step's parts (seconds): one empty query; os.fork() in a control
#: thread; how long past its own alarm the parent waits for a child before killing it.
PING_TIMEOUT = 2.0
FORK_CALL_BOUND = 5.0
FORK_GRACE = 2.0
#: How long parent_sessions() waits for connections a pool is making to land in it.
SETTLE_BOUND = 2.0


def _backend(conn: psycopg.Connection) -> tuple[Backend, float]:
    # The pool's creation stamp; a connection without one is stamped at first sight.
    return backend_identity(conn, getattr(conn, CREATED_AT, None))


def settings_dict(
    host: str,
    port: int,
    server: Any,
    options: TargetOptions,
    settings: SettingsValue,
    *,
    pooled: bool = True,
    application_name: str | None = None,
    user_check: Any = None,
) -> dict[str, Any]:
    """The plain_pool settings for a machine run (chaos-safe connect options)."""
    pg_options: dict[str, Any] = dict(CHAOS_TIMEOUTS.connect_kwargs())
    for key, value in (options.connect_options or {}).items():
        if value is None:
            pg_options.pop(key, None)  # the scenario removes a harness default
        else:
            pg_options[key] = value
    if application_name:
        pg_options["application_name"] = application_name
    if settings.role:
        pg_options["assume_role"] = settings.role
    if options.prepare_threshold is not None:
        pg_options["prepare_threshold"] = options.prepare_threshold
    if options.server_side_binding:
        pg_options["server_side_binding"] = True
    result: dict[str, Any] = {
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": port,
        "POSTGRES_DATABASE": getattr(server, "dbname", "postgres"),
        "POSTGRES_USER": getattr(server, "superuser", "postgres"),
        "POSTGRES_OPTIONS": pg_options,
        "POSTGRES_CONN_HEALTH_CHECKS": options.health_checks,
        "TIME_ZONE": settings.time_zone,
        "USE_TZ": settings.use_tz,
    }
    if pooled:
        result["POSTGRES_POOL"] = {
            "min_size": options.min_size,
            "max_size": options.max_size,
            "timeout": options.timeout,
            "max_lifetime": options.max_lifetime,
            "max_idle": options.max_idle,
            "reconnect_timeout": options.reconnect_timeout,
        }
        if user_check is not None:
            result["POSTGRES_POOL"]["check"] = user_check
        if options.reconnect_failed is not None:
            result["POSTGRES_POOL"]["reconnect_failed"] = options.reconnect_failed
    return result


#: What the configuration override sets (a GUC nothing else in the suite touches).
OVERRIDE_SQL = "SET lock_timeout = '4321ms'"


def with_configure_override(base: type[DatabaseWrapper]) -> type[DatabaseWrapper]:
    """``base`` with a configurer subclass whose ``configure_role`` sets one more GUC: a
    backend that configures some path with the base configurer instead of the one it was
    given shows up as a checkout without it."""

    class OverridingConfigurer(base.configurer_class):  # type: ignore[misc,name-defined]
        def configure_role(self, conn: psycopg.Connection) -> bool:
            conn.execute(OVERRIDE_SQL, prepare=False)
            return super().configure_role(conn)

    class WithConfigureOverride(base):  # type: ignore[misc,valid-type]
        configurer_class = OverridingConfigurer

    WithConfigureOverride.__name__ = f"{base.__name__}WithConfigureOverride"
    return WithConfigureOverride


class PlainPoolSession(Session):
    """Runs in the request's own thread: ``handler[alias]`` is that thread's wrapper."""

    def __init__(self, handler: ConnectionHandler, alias: str) -> None:
        self.handler = handler
        self.alias = alias
        #: This thread's wrapper, for the target to see what the request holds (from the
        #: machine's thread, between calls: handler[alias] there is another wrapper).
        self.wrapper = handler[alias]
        handler.request_started()

    @property
    def db(self) -> DatabaseWrapper:
        return self.handler[self.alias]

    def checkout(self) -> CheckoutResult:
        # driver_statements "auto": with prepare_threshold on, psycopg's own _pg3_ statements
        # (the pool's health check makes one) are its cache, not a previous user's state;
        # the prepared-statements machine checks that cache stays valid instead.
        conn = self.db.ensure_connection()
        refuse_broken(conn)  # a dead handout for the judge, not a leak
        fingerprint = session_fingerprint(conn)
        backend, age = _backend(conn)
        lease = self.db.lease
        return CheckoutResult(fingerprint, backend, age, id(lease.pool) if lease else None)

    def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> list[tuple]:
        with self.db.cursor() as cur:
            cur.execute(sql, params, prepare=prepare)
            return cur.fetchall() if cur.description is not None else []

    def set_client_attr(self, name: str, value: Any) -> None:
        """Set ``conn.<name>``; ``notice_handler`` / ``notify_handler`` add a handler and
        ``loader`` registers a ``(type name, loader class)`` on ``conn.adapters``."""
        conn = self.db.ensure_connection()
        apply_client_attr(conn, name, value)
        if name == "autocommit":
            self.db.autocommit = value  # what the wrapper believes, as Django's set_autocommit

    def begin(self, how: str) -> None:
        if how == "autocommit_off":
            self.db.set_autocommit(False)
        else:
            conn = self.db.ensure_connection()
            if conn.info.transaction_status == TransactionStatus.IDLE:
                conn.execute("BEGIN", prepare=False)

    def ensure_timezone(self) -> None:
        self.handler.ensure_timezone(self.alias)

    def give_back(self) -> None:
        self.db.close()

    def finish(self) -> None:
        try:
            self.handler.request_finished()
        finally:
            # A request's thread ends here: whatever it still holds goes back.
            self.db.close()

    def holds_connection(self) -> bool:
        return self.db.connection is not None


class PlainPoolTarget(ThreadedTarget[DatabaseWrapper]):
    """plain_pool (or one of its broken variants) behind the fault proxy."""

    def __init__(
        self,
        *,
        server: Any,
        host: str,
        port: int,
        options: TargetOptions,
        settings: SettingsValue | None = None,
    ) -> None:
        from chaos.targets.variants import VARIANTS

        self.server = server
        self.options = options
        self.host, self.port = host, port
        variant = options.variant
        self.wrapper_class: type[DatabaseWrapper] = (
            DatabaseWrapper
            if variant is None
            else variant
            if isinstance(variant, type)
            else VARIANTS[variant]
        )
        if options.configure_override:
            self.wrapper_class = with_configure_override(self.wrapper_class)
        self.alias = f"chaos{next(_aliases)}"
        # Unique per target across xdist workers sharing a server (aliases repeat there).
        self.application_name = f"{self.alias}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.user_check = (
            options.user_check(identify=lambda conn: _backend(conn)[0])
            if options.user_check is not None
            else None
        )
        #: Every pool entry this target saw (registered at the time): close() closes those
        #: still open, even ones a broken variant forgot without closing.
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()
        self.settings = settings or SettingsValue()
        self.handler = ConnectionHandler(
            {self.alias: self._settings_dict(self.settings)}, wrapper_class=self.wrapper_class
        )
        self.control = ControlThreads(f"{self.alias}-control")
        self.requests: list[TargetRequest] = []
        #: The scenarios' per-thread clients: this thread's wrapper of the alias.
        self.clients = ThreadClients(lambda: self.handler[self.alias])
        self.cache_key = (
            getattr(server, "host", None),
            getattr(server, "port", None),
            options.prepare_threshold,
            options.server_side_binding,
            options.health_checks,
            options.configure_override,
            tuple(sorted((options.connect_options or {}).items())),
        )
        self.description = (
            f"plain_pool {self.wrapper_class.__name__} (alias {self.alias}, "
            f"pool {options.min_size}..{options.max_size}, max_lifetime {options.max_lifetime}s, "
            f"prepare_threshold {options.prepare_threshold}, "
            f"server_side_binding {options.server_side_binding})"
        )

    def _settings_dict(self, settings: SettingsValue, *, pooled: bool = True) -> dict[str, Any]:
        return settings_dict(
            self.host,
            self.port,
            self.server,
            self.options,
            settings,
            pooled=pooled,
            application_name=self.application_name,
            user_check=self.user_check,
        )

    # -- requests ------------------------------------------------------------
    def open_request(self, number: int) -> TargetRequest:
        request = TargetRequest(number, lambda: PlainPoolSession(self.handler, self.alias))
        self.requests.append(request)
        return request

    # -- settings ------------------------------------------------------------
    def change_settings(
        self, settings: SettingsValue, via: TargetRequest | None, bound: float
    ) -> None:
        new = self._settings_dict(settings)
        self.handler.update_settings(
            self.alias,
            TIME_ZONE=new["TIME_ZONE"],
            USE_TZ=new["USE_TZ"],
            POSTGRES_OPTIONS=new["POSTGRES_OPTIONS"],
        )
        self.settings = settings
        if via is not None:
            via.run(lambda s: s.ensure_timezone(), bound)
        else:
            self.control.call(lambda: self.handler.ensure_timezone(self.alias), bound)

    def current_pool_id(self) -> int | None:
        entry = self._current_entry()
        return id(entry.pool) if entry is not None else None

    def _current_entry(self) -> Any:
        # The key a wrapper's pool_handle computes, without making a wrapper.
        key = pool_key(self.wrapper_class, self.alias, self.handler.settings(self.alias))
        entry = pools.current(key)
        if entry is not None:
            self._seen.add(entry)
        return entry

    def session_capacity(self) -> SessionCapacity:
        """Registered open pools' sizes plus connections requests hold from other pools.

        A pool's ``pool_size`` counts its connections checked out too, so a held
        connection adds one only when its pool is no longer registered (or closed).
        Read from the machine's thread between steps (no request call running).
        """
        registered = [e for e in pools.entries() if e.key[1] == self.alias]
        self._seen.update(registered)
        live = [e for e in registered if not e.pool.closed]
        sizes = {id(e): int(e.pool.get_stats().get("pool_size", 0)) for e in live}
        held = 0
        for request in self.requests:
            wrapper = getattr(request.session, "wrapper", None)
            conn = getattr(wrapper, "connection", None)
            if conn is None or conn.closed:
                continue
            lease = getattr(wrapper, "lease", None)
            if lease is None or not any(lease.entry is e for e in live):
                held += 1
        forgotten = [
            e for e in list(self._seen) if not e.pool.closed and not any(e is r for r in registered)
        ]
        parts = [f"registered pool {id(e.pool):#x} size {sizes[id(e)]}" for e in live]
        parts.append(f"{held} connection(s) held by requests from unregistered pools")
        parts += [
            f"unregistered OPEN pool {id(e.pool):#x} size "
            f"{e.pool.get_stats().get('pool_size', '?')} (zone {e.zone})"
            for e in forgotten
        ]
        return SessionCapacity(sum(sizes.values()) + held, "; ".join(parts))

    # -- pool maintenance ----------------------------------------------------
    def close_pool(self, bound: float) -> None:
        self.control.call(lambda: self.handler[self.alias].close_pool(), bound)

    def check_pool(self, bound: float) -> None:
        def check() -> None:
            entry = self.handler[self.alias].pool_handle.entry(create=False)
            if entry is not None and not entry.pool.closed:
                entry.pool.check()

        self.control.call(check, bound)

    def settle_control(self, timeout: float) -> bool:
        return self.control.settle(timeout)

    def stats(self) -> dict[str, int]:
        entry = self._current_entry()
        if entry is None or entry.pool.closed:
            return {}
        return dict(entry.pool.get_stats())

    # -- expectations ----------------------------------------------------------
    def expected_fingerprint(self, settings: SettingsValue) -> Any:
        direct = settings_dict(
            self.server.host, self.server.port, self.server, self.options, settings, pooled=False
        )
        reference = (
            with_configure_override(DatabaseWrapper)
            if self.options.configure_override
            else DatabaseWrapper
        )
        db = reference(direct, alias=f"{self.alias}-expected")
        try:
            return session_fingerprint(db.ensure_connection())
        finally:
            db.close()

    # -- scenarios -------------------------------------------------------------
    def pool_counters(self) -> dict[str, int]:
        """psycopg_pool's counters plus the backend's own (checks failed, resets failed)."""
        return dict(self.thread_client().pool_stats() or {})

    # -- cleanup ---------------------------------------------------------------
    def close(self) -> None:
        self.stop_requests()
        with contextlib.suppress(StepTimeout, Exception):
            self.control.call(self.handler.close_all, 5.0)
        self.control.stop(1.0)
        pools.close_matching(lambda e: e.key[1] == self.alias, timeout=2.0)
        forking.reap_all()  # a child whose fork_child call did not come back (timed out)
        for entry in list(self._seen):  # a forgotten pool nobody closed (a broken variant)
            if not entry.pool.closed:
                with contextlib.suppress(Exception):
                    entry.pool.close(timeout=2.0)

    # -- fork ------------------------------------------------------------------------
    def _request_wrappers(self) -> list[DatabaseWrapper]:
        """Each live request's wrapper (the handler's are thread-local: the session keeps
        its thread's). From the machine's thread between steps: no call is running."""
        return [
            request.session.wrapper  # type: ignore[attr-defined]
            for request in self.requests
            if request.thread.alive and not request.thread.pending
        ]

    def _parent_connections(self) -> list[tuple[psycopg.Connection, str]]:
        """This process's connections for the alias: held by a request's wrapper, or idle in
        a registered pool (psycopg_pool's private idle deque, read through plain_pool._compat)."""
        found: list[tuple[psycopg.Connection, str]] = []
        for wrapper in self._request_wrappers():
            conn = wrapper.connection
            if conn is not None and not conn.closed:
                found.append((conn, "held"))
        for entry in pools.entries():
            if entry.key[1] == self.alias and not entry.pool.closed:
                found += [(conn, "idle") for conn in _compat.idle_connections(entry.pool)]
        return found

    def _connections_in_flight(self) -> int:
        """Connections the alias's pools are still making (growing, replacing): counted
        in ``pool_size`` but neither idle nor lent to a request."""
        lent: dict[int, int] = {}
        for request in self.requests:
            wrapper = getattr(request.session, "wrapper", None)
            lease = getattr(wrapper, "lease", None)
            if lease is not None and getattr(wrapper, "connection", None) is not None:
                lent[id(lease.pool)] = lent.get(id(lease.pool), 0) + 1
        in_flight = 0
        for entry in pools.entries():
            if entry.key[1] == self.alias and not entry.pool.closed:
                stats = entry.pool.get_stats()
                idle = stats.get("pool_available", 0) + lent.get(id(entry.pool), 0)
                in_flight += max(0, stats.get("pool_size", 0) - idle)
        return in_flight

    def parent_sessions(self) -> dict[int, str]:
        """Read from the machine's thread between steps (no request call is running).

        First waits (bounded) for connections a pool is still making to land in it: one
        landing between this list and the fork would be the parent's, yet not on it.
        """
        deadline = time.monotonic() + SETTLE_BOUND
        while self._connections_in_flight() and time.monotonic() < deadline:
            time.sleep(0.005)
        sessions: dict[int, str] = {}
        for conn, where in self._parent_connections():
            with contextlib.suppress(psycopg.Error):
                sessions.setdefault(conn.info.backend_pid, where)
        return sessions

    def ping_sessions(self, pids: Iterable[int], bound: float) -> dict[int, str]:
        """From a control thread, on the connections themselves (their owners are idle)."""
        wanted = set(pids)
        connections = self._parent_connections()

        def ping_all() -> dict[int, str]:
            failed: dict[int, str] = {}
            for conn, _ in connections:
                try:
                    pid = conn.info.backend_pid
                except psycopg.Error:
                    continue
                if pid not in wanted:
                    continue
                wanted.discard(pid)
                try:
                    _ping(conn, PING_TIMEOUT)
                except psycopg.Error as exc:
                    failed[pid] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            failed.update(dict.fromkeys(wanted, "no longer held or pooled"))
            return failed

        return self.control.call(ping_all, bound)

    def fork_child(
        self, work: str, ending: str, bound: float, parent_pids: frozenset[int]
    ) -> forking.ChildReport:
        children: list[forking.ForkedChild] = []
        # Strong references the child inherits: the requests' wrappers (in the child, the
        # other threads' thread-locals are gone), as an app keeping its connections would.
        wrappers = self._request_wrappers()

        def spawn() -> None:
            children.append(
                forking.fork(
                    lambda report: self._child_work(work, ending, parent_pids, wrappers, report),
                    bound=bound,
                )
            )

        try:
            try:
                self.control.call(spawn, FORK_CALL_BOUND)
            except StepTimeout:
                self.control.settle(FORK_CALL_BOUND)  # os.fork() returns in ms: wait for it
                if not children:
                    raise
            (child,) = children
            child.wait(bound + FORK_GRACE)
            return child.report(work, ending)
        finally:
            for child in children:
                child.reap()

    def _child_work(
        self,
        work: str,
        ending: str,
        parent_pids: frozenset[int],
        wrappers: list[DatabaseWrapper],
        report: dict[str, Any],
    ) -> None:  # pragma: no cover - runs in the forked child
        """In the child, where only the control thread exists: ``work`` through the handler,
        the wrappers and the pools it inherited, the way an application would."""
        handler, alias = self.handler, self.alias

        def request(give_back: bool) -> None:
            handler.request_started()
            pid = handler[alias].cursor().execute("SELECT pg_backend_pid()").fetchone()[0]
            report["backends"].append(pid)
            if pid in parent_pids:
                report["shared"].append(pid)
            if give_back:
                handler.request_finished()

        if work == "request":
            request(give_back=True)
        elif work == "no_cleanup":
            request(give_back=False)
        elif work == "close_pool":
            handler[alias].close_pool()
        elif work == "close_all":
            try:
                request(give_back=True)
            finally:  # the naive way, as shutdown code does: everything it can reach
                errors = []
                for close in (handler.close_all, *(w.close for w in wrappers), handler.close_pools):
                    try:
                        close()
                    except Exception as exc:
                        errors.append(exc)
                if errors:
                    raise errors[0]
        else:
            raise ValueError(f"unknown child work {work!r}")
        if ending == "gc":  # what a normal exit finalises: the registry's pools, the wrappers
            for entry in pools.entries():
                if entry.key[1] == alias:
                    pools.forget(entry)
            vars(handler._local).clear()
            wrappers.clear()
            gc.collect()
        elif ending != "os_exit":
            raise ValueError(f"unknown child ending {ending!r}")


def _ping(conn: psycopg.Connection, timeout: float) -> None:
    """An empty query at the libpq level with a deadline (plain_pool._wire, as the backend's
    health probe), but in any transaction status: no BEGIN, no state change."""
    pgconn = conn.pgconn
    if pgconn.status != ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed or broken")
    deadline = time.monotonic() + timeout
    if session_reset.reset_in_flight(conn):
        # Idle in the pool with its reset on the wire: its answer is the ping (read now,
        # as the next checkout would; the checkout still configures the session).
        session_reset.finish_reset(conn, deadline, answer_within=timeout)
        return
    _wire.run(pgconn, b"", deadline, (ExecStatus.EMPTY_QUERY,), f"empty query (within {timeout}s)")
