"""plain_pool in front of PgBouncer transaction mode: its reset cleans the dirt, and,
until it re-SET the name, the session's application_name with it.

plain_pool's own code (a ``DatabaseWrapper`` with ``POSTGRES_POOL`` of one connection,
``application_name`` in ``POSTGRES_OPTIONS``) in front of a harness PgBouncer in
transaction mode (``default_pool_size = 1``: every request meets the same server
session). Request 1 checks out, runs one kind of dirt, gives the connection back
(plain_pool sends ``DISCARD ALL``); request 2 checks out and reads its session.

PgBouncer passes a client's ``application_name`` to the server with ``SET`` (source
``session``) when it links the client to a server session. ``DISCARD ALL`` (RESET ALL)
sets it back to the server's default, and PgBouncer, which tracks the parameter, records
the reset value as the client's own: from the first reuse on, the app's sessions had an
empty application_name (pg_stat_activity could not tell them apart any more). A direct
connection keeps it: the startup packet's value is what RESET goes back to. This was
the difference the matrix reported on every session-state row of ``hybrid-plain_pool``
(``session_gucs: missing ['application_name=...']``); the dirt itself never reached
request 2. Since then ``SessionConfigurer.configure_application_name`` SETs the name
back at checkout when the session does not report the configured one (never on a
direct connection).

Run (from the repository root): ``PYTHONPATH=src:. .tox/matrix/bin/python
evidence/pgbouncer/hybrid_plain_pool_application_name.py``

Recorded output before the fix (PgBouncer 1.18.0, psycopg 3.3.9, Postgres 15;
2026-12-06), one line per dirt:

    PgBouncer 1.18.0, Postgres 15.18
      SET work_mem = '8MB': request 2 sees 4MB
        application_name request 1 ('hybrid-evidence', 'session'), request 2 ('', 'default')
      SET ROLE chaos_intruder: request 2 sees chaos_bouncer
        application_name request 1 ('hybrid-evidence', 'session'), request 2 ('', 'default')
      ...

and after it (same versions, 2026-12-06):

    PgBouncer 1.18.0, Postgres 15.18
      SET work_mem = '8MB': request 2 sees 4MB
        application_name request 1 ('hybrid-evidence', 'session'),
          request 2 ('hybrid-evidence', 'session')
      SET ROLE chaos_intruder: request 2 sees chaos_bouncer
        application_name request 1 ('hybrid-evidence', 'session'),
          request 2 ('hybrid-evidence', 'session')
      CREATE TEMP TABLE chaos_tmp (x int): request 2 sees []
        application_name request 1 ('hybrid-evidence', 'session'),
          request 2 ('hybrid-evidence', 'session')
      LISTEN chaos_channel: request 2 sees []
        application_name request 1 ('hybrid-evidence', 'session'),
          request 2 ('hybrid-evidence', 'session')
      PREPARE chaos_stmt AS SELECT 1: request 2 sees []
        application_name request 1 ('hybrid-evidence', 'session'),
          request 2 ('hybrid-evidence', 'session')
"""

from __future__ import annotations

from typing import Any

from chaos.pgbouncer import LOGIN_ROLE, PgBouncer
from chaos.postgres import PostgresServer
from plain_pool import DatabaseWrapper

APP = "hybrid-evidence"
DIRT = (
    ("SET work_mem = '8MB'", "SHOW work_mem"),
    ("SET ROLE chaos_intruder", "SELECT current_user"),
    (
        "CREATE TEMP TABLE chaos_tmp (x int)",
        "SELECT ARRAY(SELECT relname::text FROM pg_class WHERE relnamespace = pg_my_temp_schema())",
    ),
    ("LISTEN chaos_channel", "SELECT ARRAY(SELECT pg_listening_channels())"),
    ("PREPARE chaos_stmt AS SELECT 1", "SELECT ARRAY(SELECT name FROM pg_prepared_statements)"),
)
APP_NAME = "SELECT current_setting('application_name'), (SELECT source FROM pg_settings"
APP_NAME += " WHERE name = 'application_name')"


def settings(bouncer: PgBouncer) -> dict[str, Any]:
    login = bouncer.connect_kwargs()
    return {
        "POSTGRES_HOST": bouncer.host,
        "POSTGRES_PORT": bouncer.port,
        "POSTGRES_DATABASE": bouncer.dbname,
        "POSTGRES_USER": LOGIN_ROLE,
        "POSTGRES_PASSWORD": login["password"],
        "POSTGRES_OPTIONS": {"application_name": APP},
        "POSTGRES_POOL": {"min_size": 1, "max_size": 1},
    }


def main() -> None:
    with PostgresServer() as server:
        server.create_role("chaos_intruder")
        with PgBouncer(server, pool_mode="transaction", pool_size=1) as bouncer:
            print(f"PgBouncer {bouncer.version}, Postgres {server.version}")
            for dirt, probe in DIRT:
                db = DatabaseWrapper(settings(bouncer), alias=f"evidence-{len(dirt)}")
                try:
                    with db.cursor() as cur:
                        cur.execute(APP_NAME)
                        before = cur.fetchone()
                        cur.execute(dirt)
                    db.close()  # back to the pool: plain_pool's reset (DISCARD ALL)
                    with db.cursor() as cur:
                        cur.execute(probe)
                        seen = cur.fetchone()[0]
                        cur.execute(APP_NAME)
                        after = cur.fetchone()
                    db.close()
                finally:
                    db.close()
                    from plain_pool import pools

                    pools.close_all()
                print(f"  {dirt}: request 2 sees {seen}")
                print(f"    application_name request 1 {before}, request 2 {after}")


if __name__ == "__main__":
    main()
