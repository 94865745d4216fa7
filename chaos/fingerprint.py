"""The session fingerprint: what "no session leakage" means, as a value.

``session_fingerprint(conn)`` gathers, in ONE query plus the client-side
attributes, everything a request can leave behind on a PostgreSQL session:

- ``current_setting('TimeZone')``, ``current_user``, ``session_user``;
- GUCs whose ``source`` is ``session`` in ``pg_settings`` (set by ``SET``),
  minus ``TimeZone`` (captured exactly above: a zone set by the backend's
  ``SET TIME ZONE`` and the same zone from the startup options are the same
  state, though their sources differ);
- temp tables (``pg_class`` in ``pg_my_temp_schema()``);
- advisory locks held by ``pg_backend_pid()`` (``pg_locks``);
- ``pg_listening_channels()``, ``pg_prepared_statements``, ``pg_cursors``;
- the transaction status;
- the client side of the psycopg connection (no round trip): ``autocommit``,
  ``isolation_level``, ``read_only``, ``deferrable``, ``prepare_threshold``,
  ``prepared_max``, the row, cursor and server-cursor factories (by qualified
  name), the notice and notify handlers (by qualified name), notifications
  received but not yet consumed (``pending_notifies``: ``conn.notifies()``
  would hand them to the next user) and which adapter maps the connection
  changed (``adapters``: a loader or dumper registered on ``conn.adapters``,
  or ``TypeInfo.register(conn)``).

Client-side state is session state too: a request that sets
``conn.row_factory = dict_row`` or adds a notice handler and returns the
connection changes what the next request gets, exactly as a ``SET`` does.
Three of these have no public getter in psycopg (the handler lists, the
notification backlog, the adapter maps' copy-on-write state): they are read,
never written, in :func:`_psycopg_internals`, the one place that knows
psycopg's private attributes.

The backend pid is kept (``backend_pid``) but is not part of equality.

Running it must not change the state it measures:

- it is executed with ``prepare=False`` (never a prepared statement);
- with ``autocommit`` off and no transaction open, a query would BEGIN a
  transaction, so autocommit is switched on for the query and restored after
  (a client-side attribute: no round trip, and no ``ROLLBACK`` - which would
  also make psycopg forget its prepared statements);
- inside an open transaction it runs in that transaction (read-only; note
  that in a REPEATABLE READ transaction that has not run a query yet, this
  takes the snapshot);
- in a failed transaction (INERROR) or mid-query (ACTIVE) no query can run:
  the server-side fields are ``None`` ("unknown") and only the client-side
  ones and the status are filled.

Prepared statements: psycopg names its own ``_pg3_<n>``. They are reported
separately (``driver_prepared_statements``). With ``prepare_threshold`` off
psycopg never creates one, so any ``_pg3_`` statement is leftover state from
someone who turned it on: they count. With ``prepare_threshold`` on they are
psycopg's client-side cache, created by ordinary queries, and a reset that
keeps prepared statements (deadpool style) legitimately leaves them; by
default (``driver_statements="auto"``) they are then ignored. A reset that
runs ``DISCARD ALL`` leaves none either way, so ``"include"`` is the
stricter check for the default backend.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

DRIVER_PREFIX = "_pg3_"

FINGERPRINT_SQL = """\
SELECT
  current_setting('TimeZone'),
  current_user::text,
  session_user::text,
  ARRAY(SELECT name || '=' || setting FROM pg_settings
        WHERE source = 'session' AND name <> 'TimeZone' ORDER BY name),
  ARRAY(SELECT c.relname::text FROM pg_class c
        WHERE c.relnamespace = pg_my_temp_schema() ORDER BY 1),
  ARRAY(SELECT concat_ws(':', l.classid, l.objid, l.objsubid, l.mode, l.granted)
        FROM pg_locks l WHERE l.pid = pg_backend_pid() AND l.locktype = 'advisory'
        ORDER BY 1),
  ARRAY(SELECT ch::text FROM pg_listening_channels() ch ORDER BY 1),
  ARRAY(SELECT p.name::text FROM pg_prepared_statements p ORDER BY 1),
  ARRAY(SELECT cu.name::text FROM pg_cursors cu ORDER BY 1),
  pg_backend_pid()
