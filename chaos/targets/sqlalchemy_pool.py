"""SQLAlchemy 2's QueuePool on psycopg 3 as a machine target, driven as a service drives it.

The system: ``create_engine("postgresql+psycopg://...", poolclass=QueuePool,
pool_size=max_size, max_overflow=0, pool_timeout=timeout,
pool_recycle=max_lifetime, pool_pre_ping=health_checks,
pool_reset_on_return="rollback")``. Per request: ``engine.connect()`` at
checkout, ``conn.exec_driver_sql(...)`` for SQL, ``conn.close()`` to give the
connection back (SQLAlchemy's reset on return then runs).

Contract with the machines (see :mod:`chaos.targets.base`):

- ``checkout``: ``engine.connect()`` (the pool's pre-ping included), then the
  DBAPI connection (``conn.connection.dbapi_connection``) is fingerprinted
  before anything else runs on it. ``age``: client monotonic seconds since the
  ``connect`` event configured it; ``pool_id``: ``id()`` of the QueuePool it
  came from.
- Time zone and role: SQLAlchemy has no setting for them. Users do it with a
  ``connect`` event listener that runs ``SET`` on each new DBAPI connection,
  with autocommit switched on around it: the idiom SQLAlchemy's PostgreSQL
  dialect documents ("Setting Alternate Search Paths on Connect"), and the
  only one that covers ``SET ROLE`` and ``SET TIME ZONE`` alike
  (``connect_args={"options": "-c TimeZone=..."}`` is common for the zone, but
  startup options leave the same session state: the fingerprint cannot tell
  them apart). The zone is "UTC" when ``use_tz`` (aware datetimes), else
  ``time_zone``, as the other targets.
- SQL: ``exec_driver_sql`` then ``conn.commit()`` ("commit as you go",
  SQLAlchemy 2's style), unless the request opened a transaction
  (``begin``): the machines model an autocommit backend, where a statement
  outside an explicit transaction takes effect. (Without the commit, a ``SET``
  would be rolled back by the reset on return: SQLAlchemy only "resets" what
  was never committed.) ``prepare=`` cannot be passed through SQLAlchemy and is
  ignored; psycopg's own ``_pg3_`` statements are its cache, which the
  fingerprint ignores with ``prepare_threshold`` set (psycopg's default 5).
- Client attributes: ``isolation_level``, ``read_only``, ``deferrable`` and
  ``autocommit`` through SQLAlchemy's own API, ``conn.execution_options(
  isolation_level=..., postgresql_readonly=..., postgresql_deferrable=...)``
  (``"AUTOCOMMIT"`` for autocommit), which its reset undoes; every other
  attribute (row factory, handlers, loaders, ...) on the driver connection, the
  only way a SQLAlchemy user can change them.
- A settings change = a new engine, the old one ``dispose()``-d (what users do:
  SQLAlchemy cannot reconfigure an engine). ``close_pool`` = ``engine.dispose()``.
  Connections a request still holds from an old pool go back to that pool on
  ``close()`` (SQLAlchemy: "closed out fully" when that pool is garbage
  collected).
- ``check_pool``: QueuePool has no maintenance call (its pre-ping at checkout
  is the check): a no-op. ``min_size``, ``max_idle`` and ``reconnect_timeout``
  have no QueuePool counterpart and are ignored (connections open on demand,
  never close for idleness, and every checkout connects again at once).
  ``prepare_threshold`` goes to ``connect_args`` (None keeps psycopg's 5);
  ``server_side_binding`` changes nothing (the dialect's default cursor,
  ``psycopg.Cursor``, binds server-side already).
- Unsupported (``UnsupportedOption``): ``variant``, ``configure_override``,
  ``user_check``; forks are not implemented (the fork rules skip).

What SQLAlchemy's reset on return does (SQLAlchemy 2.1.9, read in
``pool/base.py`` ``_ConnectionFairy._reset`` and ``engine/default.py``):
``dialect.do_rollback`` = the DBAPI ``rollback()`` (psycopg sends ``ROLLBACK``
only inside a transaction; nothing in autocommit), plus
``_reset_characteristics`` for what was set through ``execution_options`` on
that checkout (isolation level back to the default read at first connect,
``read_only`` / ``deferrable`` back to ``False``). Nothing else: committed
``SET``s, ``SET ROLE``, temp tables, advisory locks, ``LISTEN``, ``PREPARE``,
``WITH HOLD`` cursors and the driver connection's attributes stay for the next
checkout. The ROLLBACK has no deadline: over a half-open link ``conn.close()``
blocks until the link heals. See evidence/sqlalchemy/.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import uuid
import weakref
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from chaos.faults.connect import CHAOS_TIMEOUTS
from chaos.fingerprint import session_fingerprint
from chaos.machines.model import Backend, SettingsValue
from chaos.targets._common import apply_client_attr
from chaos.targets.base import (
    CheckoutResult,
    ControlThreads,
    Session,
    SessionCapacity,
    StepTimeout,
    Target,
    TargetOptions,
    TargetRequest,
)
from chaos.targets.registry import UnsupportedOption

try:  # the matrix extra: the module imports without it, unavailable() says why
    import sqlalchemy
    from sqlalchemy import event
    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.pool import QueuePool
except ImportError:  # pragma: no cover - depends on the environment
    sqlalchemy = None  # type: ignore[assignment]

_targets = itertools.count(1)
#: When each DBAPI connection was configured by the ``connect`` event (client monotonic).
_configured_at: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()
#: psycopg's IsolationLevel names as SQLAlchemy spells them.
_ISOLATION_NAMES = {
    "READ_UNCOMMITTED": "READ UNCOMMITTED",
    "READ_COMMITTED": "READ COMMITTED",
    "REPEATABLE_READ": "REPEATABLE READ",
    "SERIALIZABLE": "SERIALIZABLE",
}


def session_zone(settings: SettingsValue) -> str:
    """The zone sessions must have: "UTC" when ``use_tz`` (aware datetimes), else the zone."""
    return "UTC" if settings.use_tz else settings.time_zone


def configure_on_connect(engine: Engine, settings: SettingsValue) -> None:
    """The ``connect`` listener SQLAlchemy documents for session settings: autocommit on
    around the ``SET``s, so the reset's ROLLBACK cannot undo them; then a creation stamp."""
    statements = [f"SET TIME ZONE '{session_zone(settings)}'"]
    if settings.role:
        statements.append(f"SET ROLE {settings.role}")

    @event.listens_for(engine, "connect", insert=True)
    def configure(dbapi_connection: psycopg.Connection, connection_record: Any) -> None:
        existing_autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            for sql in statements:
                cursor.execute(sql)
        finally:
            cursor.close()
        dbapi_connection.autocommit = existing_autocommit
        _configured_at[dbapi_connection] = time.monotonic()


