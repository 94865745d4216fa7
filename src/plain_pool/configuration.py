"""``SessionConfigurer``: how a session is set up for one set of settings.

Why an object of its own: a pool must configure its connections for the
settings it was MADE for, not for the alias's settings of the moment - a
connection can go back to a pool that is no longer current (the role or zone
changed while it was out), and that pool becomes current again when the
settings change back (found by the state machines: StaleRole). So each pool
captures a configurer frozen at its settings, on every path: a new pooled
connection (the pool's ``configure`` callback), after each reset, and the
non-pooled ``init_connection_state``.

To change how sessions are configured, subclass it and name the subclass in
``DatabaseWrapper.configurer_class``: the override is honoured on every
path, pooled or not (Django #35688: overrides of the wrapper's configuration
hooks were bypassed by the pool's callback). An override of ``configure`` or
``configure_timezone`` must accept the ``session_zone`` keyword: after a
reset the checkout passes the zone ``DISCARD ALL`` restored.
"""

from __future__ import annotations

from time import monotonic
from typing import Any, ClassVar

import psycopg
from psycopg import pq, sql

from plain_pool import _wire
from plain_pool.settings import DatabaseSettings


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


class SessionConfigurer:
    """Time zone, application name, then role, for sessions of one :class:`DatabaseSettings`."""

    #: True: every statement :meth:`configure` sends carries its own deadline
    #: (:func:`execute_outside_transactions`, :data:`CONFIGURE_TIMEOUT`), so the
    #: checkout arms no watchdog around it. A subclass is False unless it says so
    #: itself: its ``conn.execute`` would wait forever over a half-open link.
    bounds_its_statements: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "bounds_its_statements" not in cls.__dict__:
            cls.bounds_its_statements = False

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        # What the session must report, as libpq reports it (on every checkout's path).
        self._zone_reported = self.zone.encode()
        name = settings.options.get("application_name")
        self._application_name = str(name) if name else None

    @property
    def zone(self) -> str:
        """The zone sessions must have: "UTC" when USE_TZ, else TIME_ZONE."""
        return self.settings.connection_timezone

    def cursor_factory(self) -> type[psycopg.Cursor[Any]]:
        if self.settings.server_side_binding:
            return psycopg.Cursor
        return psycopg.ClientCursor

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg.connect kwargs; the zone goes into the startup options.

        With ``-c TimeZone=<zone>`` the session's RESET value is the zone, so
        DISCARD ALL on return leaves the connection in the configured zone.
        """
        s = self.settings
        kwargs: dict[str, Any] = dict(s.options)
        user_options = str(kwargs.get("options") or "").strip()
        tz_option = f"-c TimeZone={_escape_option(self.zone)}"
        kwargs["options"] = f"{user_options} {tz_option}" if user_options else tz_option
        for key, value in (
            ("host", s.host),
            ("port", s.port),
            ("dbname", s.database),
            ("user", s.user),
            ("password", s.password),
        ):
            if value not in (None, ""):
                kwargs[key] = value
        kwargs["autocommit"] = True
        kwargs["prepare_threshold"] = s.prepare_threshold
        kwargs["cursor_factory"] = self.cursor_factory()
        return kwargs

    def configure(self, conn: psycopg.Connection, *, session_zone: str | None = None) -> None:
        """Configure a session: time zone, application name, then role.

        ``session_zone``: the zone the session will have when what was already
        sent has run (a reset inside a pipeline, whose ``DISCARD ALL`` result
        is not read yet); None: what the server last reported.
        """
        self.configure_timezone(conn, session_zone=session_zone)
        self.configure_application_name(conn)
        self.configure_role(conn)

    def configure_timezone(
        self, conn: psycopg.Connection, *, session_zone: str | None = None
    ) -> bool:
        """SET TIME ZONE when the session's zone differs. Return True if sent."""
        if session_zone is not None:
            if session_zone == self.zone:
                return False
        elif conn.pgconn.parameter_status(b"TimeZone") == self._zone_reported:
            return False
        execute_outside_transactions(
            conn, sql.SQL("SET TIME ZONE {}").format(sql.Literal(self.zone))
        )
        return True

    def configure_application_name(self, conn: psycopg.Connection) -> bool:
        """SET application_name back when the session does not report the configured one.

        A direct session never needs it: ``DISCARD ALL`` restores the startup
        packet's value. Behind a transaction pooler it does: PgBouncer SETs the
        client's name on its server session, ``DISCARD ALL`` resets it to the
        pooler's own, and PgBouncer records that as the client's
        (evidence/pgbouncer/hybrid_plain_pool_application_name.py). Inside a
        pipeline the reported value predates the reset: it is always sent there
        (no extra round trip). Return True if sent.
        """
        name = self._application_name
        if name is None:
            return False
        in_pipeline = conn.pgconn.pipeline_status != pq.PipelineStatus.OFF
        if not in_pipeline and conn.info.parameter_status("application_name") == name:
            return False
        execute_outside_transactions(
            conn, sql.SQL("SET application_name = {}").format(sql.Literal(name))
        )
        return True

    def configure_role(self, conn: psycopg.Connection) -> bool:
        """SET ROLE from POSTGRES_OPTIONS["assume_role"]. Return True if sent.

        Session-scoped: behind PgBouncer in transaction mode it does not stick.
        """
        role = self.settings.assume_role
        if not role:
            return False
        execute_outside_transactions(conn, sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        return True


#: Upper bound of one configuration statement (a half-open link must not hang it).
CONFIGURE_TIMEOUT = 2.0

#: Stamped on a connection by the checkout while it configures it: ``monotonic()`` of
#: the checkout's own deadline, which a configuration statement never outlives (behind
#: PgBouncer the checkout SETs the zone and name again, and a half-open server hop
#: must end in the pool's timeout, not in :data:`CONFIGURE_TIMEOUT`).
CONFIGURE_DEADLINE = "_plain_pool_configure_deadline"


def execute_outside_transactions(conn: psycopg.Connection, statement: sql.Composable) -> None:
    """Run ``statement`` as it is, never opening a transaction.

    psycopg's ``execute`` on a connection with autocommit off sends ``BEGIN``
    first: a ``SET TIME ZONE`` run by ``ensure_timezone()`` on a connection a
    request holds with autocommit off would open a transaction the request
    never began (and a later rollback would undo the zone). Found by the state
    machines. At the libpq level nothing else is sent; inside a transaction
    the request began, the statement joins it, as Django's does. Bounded by
    :data:`CONFIGURE_TIMEOUT`.
    """
    pgconn = conn.pgconn
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        conn.execute(statement, prepare=False)  # joins (or fails with) the request's transaction
        return
    deadline = monotonic() + CONFIGURE_TIMEOUT
    checkout_deadline = getattr(conn, CONFIGURE_DEADLINE, None)
    if checkout_deadline is not None and checkout_deadline < deadline:
        deadline = checkout_deadline
    _wire.run(
        pgconn,
        statement.as_bytes(conn),
        deadline,
        (pq.ExecStatus.COMMAND_OK,),
        "session configuration",
    )
