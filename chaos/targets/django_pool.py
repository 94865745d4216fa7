"""Django's real ``django.db.backends.postgresql`` backend as machine targets.

- :class:`DjangoPoolTarget` (``django``): ``OPTIONS={"pool": {...}}``, Django's native
  psycopg_pool (5.1+), ``CONN_MAX_AGE = 0`` (the pool requires it);
- :class:`DjangoPersistentTarget` (``django-persistent``): the same backend without a
  pool, ``CONN_MAX_AGE = TargetOptions.max_lifetime`` (a persistent connection per
  thread) and ``CONN_HEALTH_CHECKS``.

Django is configured once per process (``settings.configure`` + ``django.setup()``
when nothing configured it yet); each target adds a database alias of its own
(``chaos_django<N>``) to ``connections.settings`` (which IS ``settings.DATABASES``)
at runtime and removes it in :meth:`close`, so two targets never share Django's
per-alias pool registry (``DatabaseWrapper._connection_pools``). Nothing of Django
is patched or subclassed.

Driven the way Django drives a request (``django.core.handlers``), each simulated
request in a thread of its own (Django's connections are thread-local):

- request start: ``request_started`` (``close_old_connections``);
- checkout: ``connections[alias].cursor()`` - what application code's first query
  does: the per-request health check (``CONN_HEALTH_CHECKS``, persistent only: "the
  pool only returns healthy connections"), then ``ensure_connection()`` (pooled:
  ``pool.getconn()``, then ``set_autocommit(True)``). The psycopg connection
  (``connection.connection``) is fingerprinted before anything else runs on it,
  inside Django's ``wrap_database_errors`` as any query through Django's cursor, so
  an error there is Django's (``django.db.utils.*``, ``errors_occurred`` set);
- SQL: through Django's cursor (the raw psycopg cursor only when ``prepare=True`` is
  asked for, still inside ``wrap_database_errors``);
- give back: pooled, ``connection.close()`` (``putconn``; the request goes on).
  Persistent: without a pool ``close()`` really closes, so a persistent connection
  goes back by ending the request: ``request_finished`` (``close_old_connections``
  keeps it unless obsolete or unusable) and the next checkout in that thread is the
  thread's next request (``request_started`` again). A leak with ``CONN_MAX_AGE`` is
  one request's state seen by the same thread's next request;
- finish: ``request_finished``; then the thread ends, and what it still holds is
  closed (``connection.close()``: the pool gets it back; a persistent one is closed,
  as it would be when a dead thread's connection is garbage collected).

Client attributes (``Session.set_client_attr``) are set on the psycopg connection,
except ``autocommit``, which goes through Django's ``set_autocommit()`` (what the
wrapper believes, as plain_pool's session does). The fault scenarios get the same
request cycle through :class:`DjangoClient` (``thread_client()``).

Known blind spot: the fingerprint's ``adapters`` field names the adapter maps a
connection copied from psycopg's global ones; Django gives every connection its own
copy at connect (its adapters context), so a loader a request registers later does not
show (evidence/django/session_state_leaks.py shows that it leaks, by a query).

Settings (``SettingsValue``):

- ``time_zone``/``use_tz`` are Django's global ``TIME_ZONE``/``USE_TZ``, changed the
  way Django changes them at runtime: ``override_settings`` sets them and sends
  ``setting_changed``, whose receiver (``django.test.signals``, imported here as a
  test run imports it) drops the cached zone of the CURRENT thread's connections and
  calls ``ensure_timezone()`` on them (closing the pool). The per-alias
  ``DATABASES[alias]["TIME_ZONE"]`` is not used: it is the zone naive datetimes are
  stored in, only allowed with ``USE_TZ = True`` (``check_settings``), and with
  ``USE_TZ = False`` the session zone is the global ``TIME_ZONE`` anyway; the machine's
  settings are the global pair, as plain_pool's. Being global, the zone is shared by
  every Django target of the process: drive one at a time.
- ``role`` is ``OPTIONS["assume_role"]``, set in the alias's settings dict (shared by
  every thread's wrapper) before the zone change; Django has no runtime path for it
  (``DATABASES`` is a "complex" override setting).

``expected_fingerprint``: a fresh connection made by Django's backend
(``DatabaseWrapper(...).ensure_connection()``, not registered in ``connections``),
same ``OPTIONS`` minus the pool, straight to the server, under
``override_settings(TIME_ZONE=..., USE_TZ=...)`` in a thread of its own (no
connection of that thread is touched by the receiver).

``age`` is measured on the client's monotonic clock from the first time this
module saw the psycopg connection (Django stamps none); ``pool_id`` is the id of
the pool that lent it (``conn._pool``, which Django's own ``_close`` reads), None
without a pool. ``connect_options`` go into ``OPTIONS`` over the harness's chaos-safe
libpq timeouts, ``reconnect_failed`` into the pool options. Options that cannot be
honoured raise
:class:`~chaos.targets.registry.UnsupportedOption`: ``variant`` and
``configure_override`` (plain_pool's), and ``user_check`` (Django ticket #37075: a
``check`` in the pool options raises ``TypeError``; without a pool there is no check).
Errors are Django's own (``django.db.utils.*`` wrapping psycopg's): never unwrapped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
import weakref
from typing import Any, ClassVar

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
    TargetOptions,
    TargetRequest,
    ThreadClients,
    ThreadedTarget,
)
from chaos.targets.registry import TargetUnavailable, UnsupportedOption

#: Django's first release with ``OPTIONS["pool"]``.
MIN_DJANGO = (5, 1)
ENGINE = "django.db.backends.postgresql"

_aliases = itertools.count(1)
_configure_lock = threading.Lock()
#: Serialises changes of Django's global TIME_ZONE / USE_TZ (one target's change, or an
#: expected fingerprint's temporary override).
_settings_lock = threading.RLock()
#: First time a psycopg connection was seen (Django stamps none): the age's origin.
_first_seen: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()


def django_unavailable() -> str | None:
    """Why Django's pooled backend cannot run here, or None."""
    try:
        import django
    except ImportError:
        return "Django is not installed (pip install 'plain-pool[matrix]')"
    if django.VERSION[:2] < MIN_DJANGO:
        return f"Django {django.get_version()} has no OPTIONS['pool'] (needs >= 5.1)"
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg_pool is not installed (Django's pool needs psycopg[pool])"
    return None


def django_version() -> str:
    import django

    return django.get_version()


def configure_django() -> None:
    """``settings.configure`` + ``django.setup()`` once per process, unless done already.

    Also imports ``django.test.signals``: its ``setting_changed`` receiver is how a
    runtime ``TIME_ZONE``/``USE_TZ`` change reaches the connections (test runs import it).
    """
    import django
    from django.conf import settings

    with _configure_lock:
        if not settings.configured:
            settings.configure(
                DEBUG=False,
                DATABASES={},
                INSTALLED_APPS=[],
                TIME_ZONE="UTC",
                USE_TZ=True,
            )
            django.setup()
        import django.test.signals  # the setting_changed receivers


def with_defaults(alias: str, database: dict[str, Any]) -> dict[str, Any]:
    """``database`` with Django's defaults filled in (``ConnectionHandler.configure_settings``)."""
    from django.db import DEFAULT_DB_ALIAS, connections

    return connections.configure_settings({DEFAULT_DB_ALIAS: {}, alias: database})[alias]


def add_alias(alias: str, database: dict[str, Any]) -> dict[str, Any]:
    """Add ``alias`` to ``connections.settings`` (``settings.DATABASES``) at runtime."""
    from django.db import connections

    filled = with_defaults(alias, database)
    connections.settings[alias] = filled
    return filled


def remove_alias(alias: str) -> None:
    from django.db import connections

    connections.settings.pop(alias, None)


def change_global_settings(time_zone: str, use_tz: bool) -> None:
    """What ``override_settings(TIME_ZONE=..., USE_TZ=...).enable()`` does, in this thread:
    set them, then send ``setting_changed`` for each (Django's receiver refreshes and
    ``ensure_timezone()``s this thread's connections only). Without its holder stack:
    a machine changes settings hundreds of times and never restores them."""
    from django.conf import settings
    from django.core.signals import setting_changed

    with _settings_lock:
        settings.TIME_ZONE = time_zone
        settings.USE_TZ = use_tz
        sender = type(settings._wrapped)
        for key, value in (("TIME_ZONE", time_zone), ("USE_TZ", use_tz)):
            setting_changed.send(sender=sender, setting=key, value=value, enter=True)


def _in_fresh_thread(fn: Any, timeout: float = 30.0) -> Any:
    """Run ``fn`` in a new thread (no Django connection of it initialised); return its result."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, name="django-expected", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no fresh connection within {timeout}s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _backend(conn: psycopg.Connection) -> tuple[Backend, float]:
    seen = _first_seen.setdefault(conn, time.monotonic())
    return Backend(conn.info.backend_pid, round(seen, 6)), time.monotonic() - seen


class DjangoSession(Session):
    """One thread's requests through ``connections[alias]`` (that thread's wrapper)."""

    def __init__(self, alias: str, *, pooled: bool, prepare_threshold: int | None) -> None:
        from django.db import connections

        self.alias = alias
        self.pooled = pooled
        self.prepare_threshold = prepare_threshold
        #: This thread's wrapper, for the target to look at between calls (from the
        #: machine's thread ``connections[alias]`` is another wrapper).
        self.wrapper = connections[alias]
        self.in_request = False
        self._start_request()

    @property
    def db(self) -> Any:
        from django.db import connections

        return connections[self.alias]

    def _start_request(self) -> None:
        from django.core.signals import request_started

        request_started.send(sender=DjangoSession, environ={})
        self.in_request = True

    def _finish_request(self) -> None:
        from django.core.signals import request_finished

        self.in_request = False
        request_finished.send(sender=DjangoSession)

    def checkout(self) -> CheckoutResult:
        if not self.in_request:
            self._start_request()  # this thread's next request (persistent connections)
        db = self.db
        with db.cursor():
            pass  # the health check (persistent), then connect() / pool.getconn()
        conn = db.connection
        if conn.closed or conn.info.transaction_status == TransactionStatus.UNKNOWN:
            # libpq already knows this session is gone: a dead handout, not a leak.
            with db.wrap_database_errors:
                raise psycopg.OperationalError(
                    f"the checkout handed out a broken connection ({conn.pgconn.status.name})"
                )
        with db.wrap_database_errors:
            fingerprint = session_fingerprint(conn)
        backend, age = _backend(conn)
        pool = getattr(conn, "_pool", None)
        return CheckoutResult(fingerprint, backend, age, id(pool) if pool is not None else None)

    def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> list[tuple]:
        db = self.db
        raw = prepare is True or (prepare is False and self.prepare_threshold is not None)
        with db.cursor() as cur:
            if raw:  # Django's cursor takes no ``prepare``: psycopg's, with Django's errors
                with db.wrap_database_errors:
                    cur.cursor.execute(sql, params, prepare=prepare)
            else:
                cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description is not None else []

    def set_client_attr(self, name: str, value: Any) -> None:
        db = self.db
        db.ensure_connection()
        if name == "autocommit":
            db.set_autocommit(value)
            return
        conn = db.connection
        apply_client_attr(conn, name, value)

    def begin(self, how: str) -> None:
        db = self.db
        if how == "autocommit_off":
            db.set_autocommit(False)
        else:
            db.ensure_connection()
            if db.connection.info.transaction_status == TransactionStatus.IDLE:
                with db.cursor() as cur:
                    cur.execute("BEGIN")

    def ensure_timezone(self) -> None:
        """What Django's ``setting_changed`` receiver does for this connection."""
        db = self.db
        for cached in ("timezone", "timezone_name"):
            with contextlib.suppress(AttributeError):
                delattr(db, cached)
        db.ensure_timezone()

    def apply_settings(self, settings: SettingsValue) -> None:
        """A TIME_ZONE / USE_TZ change made from this thread (``setting_changed`` here)."""
        change_global_settings(settings.time_zone, settings.use_tz)

    def give_back(self) -> None:
        if self.pooled:
            self.db.close()
        elif self.in_request:
            self._finish_request()

    def finish(self) -> None:
        try:
            if self.in_request:
                self._finish_request()
        finally:
            # The thread ends here: what it still holds goes back (pool) or is closed.
            self.db.close()

    def holds_connection(self) -> bool:
        if not self.pooled and not self.in_request:
            return False
        return self.db.connection is not None


