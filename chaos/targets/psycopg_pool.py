"""Bare psycopg_pool as a machine target: ``ConnectionPool``, ``getconn()`` / ``putconn()``.

Driven the way an application that uses psycopg_pool directly drives it, and
nothing more:

- a request takes a connection with ``pool.getconn()`` and returns it with
  ``pool.putconn(conn)`` to the pool it came from. There is no reset beyond
  psycopg_pool's own: ``putconn`` rolls back an open or failed transaction and
  closes a broken connection; every other kind of session state (``SET``,
  ``SET ROLE``, temp tables, advisory locks, ``LISTEN``, ``PREPARE``, ``WITH
  HOLD`` cursors, the client-side attributes) goes to the next request. That is
  psycopg_pool's documented behaviour (its ``reset`` callback is opt-in);
- a ``configure`` callback (psycopg_pool runs it once per new connection) sets
  the time zone (``SET TIME ZONE``: "UTC" when ``use_tz``, as Django, else the
  zone) and, when :attr:`SettingsValue.role` is set, ``SET ROLE``: psycopg_pool
  has no role setting, so this is how its users assume one. It commits if a
  statement left a transaction open: psycopg_pool discards a connection that
  ``configure`` leaves non-idle. Connections are made with ``autocommit=True``
  (``kwargs``), the mode the machines model a request starting in (psycopg's
  own default is a transaction per first statement, which ``putconn`` would
  roll back - and with it every ``SET`` made inside it);
- ``check=ConnectionPool.check_connection`` (psycopg_pool's own check, opt-in)
  when ``TargetOptions.health_checks`` is on; :class:`PsycopgPoolNoCheckTarget`
  never has one (psycopg_pool's default), whatever the options say;
- a settings change (zone, role): psycopg_pool cannot reconfigure a pool, so a
  careful user builds a new pool with the new ``configure``, makes it the one
  new requests use, then closes the old one. ``close()`` does not wait for
  connections on loan: a request holding one keeps it (with the old
  configuration) until it returns it, and ``putconn`` to the closed pool closes
  it. ``close(timeout)`` joins each of the pool's threads for up to ``timeout``:
  a short one (:data:`CLOSE_TIMEOUT`) keeps the settings change from waiting on
  a worker stuck connecting through a bad link (psycopg_pool closes what such a
  worker makes once it is done). Only a change of the session's configuration
  (zone, role) builds a new pool; ``close_pool`` closes the current pool and the
  next checkout builds a new one (a closed psycopg_pool cannot be reopened).

The contract every target keeps (chaos.targets.base): ``checkout()``
fingerprints the connection before anything else runs on it; ``age`` is on the
client's monotonic clock from the ``configure`` call (:func:`_common.stamp`);
``pool_id`` is ``id()`` of the pool that lent the connection;
``expected_fingerprint`` is a fresh connection from a fresh psycopg_pool with
the same ``configure``, straight to the server; ``application_name`` is unique
per target and set on every connection it opens.

Options: ``min_size``, ``max_size``, ``timeout``, ``max_lifetime``,
``max_idle``, ``reconnect_timeout`` are the pool's parameters;
``prepare_threshold`` goes to the connection (``kwargs``; None keeps psycopg's
default, 5); ``server_side_binding`` changes nothing (psycopg's default cursor
binds server-side already); ``configure_override`` adds a statement to the
``configure`` callback (what a user's own configure would set: every checkout
must show it); ``user_check`` is passed as the pool's ``check``. ``variant``
(plain_pool's broken wrappers) cannot be honoured: :class:`UnsupportedOption`.
The fork methods are not implemented (the fork rules skip this target).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from chaos.faults.connect import CHAOS_TIMEOUTS
from chaos.fingerprint import session_fingerprint
from chaos.machines.model import SettingsValue
from chaos.targets._common import (
    apply_client_attr,
    backend_identity,
    refuse_broken,
    stamp,
    unique_application_name,
)
from chaos.targets.base import (
    CheckoutResult,
    ConnectionClient,
    ControlThreads,
    Session,
    SessionCapacity,
    TargetOptions,
    TargetRequest,
    ThreadClients,
    ThreadedTarget,
)
from chaos.targets.plain_pool import OVERRIDE_SQL
from chaos.targets.registry import UnsupportedOption

#: ``ConnectionPool.close(timeout)``: how long to join each of the old pool's threads on a
#: settings change or close_pool (4 threads: workers + scheduler; the bound is 1.5 s).
CLOSE_TIMEOUT = 0.3
#: How long the expected-fingerprint pool may take to hand out its one connection.
EXPECTED_TIMEOUT = 10.0
_numbers = itertools.count(1)


def session_zone(settings: SettingsValue) -> str:
    """The zone sessions must have: "UTC" when ``use_tz`` (as Django), else the zone."""
    return "UTC" if settings.use_tz else settings.time_zone


def make_configure(
    settings: SettingsValue, *, override: bool = False
) -> Callable[[psycopg.Connection], None]:
    """psycopg_pool's ``configure`` callback for ``settings`` (runs once per new connection)."""
    zone = session_zone(settings)

    def configure(conn: psycopg.Connection) -> None:
        stamp(conn)  # the connection's age starts here (CheckoutResult.age)
        conn.execute(sql.SQL("SET TIME ZONE {}").format(sql.Literal(zone)))
        if settings.role:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(settings.role)))
        if override:
            conn.execute(OVERRIDE_SQL)
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.commit()  # psycopg_pool discards a connection configure leaves non-idle

    configure.__qualname__ = f"configure[{zone}, role={settings.role}]"
    return configure


