"""Which session state one PgBouncer client leaves to the next, per pool_mode: PgBouncer's
own behaviour, no adapter, no app pool (psycopg connections straight to PgBouncer).

A harness Postgres and, for each configuration, a harness PgBouncer with
``default_pool_size = 1`` (so the next client is linked to the same server session):
``session`` (the shipped ``server_reset_query = DISCARD ALL``), ``transaction`` (the
same file: the reset query is not run in transaction mode), ``transaction`` with
``server_reset_query_always = 1``. For each kind of dirt, client A connects, runs it
in autocommit and disconnects; client B connects and reads its session (the server pid
says whether it is the same server session).

Then the seed articles' question: in transaction mode, does a ``SET`` made by one
client reach ANOTHER client's transaction while both are connected? Client B is
connected first; A runs ``SET work_mem = '8MB'`` (no transaction) and stays
connected; B runs ``BEGIN; SHOW work_mem; COMMIT``. And the same for ``SET TIME ZONE``,
which PgBouncer tracks (a client's TimeZone, DateStyle, client_encoding,
standard_conforming_strings and application_name are set again when PgBouncer links it
to a server session), unlike every other GUC.

``server_reset_query_always = 1`` cleans, at a price the output does not show: in
transaction mode it runs ``DISCARD ALL`` after EVERY transaction, so no session feature
works even within one client (a temp table or a PREPARE is gone at its next transaction).

``reset_always`` below is ``server_reset_query_always = 1``.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/pgbouncer/transaction_mode_leaks.py``

Recorded output (PgBouncer 1.18.0, psycopg 3.3.9, Postgres 15; 2026-12-06):

    PgBouncer 1.18.0, Postgres 15.18
    -- session (server_reset_query = DISCARD ALL)
      SET work_mem = '8MB'                      same session True  B sees: 4MB
      SET TIME ZONE 'Pacific/Chatham'           same session True  B sees: UTC
      SET ROLE chaos_intruder                   same session True  B sees: chaos_bouncer
      CREATE TEMP TABLE chaos_tmp (x int)       same session True  B sees: []
      SELECT pg_advisory_lock(4242)             same session True  B sees: []
      LISTEN chaos_channel                      same session True  B sees: []
      PREPARE chaos_stmt AS SELECT 1            same session True  B sees: []
      DECLARE chaos_cursor CURSOR WITH HOLD...  same session True  B sees: []
    -- transaction (server_reset_query = DISCARD ALL, not run in this mode)
      SET work_mem = '8MB'                      same session True  B sees: 8MB  LEAKS
      SET TIME ZONE 'Pacific/Chatham'           same session True  B sees: UTC
      SET ROLE chaos_intruder                   same session True  B sees: chaos_intruder  LEAKS
      CREATE TEMP TABLE chaos_tmp (x int)       same session True  B sees: ['chaos_tmp']  LEAKS
      SELECT pg_advisory_lock(4242)             same session True  B sees: ['4242']  LEAKS
      LISTEN chaos_channel                      same session True  B sees: ['chaos_channel']  LEAKS
      PREPARE chaos_stmt AS SELECT 1            same session True  B sees: ['chaos_stmt']  LEAKS
      DECLARE chaos_cursor CURSOR WITH HOLD...  same session True  B sees: ['chaos_cursor']  LEAKS
    -- transaction + server_reset_query_always = 1
      SET work_mem = '8MB'                      same session True  B sees: 4MB
      SET TIME ZONE 'Pacific/Chatham'           same session True  B sees: UTC
      SET ROLE chaos_intruder                   same session True  B sees: chaos_bouncer
      CREATE TEMP TABLE chaos_tmp (x int)       same session True  B sees: []
      SELECT pg_advisory_lock(4242)             same session True  B sees: []
      LISTEN chaos_channel                      same session True  B sees: []
      PREPARE chaos_stmt AS SELECT 1            same session True  B sees: []
      DECLARE chaos_cursor CURSOR WITH HOLD...  same session True  B sees: []
    -- two clients connected at once, transaction mode
      shipped config: A's SET work_mem = '8MB' -> B's transaction sees 8MB (same session True)
      shipped config: A's SET TIME ZONE 'Pacific/Chatham' -> B's transaction sees UTC
      reset_always: A's SET work_mem = '8MB' -> B's transaction sees 4MB (same session True)
      reset_always: A's SET TIME ZONE 'Pacific/Chatham' -> B's transaction sees UTC
"""