"""

_SERVER_FIELDS = (
    "timezone",
    "current_user",
    "session_user",
    "session_gucs",
    "temp_tables",
    "advisory_locks",
    "listening_channels",
    "prepared_statements",
    "driver_prepared_statements",
    "cursors",
)


@dataclasses.dataclass(frozen=True)
class SessionFingerprint:
    """Everything a session can carry from one checkout to the next.

    Frozen and hashable; its repr is valid Python (strings, bools, ints,
    None and tuples only). Server-side fields are None when they could not
    be read (failed transaction, query in progress).
    """

    timezone: str | None
    current_user: str | None
    session_user: str | None
    session_gucs: tuple[str, ...] | None
    temp_tables: tuple[str, ...] | None
    advisory_locks: tuple[str, ...] | None
    listening_channels: tuple[str, ...] | None
    prepared_statements: tuple[str, ...] | None
    driver_prepared_statements: tuple[str, ...] | None
    cursors: tuple[str, ...] | None
    transaction_status: str
    autocommit: bool
    isolation_level: str | None
    read_only: bool | None
    deferrable: bool | None
    prepare_threshold: int | None
    prepared_max: int | None
    row_factory: str
    cursor_factory: str
    server_cursor_factory: str
    notice_handlers: tuple[str, ...]
    notify_handlers: tuple[str, ...]
    pending_notifies: tuple[str, ...]
    adapters: tuple[str, ...]
    backend_pid: int | None = dataclasses.field(default=None, compare=False)

    def without_driver_statements(self) -> SessionFingerprint:
        """The same fingerprint with psycopg's ``_pg3_`` statements ignored."""
        return dataclasses.replace(self, driver_prepared_statements=())

    def diff(self, other: SessionFingerprint) -> list[str]:
        """Readable differences from ``self`` (expected) to ``other`` (actual)."""
        out: list[str] = []
        for f in dataclasses.fields(self):
            if not f.compare:
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine == theirs:
                continue
            if isinstance(mine, tuple) and isinstance(theirs, tuple):
                extra = [x for x in theirs if x not in mine]
                missing = [x for x in mine if x not in theirs]
                parts = []
                if extra:
                    parts.append(f"extra {extra!r}")
                if missing:
                    parts.append(f"missing {missing!r}")
                out.append(f"{f.name}: {', '.join(parts)}")
            else:
                out.append(f"{f.name}: expected {mine!r}, got {theirs!r}")
        return out