def make_engine(
    *,
    host: str,
    port: int,
    server: Any,
    options: TargetOptions,
    settings: SettingsValue,
    application_name: str,
) -> Engine:
    """The engine a service would create for these settings (no connection made yet)."""
    url = URL.create(
        "postgresql+psycopg",
        username=getattr(server, "superuser", "postgres"),
        host=host,
        port=port,
        database=getattr(server, "dbname", "postgres"),
    )
    connect_args: dict[str, Any] = {
        **CHAOS_TIMEOUTS.connect_kwargs(),
        "application_name": application_name,
    }
    if options.prepare_threshold is not None:
        connect_args["prepare_threshold"] = options.prepare_threshold
    engine = sqlalchemy.create_engine(
        url,
        poolclass=QueuePool,
        pool_size=options.max_size,
        max_overflow=0,
        pool_timeout=options.timeout,
        pool_recycle=options.max_lifetime,
        pool_pre_ping=options.health_checks,
        pool_reset_on_return="rollback",
        connect_args=connect_args,
    )
    configure_on_connect(engine, settings)
    return engine


def _backend(dbapi: psycopg.Connection) -> tuple[Backend, float]:
    created = _configured_at.setdefault(dbapi, time.monotonic())
    return Backend(dbapi.info.backend_pid, round(created, 6)), time.monotonic() - created


