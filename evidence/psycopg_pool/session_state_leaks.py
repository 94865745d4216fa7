"""Which session state one request leaves to the next through bare psycopg_pool
(``getconn`` / ``putconn``): psycopg_pool's and psycopg's own code only, no adapter.

The pool is what an application using psycopg_pool directly builds: ``ConnectionPool``
with ``min_size = max_size = 1`` (so the next request gets that very session),
``kwargs={"autocommit": True}`` and a ``configure`` callback that sets the time zone
(``SET TIME ZONE 'UTC'``, committed: psycopg_pool discards a connection ``configure``
leaves in a transaction). For every kind of dirt in ``chaos/machines/dirt.py`` (plus an
open ``BEGIN``), on a fresh pool each time: request 1 ``getconn()``, the dirt (SQL on
the connection, or a client-side attribute of the psycopg connection), ``putconn()``;
request 2 ``getconn()``, and its session is fingerprinted (``chaos.fingerprint``: one
read-only query and the psycopg connection's client-side attributes) and compared with
a fresh connection from a fresh pool with the same ``configure`` ("same session":
request 2 got request 1's backend pid). The server runs with ``log_statement = all``;
for the ``work_mem`` case the program prints every statement the server logged on that
session from request 1's ``SET`` to request 2's queries: nothing in between.

``putconn`` only rolls back an open transaction (``_reset_connection`` in
``psycopg_pool/pool.py``: ``rollback()`` when the status is INTRANS or INERROR, then
the user's ``reset`` callback if one was given - none by default). The docs say so
("Connections life cycle": "if a ``reset`` callback was provided, the connection is
passed to it, to allow application-specific cleanup if needed"). So every kind leaks,
``autocommit`` included (see ``autocommit_off_loses_writes.py`` for what that does to
the next request's writes).

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/psycopg_pool/session_state_leaks.py

Recorded output (psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15; 2026-12-06;
psycopg_pool's "rolling back returned connection" warning left out):

    psycopg 3.3.9, psycopg_pool 3.3.3, 15.18
    SetGuc(name='work_mem', value='8MB'): same session True
        LEAKS session_gucs: extra ['work_mem=8192']
      server log of that session, request 1 to request 2:
        SET TIME ZONE 'UTC'
        SET work_mem TO '8MB'
        SELECT
    SetGuc(name='application_name', value='chaos-dirt'): same session True
        LEAKS session_gucs: extra ['application_name=chaos-dirt']
    SetGuc(name='DateStyle', value='SQL, DMY'): same session True
        LEAKS session_gucs: extra ['DateStyle=SQL, DMY']
    SetTimeZone(zone='Pacific/Chatham'): same session True
        LEAKS timezone: expected 'UTC', got 'Pacific/Chatham'
    SetRole(role='chaos_intruder'): same session True
        LEAKS current_user: expected 'postgres', got 'chaos_intruder'
    TempTable(name='chaos_tmp'): same session True
        LEAKS temp_tables: extra ['chaos_tmp']
    AdvisoryLock(key=4242): same session True
        LEAKS advisory_locks: extra ['0:4242:1:ExclusiveLock:t']
    Listen(channel='chaos_channel'): same session True
        LEAKS listening_channels: extra ['chaos_channel']
    Prepare(name='chaos_stmt'): same session True
        LEAKS prepared_statements: extra ['chaos_stmt']
    HoldCursor(name='chaos_cursor'): same session True
        LEAKS cursors: extra ['chaos_cursor']
    ClientAttr(attr='isolation_level', value='SERIALIZABLE'): same session True
        LEAKS isolation_level: expected None, got 'SERIALIZABLE'
    ClientAttr(attr='read_only', value=True): same session True
        LEAKS read_only: expected None, got True
    ClientAttr(attr='deferrable', value=True): same session True
        LEAKS deferrable: expected None, got True
    ClientAttr(attr='autocommit', value=False): same session True
        LEAKS autocommit: expected True, got False
    ClientAttr(attr='prepare_threshold', value=0): same session True
        LEAKS prepare_threshold: expected 5, got 0
    ClientAttr(attr='prepared_max', value=1): same session True
        LEAKS prepared_max: expected 100, got 1
    ClientAttr(attr='row_factory', value='dict_row'): same session True
        LEAKS row_factory: expected 'psycopg.rows.tuple_row', got 'psycopg.rows.dict_row'
    ClientAttr(attr='cursor_factory', value='ChaosCursor'): same session True
        LEAKS cursor_factory: expected 'psycopg.Cursor', got 'chaos.machines.dirt.ChaosCursor'
    ClientAttr(attr='server_cursor_factory', value='ChaosServerCursor'): same session True
        LEAKS server_cursor_factory: expected 'psycopg.ServerCursor', got
            'chaos.machines.dirt.ChaosServerCursor'
    ClientAttr(attr='notice_handler', value='ignore_notice'): same session True
        LEAKS notice_handlers: extra ['chaos.machines.dirt.ignore_notice']
    ClientAttr(attr='notify_handler', value='ignore_notify'): same session True
        LEAKS notify_handlers: extra ['chaos.machines.dirt.ignore_notify']
    ClientAttr(attr='loader', value='int4_as_text'): same session True
        LEAKS adapters: extra ['loaders']
    PendingNotification(channel='chaos_notify'): same session True
        LEAKS listening_channels: extra ['chaos_notify']; pending_notifies: extra
            ['chaos_notify']
    BEGIN: same session True
        reset
    23 of 24 kinds leak to the next request
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg_pool
from psycopg_pool import ConnectionPool

from chaos.fingerprint import SessionFingerprint, session_fingerprint
from chaos.machines.dirt import DIRT, INTRUDER_ROLE, ClientAttr, Dirt, SetGuc
from chaos.postgres import PostgresServer


def configure(conn: psycopg.Connection[Any]) -> None:
    """What a psycopg_pool user's configure does: the session's time zone."""
    conn.execute("SET TIME ZONE 'UTC'")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()


def new_pool(pg: PostgresServer) -> ConnectionPool:
    pool = ConnectionPool(
        pg.conninfo(),
        min_size=1,
        max_size=1,
        kwargs={"autocommit": True},
        configure=configure,
        open=True,
    )
    pool.wait()
    return pool


def apply(conn: psycopg.Connection[Any], dirt: Dirt | str) -> None:
    """What a request does: SQL on the connection, or a client-side attribute."""
    if dirt == "BEGIN":
        conn.execute("BEGIN")
    elif isinstance(dirt, ClientAttr):
        value = dirt.resolved()
        if dirt.attr in ("notice_handler", "notify_handler"):
            getattr(conn, f"add_{dirt.attr}")(value)
        elif dirt.attr == "loader":
            conn.adapters.register_loader(*value)
        else:
            setattr(conn, dirt.attr, value)
    else:
        for sql in dirt.statements():
            conn.execute(sql, prepare=False)


def two_requests(pg: PostgresServer, dirt: Dirt | str) -> tuple[int, SessionFingerprint]:
    """Request 1 leaves ``dirt``; request 2's session as it gets it (pid of request 1)."""
    with new_pool(pg) as pool:
        conn = pool.getconn()
        pid = conn.info.backend_pid
        apply(conn, dirt)
        pool.putconn(conn)
        conn = pool.getconn()
        seen = session_fingerprint(conn)
        pool.putconn(conn)
    return pid, seen