#: The client-side fields (read with no round trip), the transaction status aside.
CLIENT_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(SessionFingerprint)
    if f.compare and f.name not in _SERVER_FIELDS and f.name != "transaction_status"
)


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function or class (of its type for other callables)."""
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return f"{module}.{name}"


#: The adapter maps psycopg copies on write from its global ``psycopg.adapters``.
_ADAPTER_MAPS = ("dumpers", "dumpers_by_oid", "loaders")


def _changed_adapter_maps(conn_adapters: Any) -> tuple[str, ...]:
    """Which of the connection's adapter maps are no longer psycopg's global ones.

    A connection's ``AdaptersMap`` starts as a shallow copy of the global
    map: its inner dicts ARE the global dicts until a ``register_dumper`` /
    ``register_loader`` / ``TypeInfo.register`` on the connection copies one.
    (Its ``_own_*`` flags cannot be used: every cursor copies the
    connection's map and so resets them.) A global registration after the
    connection was made also shows here: such a connection differs from a
    fresh one as well.
    """
    if conn_adapters is None:  # never used: psycopg copies the global map on first use
        return ()
    base = psycopg.adapters
    changed = []
    for name in _ADAPTER_MAPS:
        mine, theirs = getattr(conn_adapters, f"_{name}", None), getattr(base, f"_{name}", None)
        if isinstance(mine, dict) and isinstance(theirs, dict):  # by format
            if any(mine.get(k) is not v for k, v in theirs.items()):
                changed.append(name)
        elif (
            isinstance(mine, list)  # by pq format
            and isinstance(theirs, list)
            and any(m is not t for m, t in zip(mine, theirs, strict=False))
        ):
            changed.append(name)
    mine_types = getattr(getattr(conn_adapters, "types", None), "_registry", None)
    if mine_types is not getattr(base.types, "_registry", None):
        changed.append("types")
    return tuple(changed)


def _psycopg_internals(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, ...]]:
    """Client-side state psycopg keeps in private attributes (read only, never written).

    psycopg has ``add_notice_handler``/``remove_notice_handler`` (and the
    notify pair) but no way to list the handlers; ``conn.notifies()`` drains
    the backlog of received notifications (so it cannot be used to look);
    ``conn.adapters`` creates the map it returns. A psycopg release that
    renames one of these makes the field read as empty: the integration
    tests (tests/integration/test_client_state.py) then fail, since they
    check that every field sees its change.
    """
    backlog = getattr(conn, "_notifies_backlog", None) or ()
    return {
        "notice_handlers": tuple(map(qualified_name, getattr(conn, "_notice_handlers", ()))),
        "notify_handlers": tuple(map(qualified_name, getattr(conn, "_notify_handlers", ()))),
        "pending_notifies": tuple(n.channel for n in backlog),
        "adapters": _changed_adapter_maps(getattr(conn, "_adapters", None)),
    }


def client_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The client-side fields of the fingerprint (no round trip)."""
    iso = conn.isolation_level
    return {
        "transaction_status": conn.info.transaction_status.name,
        "autocommit": conn.autocommit,
        "isolation_level": iso.name if iso is not None else None,
        "read_only": conn.read_only,
        "deferrable": conn.deferrable,
        "prepare_threshold": conn.prepare_threshold,
        "prepared_max": conn.prepared_max,
        "row_factory": qualified_name(conn.row_factory),
        "cursor_factory": qualified_name(conn.cursor_factory),
        "server_cursor_factory": qualified_name(conn.server_cursor_factory),
        **_psycopg_internals(conn),
    }


def session_fingerprint(
    conn: psycopg.Connection[Any],
    *,
    driver_statements: Literal["auto", "include", "ignore"] = "auto",
) -> SessionFingerprint:
    """Fingerprint ``conn``'s session without changing it (see the module docstring)."""
    status = conn.info.transaction_status
    client = client_state(conn)
    if conn.closed or status not in (TransactionStatus.IDLE, TransactionStatus.INTRANS):
        return SessionFingerprint(**dict.fromkeys(_SERVER_FIELDS), **client)  # type: ignore[arg-type]

    switch = status == TransactionStatus.IDLE and not conn.autocommit
    if switch:
        conn.autocommit = True
    try:
        # A plain Cursor with tuple rows: the request may have changed the
        # connection's cursor and row factories (part of what is measured).
        with psycopg.Cursor(conn, row_factory=tuple_row) as cur:
            cur.execute(FINGERPRINT_SQL, prepare=False)
            row = cur.fetchone()
    finally:
        if switch:
            conn.autocommit = False
    assert row is not None
    statements = _names(row[7])
    user_statements = tuple(s for s in statements if not s.startswith(DRIVER_PREFIX))
    driver = tuple(s for s in statements if s.startswith(DRIVER_PREFIX))
    ignore = driver_statements == "ignore" or (
        driver_statements == "auto" and conn.prepare_threshold is not None
    )
    return SessionFingerprint(
        timezone=row[0],
        current_user=row[1],
        session_user=row[2],
        session_gucs=_names(row[3]),
        temp_tables=_names(row[4]),
        advisory_locks=_names(row[5]),
        listening_channels=_names(row[6]),
        prepared_statements=user_statements,
        driver_prepared_statements=() if ignore else driver,
        cursors=_names(row[8]),
        backend_pid=int(row[9]),  # int even if a request made int4 load as text
        **client,  # type: ignore[arg-type]
    )