class DjangoClient:
    """A fault scenario's client in one thread (:class:`chaos.targets.base.Client`):
    ``connections[alias]`` of that thread, used as a request uses it. The first call after
    :meth:`close` starts a request (``request_started``); ``ensure_connection()`` is the
    request's first ``cursor()`` (the health check, then connect / ``getconn``);
    ``atomic()`` is ``transaction.atomic(using=alias)``; :meth:`close` ends the request
    (``request_finished``: pooled, the connection goes back; persistent, it stays unless
    obsolete, unusable or with autocommit changed). Called from another thread (the
    scenario is over), :meth:`close` closes the wrapper with Django's thread sharing on."""

    def __init__(self, alias: str) -> None:
        from django.db import connections

        self.alias = alias
        self.db = connections[alias]
        self.owner = threading.get_ident()
        self.in_request = False

    @property
    def connection(self) -> Any:
        return self.db.connection

    def _request(self) -> None:
        if not self.in_request:
            from django.core.signals import request_started

            request_started.send(sender=DjangoClient, environ={})
            self.in_request = True

    def ensure_connection(self) -> Any:
        self._request()
        with self.db.cursor():
            pass
        return self.db.connection

    def cursor(self) -> Any:
        self._request()
        return self.db.cursor()

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        from django.db import transaction

        self._request()
        return transaction.atomic(using=self.alias)

    def set_autocommit(self, autocommit: bool) -> None:
        self._request()
        self.db.set_autocommit(autocommit)

    def close(self) -> None:
        if threading.get_ident() != self.owner:
            self.db.inc_thread_sharing()
            try:
                self.db.close()
            finally:
                self.db.dec_thread_sharing()
            return
        if self.in_request:
            from django.core.signals import request_finished

            self.in_request = False
            request_finished.send(sender=DjangoClient)