from __future__ import annotations

from typing import Any

from chaos.pgbouncer import PgBouncer
from chaos.postgres import PostgresServer

DIRT = (
    ("SET work_mem = '8MB'", "SHOW work_mem"),
    ("SET TIME ZONE 'Pacific/Chatham'", "SHOW TimeZone"),
    ("SET ROLE chaos_intruder", "SELECT current_user"),
    (
        "CREATE TEMP TABLE chaos_tmp (x int)",
        "SELECT ARRAY(SELECT relname::text FROM pg_class WHERE relnamespace = pg_my_temp_schema())",
    ),
    (
        "SELECT pg_advisory_lock(4242)",
        "SELECT ARRAY(SELECT objid::text FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
    ),
    ("LISTEN chaos_channel", "SELECT ARRAY(SELECT pg_listening_channels())"),
    ("PREPARE chaos_stmt AS SELECT 1", "SELECT ARRAY(SELECT name FROM pg_prepared_statements)"),
    (
        "DECLARE chaos_cursor CURSOR WITH HOLD FOR SELECT 1",
        "SELECT ARRAY(SELECT name FROM pg_cursors)",
    ),
)
CLEAN = {"4MB", "UTC", "chaos_bouncer", "[]"}
CONFIGS = (
    ("session (server_reset_query = DISCARD ALL)", "session", {}),
    ("transaction (server_reset_query = DISCARD ALL, not run in this mode)", "transaction", {}),
    (
        "transaction + server_reset_query_always = 1",
        "transaction",
        {"server_reset_query_always": 1},
    ),
)


def client(bouncer: PgBouncer) -> Any:
    return bouncer.connect(prepare_threshold=None)


def one(conn: Any, query: str) -> Any:
    return conn.execute(query).fetchone()[0]


def after_disconnect(bouncer: PgBouncer, dirt: str, probe: str) -> None:
    with client(bouncer) as a:
        pid_a = one(a, "SELECT pg_backend_pid()")
        a.execute(dirt)
    with client(bouncer) as b:
        pid_b = one(b, "SELECT pg_backend_pid()")
        seen = str(one(b, probe))
        with b.transaction():  # undo what holds the session for the next case
            pass
    label = dirt if len(dirt) <= 40 else dirt[:37] + "..."
    leaks = "" if seen in CLEAN else "  LEAKS"
    print(f"  {label:<41} same session {pid_a == pid_b}  B sees: {seen}{leaks}")


def concurrent(bouncer: PgBouncer, label: str, dirt: str, probe: str) -> None:
    with client(bouncer) as b, client(bouncer) as a:
        one(b, "SELECT 1")
        pid_a = one(a, "SELECT pg_backend_pid()")
        a.execute(dirt)
        with b.transaction():
            pid_b = one(b, "SELECT pg_backend_pid()")
            seen = one(b, probe)
        same = f" (same session {pid_a == pid_b})" if "work_mem" in dirt else ""
        print(f"  {label}: A's {dirt} -> B's transaction sees {seen}{same}")


def main() -> None:
    with PostgresServer() as server:
        server.create_role("chaos_intruder")
        for title, mode, settings in CONFIGS:
            with PgBouncer(server, pool_mode=mode, pool_size=1, settings=settings) as bouncer:
                if title.startswith("session"):
                    print(f"PgBouncer {bouncer.version}, Postgres {server.version}")
                print(f"-- {title}")
                for dirt, probe in DIRT:
                    bouncer.kill()  # a fresh server session for each case
                    bouncer.resume(bouncer.dbname)
                    after_disconnect(bouncer, dirt, probe)
        print("-- two clients connected at once, transaction mode")
        for label, settings in (
            ("shipped config", {}),
            ("reset_always", {"server_reset_query_always": 1}),
        ):
            with PgBouncer(server, pool_mode="transaction", pool_size=1, settings=settings) as b:
                concurrent(b, label, "SET work_mem = '8MB'", "SHOW work_mem")
                concurrent(b, label, "SET TIME ZONE 'Pacific/Chatham'", "SHOW TimeZone")


if __name__ == "__main__":
    main()