class SQLAlchemySession(Session):
    """One request: an ``engine.connect()`` Connection while it holds one (its own thread)."""

    def __init__(self, target: SQLAlchemyTarget) -> None:
        self.target = target
        self.conn: Connection | None = None
        #: The pool the held connection came from and its DBAPI connection (for the target,
        #: read from the machine's thread between steps).
        self.pool: QueuePool | None = None
        self.dbapi: psycopg.Connection | None = None
        #: A transaction the request opened: statements are not committed one by one.
        self.explicit = False

    def _connection(self) -> Connection:
        if self.conn is None or self.conn.closed:
            engine = self.target.engine
            pool = engine.pool
            self.conn = engine.connect()
            self.pool = pool  # type: ignore[assignment]
            self.target.pools.add(pool)
            self.explicit = False
            self.dbapi = self.conn.connection.dbapi_connection  # type: ignore[assignment]
        return self.conn

    def _dbapi(self) -> psycopg.Connection:
        return self._connection().connection.dbapi_connection  # type: ignore[return-value]

    def checkout(self) -> CheckoutResult:
        dbapi = self._dbapi()
        if dbapi.closed or dbapi.info.transaction_status == TransactionStatus.UNKNOWN:
            # libpq already knows this session is gone: a dead handout for the judge.
            raise psycopg.OperationalError(
                f"the checkout handed out a broken connection ({dbapi.pgconn.status.name})"
            )
        fingerprint = session_fingerprint(dbapi)
        backend, age = _backend(dbapi)
        return CheckoutResult(fingerprint, backend, age, id(self.pool))

    def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> list[tuple]:
        conn = self._connection()
        result = conn.exec_driver_sql(sql, tuple(params) if params is not None else None)
        rows = [tuple(row) for row in result.fetchall()] if result.returns_rows else []
        if not self.explicit:
            conn.commit()
        return rows

    def set_client_attr(self, name: str, value: Any) -> None:
        conn = self._connection()
        if name == "isolation_level":
            level = value.name if hasattr(value, "name") else str(value)
            conn.execution_options(isolation_level=_ISOLATION_NAMES.get(level, level))
        elif name == "read_only":
            conn.execution_options(postgresql_readonly=bool(value))
        elif name == "deferrable":
            conn.execution_options(postgresql_deferrable=bool(value))
        elif name == "autocommit":
            if value:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            elif conn.connection.dbapi_connection.autocommit:  # type: ignore[union-attr]
                conn.execution_options(isolation_level=conn.default_isolation_level)
        else:
            apply_client_attr(self._dbapi(), name, value)

    def begin(self, how: str) -> None:
        """``"begin"``: ``conn.begin()``; ``"autocommit_off"``: statements stop being committed
        (SQLAlchemy's autobegin opens the transaction at the next one). Either way the
        request never commits: ``close()`` must roll it back."""
        conn = self._connection()
        if how == "begin" and not conn.in_transaction():
            conn.begin()
        self.explicit = True

    def ensure_timezone(self) -> None:
        """SQLAlchemy has no such hook: the new engine configures its new connections."""

    def give_back(self) -> None:
        conn, self.conn, self.pool, self.dbapi = self.conn, None, None, None
        self.explicit = False
        if conn is not None:
            conn.close()

    def finish(self) -> None:
        self.give_back()

    def holds_connection(self) -> bool:
        return self.conn is not None and not self.conn.closed