class DjangoTarget(ThreadedTarget[DjangoClient]):
    """Django's postgresql backend for one alias; see the module docstring."""

    #: With OPTIONS["pool"] (else persistent connections, CONN_MAX_AGE > 0).
    pooled: ClassVar[bool] = True
    name: ClassVar[str] = "django"

    @classmethod
    def unavailable(cls) -> str | None:
        return django_unavailable()

    def __init__(
        self,
        *,
        server: Any,
        host: str,
        port: int,
        options: TargetOptions,
        settings: SettingsValue | None = None,
    ) -> None:
        reason = self.unavailable()
        if reason:
            raise TargetUnavailable(f"{self.name}: {reason}")
        if options.variant is not None:
            raise UnsupportedOption(self.name, "variant", "plain_pool's broken variants only")
        if options.configure_override:
            raise UnsupportedOption(
                self.name, "configure_override", "Django's configuration hook is not overridable"
            )
        if options.user_check is not None:
            why = (
                "Django passes its own check= to ConnectionPool, so a 'check' in the pool "
                "options raises TypeError (Django ticket #37075)"
                if self.pooled
                else "no pool, no check"
            )
            raise UnsupportedOption(self.name, "user_check", why)
        configure_django()
        self.server = server
        self.options = options
        self.host, self.port = host, port
        self.alias = f"chaos_django{next(_aliases)}"
        # Unique per target across xdist workers sharing a server (aliases repeat there).
        self.application_name = f"{self.alias}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.settings = settings or SettingsValue()
        self.database = add_alias(self.alias, self._database(self.settings))
        self.control = ControlThreads(f"{self.alias}-control")
        self.requests: list[TargetRequest] = []
        #: The scenarios' per-thread clients: that thread's wrapper, used as a request does.
        self.clients = ThreadClients(self._make_client)
        self._clients: list[DjangoClient] = []
        self.cache_key = (
            getattr(server, "host", None),
            getattr(server, "port", None),
            self.pooled,
            options.prepare_threshold,
            options.server_side_binding,
            tuple(sorted((options.connect_options or {}).items())),
        )
        kind = (
            f"pool {options.min_size}..{options.max_size}, max_lifetime {options.max_lifetime}s"
            if self.pooled
            else f"CONN_MAX_AGE {options.max_lifetime}s"
        )
        self.description = (
            f"Django {django_version()} {ENGINE} (alias {self.alias}, {kind}, "
            f"CONN_HEALTH_CHECKS {options.health_checks})"
        )
        self.control.call(lambda: change_global_settings(*self._zone(self.settings)), 30.0)

    @staticmethod
    def _zone(settings: SettingsValue) -> tuple[str, bool]:
        return settings.time_zone, settings.use_tz

    def _database(
        self,
        settings: SettingsValue,
        *,
        pooled: bool | None = None,
        host: str | None = None,
        port: int | None = None,
        application_name: str | None = None,
    ) -> dict[str, Any]:
        """DATABASES[alias] for these settings (chaos-safe libpq timeouts in OPTIONS)."""
        pooled = self.pooled if pooled is None else pooled
        opts: dict[str, Any] = dict(CHAOS_TIMEOUTS.connect_kwargs())
        for key, value in (self.options.connect_options or {}).items():
            if value is None:
                opts.pop(key, None)  # the scenario removes a harness default
            else:
                opts[key] = value
        opts["application_name"] = application_name or self.application_name
        if settings.role:
            opts["assume_role"] = settings.role
        if self.options.prepare_threshold is not None:
            opts["prepare_threshold"] = self.options.prepare_threshold
        if self.options.server_side_binding:
            opts["server_side_binding"] = True
        if pooled:
            opts["pool"] = {
                "min_size": self.options.min_size,
                "max_size": self.options.max_size,
                "timeout": self.options.timeout,
                "max_lifetime": self.options.max_lifetime,
                "max_idle": self.options.max_idle,
                "reconnect_timeout": self.options.reconnect_timeout,
            }
            if self.options.reconnect_failed is not None:
                opts["pool"]["reconnect_failed"] = self.options.reconnect_failed
        return {
            "ENGINE": ENGINE,
            "NAME": getattr(self.server, "dbname", "postgres"),
            "USER": getattr(self.server, "superuser", "postgres"),
            "HOST": host or self.host,
            "PORT": port or self.port,
            "CONN_MAX_AGE": 0 if pooled else self.options.max_lifetime,
            "CONN_HEALTH_CHECKS": self.options.health_checks,
            "OPTIONS": opts,
        }

    # -- requests ------------------------------------------------------------
    def _make_session(self) -> DjangoSession:
        return DjangoSession(
            self.alias, pooled=self.pooled, prepare_threshold=self.options.prepare_threshold
        )

    def open_request(self, number: int) -> TargetRequest:
        request = TargetRequest(number, self._make_session)
        self.requests.append(request)
        return request

    # -- settings ------------------------------------------------------------
    def _set_role(self, role: str | None) -> None:
        opts = self.database["OPTIONS"]  # the dict every thread's wrapper reads
        if role:
            opts["assume_role"] = role
        else:
            opts.pop("assume_role", None)

    def change_settings(
        self, settings: SettingsValue, via: TargetRequest | None, bound: float
    ) -> None:
        self._set_role(settings.role)
        self.settings = settings
        if via is not None:
            via.run(lambda s: s.apply_settings(settings), bound)  # type: ignore[attr-defined]
        else:
            self.control.call(lambda: change_global_settings(*self._zone(settings)), bound)

    # -- the pool --------------------------------------------------------------
    def _pool(self) -> Any:
        """The pool registered for the alias (read without the ``pool`` property, which
        would create one), or None."""
        from django.db.backends.postgresql.base import DatabaseWrapper

        return DatabaseWrapper._connection_pools.get(self.alias)

    def current_pool_id(self) -> int | None:
        pool = self._pool()
        return id(pool) if pool is not None else None

    def close_pool(self, bound: float) -> None:
        """``connection.close_pool()`` from a control thread (no-op without a pool)."""
        if not self.pooled:
            return
        from django.db import connections

        self.control.call(lambda: connections[self.alias].close_pool(), bound)

    def check_pool(self, bound: float) -> None:
        """psycopg_pool's ``check()`` on Django's pool (no-op without a pool)."""

        def check() -> None:
            pool = self._pool()
            if pool is not None and not pool.closed:
                pool.check()

        if self.pooled:
            self.control.call(check, bound)

    def settle_control(self, timeout: float) -> bool:
        return self.control.settle(timeout)

    def stats(self) -> dict[str, int]:
        pool = self._pool()
        if pool is None or pool.closed:
            return {}
        return dict(pool.get_stats())

    def _held(self) -> list[psycopg.Connection]:
        """Open psycopg connections the requests' and the scenario clients' wrappers hold
        (read between steps, or after a scenario's workload)."""
        held = []
        wrappers = [getattr(request.session, "wrapper", None) for request in self.requests]
        wrappers += [client.db for client in list(self._clients)]
        for wrapper in wrappers:
            conn = getattr(wrapper, "connection", None)
            if conn is not None and not conn.closed:
                held.append(conn)
        return held

    def session_capacity(self) -> SessionCapacity:
        """Pooled: the registered open pool's size plus connections requests hold from
        another pool. Persistent: one connection per thread's wrapper holding one (a
        persistent connection stays with its thread between requests, by design)."""
        pool = self._pool()
        live = pool if pool is not None and not pool.closed else None
        size = int(live.get_stats().get("pool_size", 0)) if live is not None else 0
        held = [c for c in self._held() if live is None or getattr(c, "_pool", None) is not live]
        parts = []
        if live is not None:
            parts.append(f"registered pool {id(live):#x} size {size}")
        parts.append(
            f"{len(held)} connection(s) held by requests"
            + (" from other pools" if self.pooled else " (persistent)")
        )
        return SessionCapacity(size + len(held), "; ".join(parts))

    # -- expectations ----------------------------------------------------------
    def expected_fingerprint(self, settings: SettingsValue) -> Any:
        from django.db.utils import load_backend
        from django.test import override_settings

        database = self._database(
            settings,
            pooled=False,
            host=self.server.host,
            port=self.server.port,
            application_name=f"{self.application_name}-expected",
        )
        database["CONN_MAX_AGE"] = 0
        alias = f"{self.alias}_expected"
        filled = with_defaults(alias, database)  # not registered in connections
        backend = load_backend(ENGINE)

        def fresh() -> Any:
            with (
                _settings_lock,
                override_settings(TIME_ZONE=settings.time_zone, USE_TZ=settings.use_tz),
            ):
                db = backend.DatabaseWrapper(filled, alias)
                try:
                    db.ensure_connection()
                    return session_fingerprint(db.connection)
                finally:
                    db.close()

        return _in_fresh_thread(fresh)

    # -- scenarios -------------------------------------------------------------
    def _make_client(self) -> DjangoClient:
        client = DjangoClient(self.alias)
        self._clients.append(client)  # list.append is atomic: clients are made in many threads
        return client

    # -- cleanup ---------------------------------------------------------------
    def close(self) -> None:
        self.stop_requests()
        for conn in self._held():  # a request stuck or never finished: its thread is gone
            with contextlib.suppress(Exception):
                pool = getattr(conn, "_pool", None)
                if pool is not None and not pool.closed:
                    pool.putconn(conn)
                else:
                    conn.close()
        from django.db.backends.postgresql.base import DatabaseWrapper

        pool = DatabaseWrapper._connection_pools.pop(self.alias, None)
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close(timeout=2.0)
        self.control.stop(1.0)
        remove_alias(self.alias)


class DjangoPoolTarget(DjangoTarget):
    """``django``: OPTIONS["pool"] (Django's native psycopg_pool)."""

    pooled = True
    name = "django"


class DjangoPersistentTarget(DjangoTarget):
    """``django-persistent``: no pool, CONN_MAX_AGE = max_lifetime, CONN_HEALTH_CHECKS."""

    pooled = False
    name = "django-persistent"


__all__ = [
    "DjangoClient",
    "DjangoPersistentTarget",
    "DjangoPoolTarget",
    "DjangoSession",
    "DjangoTarget",
]