def logged_statements(pg: PostgresServer, offset: int, pid: int) -> list[str]:
    text = pg.log_path.read_text(errors="replace")[offset:]
    return [line for line in text.splitlines() if f"[{pid}]" in line and "statement:" in line]


def main() -> None:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    with PostgresServer(settings={"log_statement": "all", "log_line_prefix": "[%p] "}) as pg:
        pg.create_role(INTRUDER_ROLE)
        print(
            f"psycopg {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__}, {pg.version}"
        )
        with new_pool(pg) as pool:
            conn = pool.getconn()
            fresh = session_fingerprint(conn)
            pool.putconn(conn)
        kinds: list[Dirt | str] = [*DIRT, "BEGIN"]
        leaked = []
        for dirt in kinds:
            offset = pg.log_path.stat().st_size
            pid, seen = two_requests(pg, dirt)
            diff = fresh.diff(seen)
            if isinstance(dirt, ClientAttr) and dirt.attr == "loader" and not diff:
                diff = ["(loader not visible to the fingerprint)"]
            print(f"{dirt!s}: same session {seen.backend_pid == pid}")
            print("    " + ("LEAKS " + "; ".join(diff) if diff else "reset"))
            if diff:
                leaked.append(dirt)
            if dirt == SetGuc("work_mem", "8MB"):
                print("  server log of that session, request 1 to request 2:")
                for line in logged_statements(pg, offset, pid):
                    print("   ", line.split("statement: ", 1)[1][:100])
        print(f"{len(leaked)} of {len(kinds)} kinds leak to the next request")


if __name__ == "__main__":
    main()