def _configuration(settings: SettingsValue) -> tuple[str, str | None]:
    """What ``configure`` depends on: a change of it needs a new pool."""
    return session_zone(settings), settings.role


class PsycopgPoolSession(Session):
    """One request: the connection it got with ``getconn()`` and the pool that lent it."""

    def __init__(self, target: PsycopgPoolTarget) -> None:
        self.target = target
        self.conn: psycopg.Connection | None = None
        self.pool: ConnectionPool | None = None

    def _connection(self) -> psycopg.Connection:
        if self.conn is None:
            pool = self.target.pool()
            self.conn = pool.getconn()
            self.pool = pool
        return self.conn

    def checkout(self) -> CheckoutResult:
        conn = self._connection()
        refuse_broken(conn)  # a dead handout for the judge, not a leak
        fingerprint = session_fingerprint(conn)
        backend, age = backend_identity(conn)
        return CheckoutResult(fingerprint, backend, age, id(self.pool))

    def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> list[tuple]:
        with self._connection().cursor() as cur:
            cur.execute(sql, params, prepare=prepare)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []

    def set_client_attr(self, name: str, value: Any) -> None:
        """As PlainPoolSession.set_client_attr, on the connection ``getconn()`` gave."""
        conn = self._connection()
        apply_client_attr(conn, name, value)

    def begin(self, how: str) -> None:
        conn = self._connection()
        if how == "autocommit_off":
            conn.autocommit = False  # psycopg begins a transaction at the next statement
        elif conn.info.transaction_status == TransactionStatus.IDLE:
            conn.execute("BEGIN", prepare=False)

    def ensure_timezone(self) -> None:
        """A settings change seen from this thread: a new pool if the configuration changed."""
        self.target.apply_settings()

    def give_back(self) -> None:
        conn, pool = self.conn, self.pool
        self.conn = self.pool = None
        if conn is not None and pool is not None:
            pool.putconn(conn)

    def finish(self) -> None:
        self.give_back()

    def holds_connection(self) -> bool:
        return self.conn is not None


