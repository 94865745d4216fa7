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
- the transaction status, and the client-side ``autocommit``,
  ``isolation_level``, ``read_only``, ``deferrable`` and ``prepare_threshold``.

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


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def session_fingerprint(
    conn: psycopg.Connection[Any],
    *,
    driver_statements: Literal["auto", "include", "ignore"] = "auto",
) -> SessionFingerprint:
    """Fingerprint ``conn``'s session without changing it (see the module docstring)."""
    status = conn.info.transaction_status
    iso = conn.isolation_level
    client = {
        "transaction_status": status.name,
        "autocommit": conn.autocommit,
        "isolation_level": iso.name if iso is not None else None,
        "read_only": conn.read_only,
        "deferrable": conn.deferrable,
        "prepare_threshold": conn.prepare_threshold,
    }
    if conn.closed or status not in (TransactionStatus.IDLE, TransactionStatus.INTRANS):
        return SessionFingerprint(**dict.fromkeys(_SERVER_FIELDS), **client)  # type: ignore[arg-type]

    switch = status == TransactionStatus.IDLE and not conn.autocommit
    if switch:
        conn.autocommit = True
    try:
        with conn.cursor() as cur:
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
        backend_pid=row[9],
        **client,  # type: ignore[arg-type]
    )
