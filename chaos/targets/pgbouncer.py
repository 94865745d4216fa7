"""PgBouncer as a machine target: a non-pooled app, one psycopg connection per request.

``pgbouncer-session``, ``pgbouncer-transaction``, ``pgbouncer-statement``: the
application has no pool of its own (Django's ``CONN_MAX_AGE = 0``, a script, a
serverless function): each simulated request opens a psycopg connection to
PgBouncer, configures it (``SET TIME ZONE``: "UTC" when ``use_tz``, as Django;
``SET ROLE`` when a role is configured, as a user with no role setting does;
the ``configure_override`` statement), uses it and closes it. Everything a
session carries from one request to the next is then PgBouncer's doing: which
server connection it links the next client to, and what its
``server_reset_query`` (``DISCARD ALL``, run in session mode only unless
``server_reset_query_always``) cleaned.

The target starts a PgBouncer of its own (:class:`chaos.pgbouncer.PgBouncer`,
in the target's ``pool_mode``) pointing at ``host``/``port`` (the server, or
the fault proxy in front of it: faults on the server hop), and stops it in
:meth:`close`; so the target contract stays ``cls(server=, host=, port=,
options=)``. The app's pool options map to PgBouncer's as a user would map
them: ``max_size`` -> ``default_pool_size``, ``timeout`` ->
``query_wait_timeout`` (PgBouncer's "pool timeout": a client waiting for a
server connection), ``max_lifetime`` -> ``server_lifetime``, ``max_idle`` ->
``server_idle_timeout``; everything else is PgBouncer's default. Connections
are made with psycopg's ``autocommit=True`` (what the machines model) and, in
transaction and statement mode, ``prepare_threshold=None`` (psycopg never
prepares: PgBouncer 1.18 does not track prepared statements); a
``TargetOptions.prepare_threshold`` in those modes is refused
(:class:`UnsupportedOption`), as are ``variant``, ``user_check`` and
``server_side_binding``.

The contract (chaos.targets.base): ``checkout()`` connects and configures, then
fingerprints before anything else runs; the backend identity is the SERVER
session the fingerprint ran on (``pg_backend_pid()`` and its ``backend_start``,
read after the fingerprint): PgBouncer hands the client a pid of its own, and
what leaks is carried by the server session. ``age`` is that session's age.
``pool_id`` is None (the app has no pool). In session mode ``give_back`` waits
(at most 1 s) until PgBouncer has reset the server session the client left
(:meth:`PgBouncerTarget.await_reset`): the next step meets a settled pooler.
``expected_fingerprint`` is a fresh client through the same PgBouncer to a
database alias of its own whose server connections are dropped first
(``KILL``): a fresh server session,
configured by this target. ``close_pool`` and ``check_pool`` do nothing (no app
pool); ``session_capacity`` is PgBouncer's ``default_pool_size`` (+1 for the
expected alias).

Statement mode: PgBouncer refuses multi-statement transactions ("transaction
blocks not allowed in statement pooling mode") and closes the client, so
``Session.begin`` raises :class:`UnsupportedOption` there (a probe that needs a
transaction is then ``na``; in a machine the judge reports the refusal).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from chaos.faults.connect import CHAOS_TIMEOUTS
from chaos.fingerprint import session_fingerprint
from chaos.machines.model import Backend, SettingsValue
from chaos.pgbouncer import LOGIN_ROLE, PgBouncer, unavailable
from chaos.targets._common import apply_client_attr, refuse_broken, unique_application_name
from chaos.targets.base import (
    CheckoutResult,
    ConnectionClient,
    ControlThreads,
    Session,
    SessionCapacity,
    Target,
    TargetOptions,
    TargetRequest,
    ThreadClients,
    ThreadedTarget,
)
from chaos.targets.plain_pool import OVERRIDE_SQL, PlainPoolTarget, settings_dict
from chaos.targets.psycopg_pool import PsycopgPoolTarget
from chaos.targets.registry import UnsupportedOption
from plain_pool import DatabaseWrapper

#: The database alias the expected fingerprint uses (its own pool, killed before use).
EXPECTED_DB = "chaos_expected"
_numbers = itertools.count(1)


def session_zone(settings: SettingsValue) -> str:
    return "UTC" if settings.use_tz else settings.time_zone


class PgBouncerSession(Session):
    """One request: a client connection to PgBouncer, opened at checkout, closed at give_back."""

    def __init__(self, target: PgBouncerTarget) -> None:
        self.target = target
        self.conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self.conn is None:
            self.conn = self.target.connect(self.target.settings)
        return self.conn

    def checkout(self) -> CheckoutResult:
        conn = self._connection()
        refuse_broken(conn)
        fingerprint = session_fingerprint(conn)
        backend, age = self.target.server_session(conn, fingerprint.backend_pid)
        return CheckoutResult(fingerprint, backend, age, None)

    def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> list[tuple]:
        with self._connection().cursor() as cur:
            cur.execute(sql, params, prepare=prepare)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []

    def set_client_attr(self, name: str, value: Any) -> None:
        conn = self._connection()
        apply_client_attr(conn, name, value)

    def begin(self, how: str) -> None:
        if self.target.pool_mode == "statement":
            raise UnsupportedOption(
                self.target.name,
                "transactions",
                "statement mode forbids multi-statement transactions (PgBouncer answers "
                "BEGIN with 'transaction blocks not allowed in statement pooling mode')",
            )
        conn = self._connection()
        if how == "autocommit_off":
            conn.autocommit = False
        elif conn.info.transaction_status == TransactionStatus.IDLE:
            conn.execute("BEGIN", prepare=False)

    def ensure_timezone(self) -> None:
        """A settings change seen from this request: the connection it holds gets the zone
        (as Django's ensure_timezone); the next request's connection is configured anew."""
        if self.conn is not None and not self.conn.closed:
            zone = session_zone(self.target.settings)
            self.conn.execute(sql.SQL("SET TIME ZONE {}").format(sql.Literal(zone)))

    def give_back(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
            self.target.await_reset()

    def finish(self) -> None:
        self.give_back()

    def holds_connection(self) -> bool:
        return self.conn is not None


class PgBouncerTarget(ThreadedTarget[ConnectionClient]):
    """A non-pooled app through PgBouncer in ``pool_mode`` (see the module docstring)."""

    pool_mode: ClassVar[str] = "session"

    @classmethod
    def unavailable(cls) -> str | None:
        return unavailable()

    @property
    def name(self) -> str:
        return f"pgbouncer-{self.pool_mode}"

    def __init__(self, *, server: Any, host: str, port: int, options: TargetOptions) -> None:
        for option in ("variant", "user_check"):
            if getattr(options, option) is not None:
                raise UnsupportedOption(self.name, option, "no app pool: nothing to plug it into")
        if options.server_side_binding:
            raise UnsupportedOption(self.name, "server_side_binding", "psycopg's default already")
        if self.pool_mode != "session" and options.prepare_threshold is not None:
            raise UnsupportedOption(
                self.name,
                "prepare_threshold",
                "PgBouncer 1.18 does not track prepared statements in transaction/statement mode",
            )
        self.server = server
        self.options = options
        self.settings = SettingsValue()
        self.number = next(_numbers)
        self.application_name = unique_application_name(f"pgb{self.pool_mode[:4]}{self.number}")
        self.bouncer = _start_bouncer(server, host, port, options, pool_mode=self.pool_mode)
        self.client_address = _client_address(self.bouncer, options)
        self.requests: list[TargetRequest] = []
        self.control = ControlThreads(f"{self.application_name}-control")
        self.clients = ThreadClients(lambda: ConnectionClient(self._lend))
        self._expected_lock = threading.Lock()
        self.cache_key = (
            getattr(server, "host", None),
            getattr(server, "port", None),
            self.pool_mode,
            # PgBouncer SETs each client's application_name on the server session it links
            # (source "session"): a fresh session shows this target's name too.
            self.application_name,
            options.prepare_threshold,
            options.configure_override,
        )
        self.description = (
            f"PgBouncer {self.bouncer.version} pool_mode={self.pool_mode} "
            f"(default_pool_size {options.max_size}, server_reset_query DISCARD ALL), "
            "a psycopg connection per request"
        )

    @staticmethod
    def _bouncer_settings(options: TargetOptions) -> dict[str, Any]:
        # PgBouncer's time settings take fractions of a second.
        return {
            "query_wait_timeout": f"{options.timeout:g}",
            "server_lifetime": f"{options.max_lifetime:g}",
            "server_idle_timeout": f"{options.max_idle:g}",
        }

    # -- connections -----------------------------------------------------------------------
    def _kwargs(self, *, dbname: str | None = None, application_name: str | None) -> dict:
        kwargs: dict[str, Any] = {**CHAOS_TIMEOUTS.connect_kwargs(), "autocommit": True}
        kwargs.pop("options", None)  # PgBouncer 1.18 ignores it: the role has the timeout
        for key, value in (self.options.connect_options or {}).items():
            if value is None:
                kwargs.pop(key, None)
            else:
                kwargs[key] = value
        if application_name:
            kwargs["application_name"] = application_name
        if self.pool_mode == "session":
            if self.options.prepare_threshold is not None:
                kwargs["prepare_threshold"] = self.options.prepare_threshold
        else:
            kwargs["prepare_threshold"] = None
        host, port = self.client_address
        if dbname:
            kwargs["dbname"] = dbname
        return self.bouncer.connect_kwargs(host=host, port=port, **kwargs)

    def connect(self, settings: SettingsValue, *, dbname: str | None = None) -> psycopg.Connection:
        """A new client connection to PgBouncer, configured for ``settings``."""
        conn = psycopg.connect(
            **self._kwargs(dbname=dbname, application_name=self.application_name)
        )
        try:
            conn.execute(sql.SQL("SET TIME ZONE {}").format(sql.Literal(session_zone(settings))))
            if settings.role:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(settings.role)))
            if self.options.configure_override:
                conn.execute(OVERRIDE_SQL)
        except BaseException:
            conn.close()
            raise
        return conn

    def server_session(self, conn: psycopg.Connection, pid: int | None) -> tuple[Backend, float]:
        """The server session ``pid`` (the fingerprint's): identity and age (server clock)."""
        if pid is None:
            return Backend(conn.info.backend_pid, 0.0), 0.0
        with self.server.connect() as admin:
            row = admin.execute(
                "SELECT backend_start FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
        started = row[0].timestamp() if row and row[0] is not None else time.time()
        return Backend(pid, round(started, 6)), max(0.0, time.time() - started)

    def await_reset(self, bound: float = 1.0) -> None:
        """Session mode: wait (bounded) until PgBouncer has run ``server_reset_query`` on the
        server session a client gave up (``sv_tested`` back to 0).

        PgBouncer resets it asynchronously, milliseconds after the client left; without
        the wait, a fault applied right after a request decides by timing whether it hits
        an idle server session or the reset in flight, and the matrix cell with it.
        """
        if self.pool_mode != "session":
            return
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            try:
                pools = self.bouncer.show("pools")
            except psycopg.Error:
                return
            mine = [p for p in pools if p["database"] == self.bouncer.dbname]
            if not any(p["sv_tested"] for p in mine):
                return
            time.sleep(0.01)

    # -- requests --------------------------------------------------------------------------
    def open_request(self, number: int) -> TargetRequest:
        request = TargetRequest(number, lambda: PgBouncerSession(self))
        self.requests.append(request)
        return request

    def change_settings(
        self, settings: SettingsValue, via: TargetRequest | None, bound: float
    ) -> None:
        self.settings = settings
        if via is not None:
            via.run(lambda s: s.ensure_timezone(), bound)

    def current_pool_id(self) -> int | None:
        return None

    def close_pool(self, bound: float) -> None:
        """No app pool to close."""

    def check_pool(self, bound: float) -> None:
        """No app pool to check."""

    def settle_control(self, timeout: float) -> bool:
        return self.control.settle(timeout)

    def stats(self) -> dict[str, int]:
        return {}

    def session_capacity(self) -> SessionCapacity:
        size = self.bouncer.pool_size
        return SessionCapacity(
            size + 1, f"PgBouncer default_pool_size {size} + 1 for the expected-fingerprint alias"
        )

    # -- expectations ----------------------------------------------------------------------
    def expected_fingerprint(self, settings: SettingsValue) -> Any:
        with self._expected_lock:
            self.bouncer.kill(EXPECTED_DB)  # a fresh server session; KILL pauses the db
            self.bouncer.resume(EXPECTED_DB)
            with self.connect(settings, dbname=EXPECTED_DB) as conn:
                return session_fingerprint(conn)

    # -- scenarios -------------------------------------------------------------------------
    def _lend(self) -> tuple[psycopg.Connection, Callable[[psycopg.Connection], None]]:
        return self.connect(self.settings), psycopg.Connection.close

    # -- cleanup ---------------------------------------------------------------------------
    def close(self) -> None:
        self.stop_requests()
        self.close_session_connections()
        self.control.stop(1.0)
        self.bouncer.close()


class PgBouncerSessionTarget(PgBouncerTarget):
    pool_mode = "session"


class PgBouncerTransactionTarget(PgBouncerTarget):
    pool_mode = "transaction"


class PgBouncerStatementTarget(PgBouncerTarget):
    pool_mode = "statement"


# -- an app pool in front of PgBouncer transaction mode ---------------------------------------
#
# What the seed articles advise at scale: a small pool per process in front of PgBouncer in
# transaction mode, prepared statements off (``prepare_threshold=None``; plain_pool's default,
# and set for psycopg_pool) and no server-side cursors (the machines open none but the
# ``WITH HOLD`` dirt). The app pool is the real one (psycopg_pool's / plain_pool's target,
# unchanged) pointed at a PgBouncer the target starts, as the PgBouncer targets do.


def _start_bouncer(
    server: Any, host: str, port: int, options: TargetOptions, *, pool_mode: str
) -> PgBouncer:
    """A PgBouncer in ``pool_mode`` in front of ``host``/``port``, the app's pool options
    mapped to its own (module docstring), with the expected-fingerprint alias."""
    bouncer = PgBouncer(
        server,
        pool_mode=pool_mode,
        server_host=host,
        server_port=port,
        pool_size=options.max_size,
        settings=PgBouncerTarget._bouncer_settings(options),
        aliases={EXPECTED_DB: getattr(server, "dbname", "postgres")},
    )
    bouncer.start()
    return bouncer


def _client_address(bouncer: PgBouncer, options: TargetOptions) -> tuple[str, int]:
    """Where the app connects: PgBouncer, or the fault proxy the run put in front of it."""
    if options.client_hop is None:
        return bouncer.host, int(bouncer.port)
    return options.client_hop(bouncer.host, int(bouncer.port))


def _refuse_prepared(name: str, options: TargetOptions) -> None:
    if options.prepare_threshold is not None:
        raise UnsupportedOption(
            name,
            "prepare_threshold",
            "prepared statements are off in front of PgBouncer transaction mode",
        )


class TransactionBouncerFront(Target):
    """The hybrids' shared part, mixed in before the app pool's target: start a
    transaction-mode PgBouncer, build the app pool's target pointed at it (or at the
    client-hop proxy), close both; the bouncer is closed if the app target fails to build."""

    bouncer: PgBouncer

    @classmethod
    def unavailable(cls) -> str | None:
        return unavailable()

    def __init__(self, *, server: Any, host: str, port: int, options: TargetOptions) -> None:
        self.bouncer = _start_bouncer(server, host, port, options, pool_mode="transaction")
        try:
            client_host, client_port = _client_address(self.bouncer, options)
            super().__init__(  # type: ignore[call-arg]  # the app pool's target, by the MRO
                server=server, host=client_host, port=client_port, options=options
            )
        except BaseException:
            self.bouncer.close()
            raise
        self.cache_key = ("hybrid", self.cache_key, self.application_name)
        self.description = (
            f"{self.description} -> PgBouncer {self.bouncer.version} pool_mode=transaction"
        )

    def close(self) -> None:
        try:
            super().close()  # type: ignore[safe-super]  # the app pool's target, by the MRO
        finally:
            self.bouncer.close()


class HybridPsycopgPoolTarget(TransactionBouncerFront, PsycopgPoolTarget):
    """Bare psycopg_pool (getconn/putconn, configure, check) in front of PgBouncer
    transaction mode; connections log in as the PgBouncer role (scram-sha-256)."""

    def __init__(self, *, server: Any, host: str, port: int, options: TargetOptions) -> None:
        _refuse_prepared("hybrid-psycopg_pool", options)
        super().__init__(server=server, host=host, port=port, options=options)

    def _conninfo(self, host: str, port: int, dbname: str | None = None) -> str:
        return make_conninfo(
            host=host, port=port, user=LOGIN_ROLE, dbname=dbname or self.bouncer.dbname
        )

    def _kwargs(self, *, application_name: str | None) -> dict[str, Any]:
        kwargs = super()._kwargs(application_name=application_name)
        kwargs.pop("options", None)  # PgBouncer 1.18 ignores it: the role has the timeout
        kwargs["prepare_threshold"] = None
        kwargs["password"] = self.bouncer.connect_kwargs()["password"]
        return kwargs

    def expected_fingerprint(self, settings: SettingsValue) -> Any:
        """A fresh pool of one through PgBouncer's alias (its server sessions killed
        first), same configure and kwargs, this target's application_name (PgBouncer
        SETs it on the server session)."""
        self.bouncer.kill(EXPECTED_DB)
        self.bouncer.resume(EXPECTED_DB)
        return self._fingerprint_pool_of_one(
            settings, conninfo=self._conninfo(self.bouncer.host, self.bouncer.port, EXPECTED_DB)
        )


def _through(d: dict[str, Any], bouncer: PgBouncer) -> dict[str, Any]:
    options = {k: v for k, v in d["POSTGRES_OPTIONS"].items() if k != "options"}
    return {
        **d,
        "POSTGRES_USER": LOGIN_ROLE,
        "POSTGRES_PASSWORD": bouncer.connect_kwargs()["password"],
        "POSTGRES_OPTIONS": options,
    }


class HybridPlainPoolTarget(TransactionBouncerFront, PlainPoolTarget):
    """plain_pool (reset on return, configure on every checkout) in front of PgBouncer
    transaction mode; connections log in as the PgBouncer role (scram-sha-256)."""

    def __init__(self, *, server: Any, host: str, port: int, options: TargetOptions) -> None:
        _refuse_prepared("hybrid-plain_pool", options)
        if options.variant is not None or options.configure_override:
            raise UnsupportedOption(
                "hybrid-plain_pool", "variant", "plain_pool's own canaries run on plain_pool"
            )
        super().__init__(server=server, host=host, port=port, options=options)

    def _settings_dict(self, settings: SettingsValue, *, pooled: bool = True) -> dict:
        return _through(super()._settings_dict(settings, pooled=pooled), self.bouncer)

    def expected_fingerprint(self, settings: SettingsValue) -> Any:
        """A fresh unpooled wrapper through PgBouncer's alias (server sessions killed
        first), this target's application_name (PgBouncer SETs it on the session)."""
        self.bouncer.kill(EXPECTED_DB)
        self.bouncer.resume(EXPECTED_DB)
        direct = settings_dict(
            self.bouncer.host,
            self.bouncer.port,
            self.server,
            self.options,
            settings,
            pooled=False,
            application_name=self.application_name,
        )
        direct = {**_through(direct, self.bouncer), "POSTGRES_DATABASE": EXPECTED_DB}
        db = DatabaseWrapper(direct, alias=f"{self.alias}-expected")
        try:
            return session_fingerprint(db.ensure_connection())
        finally:
            db.close()