class PsycopgPoolTarget(ThreadedTarget[ConnectionClient]):
    """psycopg_pool's ConnectionPool behind the fault proxy (see the module docstring)."""

    #: Whether the pool gets psycopg_pool's check (None: as ``TargetOptions.health_checks``).
    check_forced: bool | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        return None  # psycopg_pool is a dependency of plain_pool itself

    def __init__(
        self,
        *,
        server: Any,
        host: str,
        port: int,
        options: TargetOptions,
        settings: SettingsValue | None = None,
    ) -> None:
        name = "psycopg_pool" if self.check_forced is None else "psycopg_pool-nocheck"
        if options.variant is not None:
            raise UnsupportedOption(name, "variant", "the broken variants are plain_pool wrappers")
        if options.user_check is not None and self.check_forced is False:
            raise UnsupportedOption(
                name, "user_check", "this target runs without a check (use psycopg_pool)"
            )
        self.server = server
        self.options = options
        self.host, self.port = host, port
        self.number = next(_numbers)
        self.application_name = unique_application_name(f"psycopg_pool{self.number}")
        self.checks = options.health_checks if self.check_forced is None else self.check_forced
        self.user_check = (
            options.user_check(identify=lambda conn: backend_identity(conn)[0])
            if options.user_check is not None
            else None
        )
        self.settings = settings or SettingsValue()
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._pool_settings: SettingsValue | None = None
        #: Every pool this target built, for close().
        self._pools: list[ConnectionPool] = []
        self.control = ControlThreads(f"{self.application_name}-control")
        self.requests: list[TargetRequest] = []
        #: The scenarios' per-thread clients: getconn() from the current pool, putconn()
        #: to the pool that lent the connection (as a request does).
        self.clients = ThreadClients(lambda: ConnectionClient(self._lend))
        self.cache_key = (
            getattr(server, "host", None),
            getattr(server, "port", None),
            options.prepare_threshold,
            options.configure_override,
        )
        check = (
            "user check"
            if self.user_check is not None
            else "check_connection"
            if self.checks
            else "no check"
        )
        self.description = (
            f"psycopg_pool {_version()} ConnectionPool ({check}, pool "
            f"{options.min_size}..{options.max_size}, max_lifetime {options.max_lifetime}s, "
            f"prepare_threshold {_threshold(options.prepare_threshold)})"
        )

    # -- the pool ----------------------------------------------------------------------
    def _kwargs(self, *, application_name: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {**CHAOS_TIMEOUTS.connect_kwargs(), "autocommit": True}
        for key, value in (self.options.connect_options or {}).items():
            if value is None:
                kwargs.pop(key, None)  # a scenario removes a harness default
            else:
                kwargs[key] = value
        if application_name:
            kwargs["application_name"] = application_name
        if self.options.prepare_threshold is not None:
            kwargs["prepare_threshold"] = self.options.prepare_threshold
        return kwargs

    def _conninfo(self, host: str, port: int) -> str:
        return make_conninfo(
            host=host,
            port=port,
            user=getattr(self.server, "superuser", "postgres"),
            dbname=getattr(self.server, "dbname", "postgres"),
        )

    def _check(self) -> Callable[[psycopg.Connection], None] | None:
        if self.user_check is not None:
            return self.user_check  # type: ignore[no-any-return]
        return ConnectionPool.check_connection if self.checks else None

    def _build(self, settings: SettingsValue, **overrides: Any) -> ConnectionPool:
        """A new open pool configured for ``settings`` (through the proxy by default)."""
        params: dict[str, Any] = {
            "conninfo": self._conninfo(self.host, self.port),
            "kwargs": self._kwargs(application_name=self.application_name),
            "min_size": self.options.min_size,
            "max_size": self.options.max_size,
            "timeout": self.options.timeout,
            "max_lifetime": self.options.max_lifetime,
            "max_idle": self.options.max_idle,
            "reconnect_timeout": self.options.reconnect_timeout,
            "reconnect_failed": self.options.reconnect_failed,
            "configure": make_configure(settings, override=self.options.configure_override),
            "check": self._check(),
            "name": f"{self.application_name}-{len(self._pools) + 1}",
            "open": True,
        }
        params.update(overrides)
        return ConnectionPool(**params)

    def pool(self) -> ConnectionPool:
        """The pool new requests use: built on first use for the settings in force."""
        with self._lock:
            if self._pool is None:
                self._pool = self._build(self.settings)
                self._pool_settings = self.settings
                self._pools.append(self._pool)
            return self._pool

    def apply_settings(self) -> None:
        """A new pool if the settings in force need another ``configure``; close the old.

        The new pool is made current first (no request waits for the old one), then
        the old one is closed: its idle connections now, the ones on loan when they
        come back (``putconn`` on a closed pool closes them)."""
        with self._lock:
            old = self._pool
            if old is None:
                return  # the next checkout builds one for the settings in force
            if _configuration(self._pool_settings or self.settings) == _configuration(
                self.settings
            ):
                self._pool_settings = self.settings
                return
            self._pool = self._build(self.settings)
            self._pool_settings = self.settings
            self._pools.append(self._pool)
        old.close(timeout=CLOSE_TIMEOUT)

    def _close_current(self) -> None:
        with self._lock:
            old, self._pool, self._pool_settings = self._pool, None, None
        if old is not None:
            old.close(timeout=CLOSE_TIMEOUT)

    # -- requests ----------------------------------------------------------------------
    def open_request(self, number: int) -> TargetRequest:
        request = TargetRequest(number, lambda: PsycopgPoolSession(self))
        self.requests.append(request)
        return request

    # -- settings ----------------------------------------------------------------------
    def change_settings(
        self, settings: SettingsValue, via: TargetRequest | None, bound: float
    ) -> None:
        self.settings = settings
        if via is not None:
            via.run(lambda s: s.ensure_timezone(), bound)
        else:
            self.control.call(self.apply_settings, bound)

    def current_pool_id(self) -> int | None:
        pool = self._pool
        return id(pool) if pool is not None else None

    def session_capacity(self) -> SessionCapacity:
        """The current pool's size plus the connections requests hold from other pools.

        psycopg_pool's ``pool_size`` counts its connections on loan too; a closed
        pool's idle connections are closed by ``close()``, its loaned ones at
        ``putconn``. Read from the machine's thread between steps.
        """
        pool = self._pool
        size = (
            int(pool.get_stats().get("pool_size", 0)) if pool is not None and not pool.closed else 0
        )
        held = 0
        for request in self.requests:
            session = request.session
            conn = getattr(session, "conn", None)
            if conn is None or conn.closed:
                continue
            if getattr(session, "pool", None) is not pool or pool is None or pool.closed:
                held += 1
        open_old = [p for p in self._pools if p is not pool and not p.closed]
        parts = [f"current pool {id(pool):#x} size {size}" if pool is not None else "no pool"]
        parts.append(f"{held} connection(s) held by requests from other pools")
        parts += [f"OPEN old pool {p.name}" for p in open_old]
        return SessionCapacity(size + held, "; ".join(parts))

    # -- pool maintenance ----------------------------------------------------------------
    def close_pool(self, bound: float) -> None:
        self.control.call(self._close_current, bound)

    def check_pool(self, bound: float) -> None:
        def check() -> None:
            pool = self._pool
            if pool is not None and not pool.closed:
                pool.check()

        self.control.call(check, bound)

    def settle_control(self, timeout: float) -> bool:
        return self.control.settle(timeout)

    def stats(self) -> dict[str, int]:
        pool = self._pool
        if pool is None or pool.closed:
            return {}
        return dict(pool.get_stats())

    # -- expectations ----------------------------------------------------------------------
    def expected_fingerprint(self, settings: SettingsValue) -> Any:
        """A fresh connection from a fresh pool of one, same configure and kwargs, straight
        to the server (no proxy), under an application_name of its own."""
        return self._fingerprint_pool_of_one(
            settings,
            conninfo=self._conninfo(self.server.host, self.server.port),
            kwargs=self._kwargs(application_name=None),
        )

    def _fingerprint_pool_of_one(self, settings: SettingsValue, **overrides: Any) -> Any:
        """The first connection's fingerprint from a fresh pool of one with no check
        (``_build``'s other parameters, ``overrides`` over them), closed after."""
        pool = self._build(
            settings,
            min_size=1,
            max_size=1,
            timeout=EXPECTED_TIMEOUT,
            check=None,
            name=f"{self.application_name}-expected",
            **overrides,
        )
        try:
            conn = pool.getconn()
            try:
                return session_fingerprint(conn)
            finally:
                pool.putconn(conn)
        finally:
            pool.close()

    # -- scenarios ---------------------------------------------------------------------------
    def _lend(self) -> tuple[psycopg.Connection, Callable[[psycopg.Connection], None]]:
        pool = self.pool()
        return pool.getconn(), pool.putconn

    # -- cleanup ---------------------------------------------------------------------------
    def close(self) -> None:
        self.stop_requests()
        self.control.stop(1.0)
        with self._lock:
            pools, self._pool = list(self._pools), None
        for pool in pools:
            with contextlib.suppress(Exception):
                pool.close(timeout=1.0)
        self.close_session_connections()  # still on loan (a stuck request's)


class PsycopgPoolNoCheckTarget(PsycopgPoolTarget):
    """psycopg_pool without a ``check`` (its default), whatever ``health_checks`` says.

    The same as ``PsycopgPoolTarget`` with ``health_checks=False``, registered as a
    name of its own so that the matrix has a column for psycopg_pool as most users
    run it. With the default options the machines still expect health checks: a dead
    connection handed out after a fault is then a finding against this configuration
    (psycopg_pool documents ``check`` as opt-in), not an adapter error.
    """

    check_forced = False


def _threshold(value: int | None) -> str:
    return "psycopg default" if value is None else str(value)


def _version() -> str:
    import psycopg_pool

    return str(getattr(psycopg_pool, "__version__", "?"))