class SQLAlchemyTarget(Target):
    """SQLAlchemy 2's QueuePool (psycopg 3) behind the fault proxy; see the module docstring."""

    @classmethod
    def unavailable(cls) -> str | None:
        if sqlalchemy is None:
            return "sqlalchemy is not installed (pip install 'plain-pool[matrix]')"
        return None

    def __init__(
        self,
        *,
        server: Any,
        host: str,
        port: int,
        options: TargetOptions,
        settings: SettingsValue | None = None,
    ) -> None:
        for option, why in (
            ("variant", "the broken variants are plain_pool wrappers"),
            ("configure_override", "SQLAlchemy configures with a connect event, no subclass hook"),
            ("user_check", "QueuePool takes no check callable (pool_pre_ping is its check)"),
        ):
            if getattr(options, option):
                raise UnsupportedOption("sqlalchemy", option, why)
        self.server = server
        self.options = options
        self.host, self.port = host, port
        number = next(_targets)
        self.application_name = f"sqla{number}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.settings = settings or SettingsValue()
        self.engine = self._engine(self.settings)
        #: Every engine made, and every pool a request took a connection from: close()
        #: closes them all (a pool replaced by dispose() keeps what is given back to it).
        self.engines: list[Engine] = [self.engine]
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self.control = ControlThreads(f"sqla{number}-control")
        self.requests: list[TargetRequest] = []
        self.cache_key = (
            getattr(server, "host", None),
            getattr(server, "port", None),
            options.prepare_threshold,
        )
        self.description = (
            f"SQLAlchemy {sqlalchemy.__version__} QueuePool on psycopg {psycopg.__version__} "
            f"(pool_size {options.max_size}, max_overflow 0, pool_timeout {options.timeout}s, "
            f"pool_recycle {options.max_lifetime}s, pool_pre_ping {options.health_checks}, "
            f"prepare_threshold {options.prepare_threshold})"
        )

    def _engine(self, settings: SettingsValue) -> Engine:
        return make_engine(
            host=self.host,
            port=self.port,
            server=self.server,
            options=self.options,
            settings=settings,
            application_name=self.application_name,
        )

    # -- requests ------------------------------------------------------------
    def open_request(self, number: int) -> TargetRequest:
        request = TargetRequest(number, lambda: SQLAlchemySession(self))
        self.requests.append(request)
        return request

    # -- settings ------------------------------------------------------------
    def change_settings(
        self, settings: SettingsValue, via: TargetRequest | None, bound: float
    ) -> None:
        """A new engine for the new settings; the old one disposed (its idle connections
        closed; those requests hold go back to the old pool when they are closed)."""

        def swap() -> None:
            old, self.engine = self.engine, self._engine(settings)
            self.engines.append(self.engine)
            self.settings = settings
            old.dispose()

        if via is not None:
            via.run(lambda s: swap(), bound)
        else:
            self.control.call(swap, bound)

    def current_pool_id(self) -> int | None:
        return id(self.engine.pool)

    def _held(self) -> list[SQLAlchemySession]:
        """Sessions holding a connection (read from the machine's thread between steps)."""
        sessions = [request.session for request in self.requests]
        return [s for s in sessions if isinstance(s, SQLAlchemySession) and s.conn is not None]

    def session_capacity(self) -> SessionCapacity:
        """The current pool's open connections (checked in + checked out) plus connections
        requests hold from pools no longer current."""
        pool = self.engine.pool
        size = pool.checkedin() + pool.checkedout()  # type: ignore[attr-defined]
        held = sum(1 for s in self._held() if s.pool is not pool)
        return SessionCapacity(
            size + held,
            f"current pool {id(pool):#x} open {size}; "
            f"{held} connection(s) held by requests from older pools",
        )

    # -- pool maintenance ----------------------------------------------------
    def close_pool(self, bound: float) -> None:
        self.control.call(lambda: self.engine.dispose(), bound)

    def check_pool(self, bound: float) -> None:
        """QueuePool has no maintenance call: its check is the pre-ping at checkout."""

    def settle_control(self, timeout: float) -> bool:
        return self.control.settle(timeout)

    def stats(self) -> dict[str, int]:
        """QueuePool's counters under psycopg_pool's names (what the machines read)."""
        pool = self.engine.pool
        idle = pool.checkedin()  # type: ignore[attr-defined]
        return {
            "pool_min": 0,
            "pool_max": pool.size(),  # type: ignore[attr-defined]
            "pool_size": idle + pool.checkedout(),  # type: ignore[attr-defined]
            "pool_available": idle,
        }

    # -- expectations ----------------------------------------------------------
    def expected_fingerprint(self, settings: SettingsValue) -> Any:
        """The first connection of a fresh engine for ``settings``, straight to the server."""
        engine = make_engine(
            host=self.server.host,
            port=self.server.port,
            server=self.server,
            options=self.options,
            settings=settings,
            application_name=f"{self.application_name}-expected",
        )
        try:
            with engine.connect() as conn:
                return session_fingerprint(conn.connection.dbapi_connection)  # type: ignore[arg-type]
        finally:
            engine.dispose()

    # -- cleanup ---------------------------------------------------------------
    def close(self) -> None:
        held = [s.dbapi for s in self._held() if s.dbapi is not None]
        for request in self.requests:
            with contextlib.suppress(Exception):
                request.thread.stop(0.0)
        pools = [*self.pools, *(engine.pool for engine in self.engines)]
        for pool in pools:
            with contextlib.suppress(StepTimeout, Exception):
                self.control.call(pool.dispose, 5.0)
        self.control.stop(1.0)
        for dbapi in held:  # a request that never gave its connection back (stuck)
            with contextlib.suppress(Exception):
                dbapi.close()  # type: ignore[union-attr]
