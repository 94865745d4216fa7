"""Too many clients: session mode makes the extra client wait (query_wait_timeout),
transaction mode lets idle clients share the server sessions and nobody waits.

``default_pool_size = 2``, four clients that each run ``SELECT 1`` and stay connected
(idle, no transaction: a request holding its connection), as the matrix's
``too_many_connections`` row does; ``query_wait_timeout = 2`` (the row's pool timeout).
The program prints each client's outcome, the server sessions PgBouncer opened (from
``pg_stat_activity``, by application_name) and ``SHOW POOLS``.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/pgbouncer/transaction_mode_multiplexes.py``

Recorded output (PgBouncer 1.18.0, psycopg 3.3.9, Postgres 15; 2026-12-06):

    PgBouncer 1.18.0 session: clients ['ok', 'ok', 'query_wait_timeout', 'query_wait_timeout']
      server sessions 2 (pool size 2)
      SHOW POOLS {'cl_active': 2, 'cl_waiting': 0, 'sv_active': 2, 'sv_idle': 0}
    PgBouncer 1.18.0 transaction: clients ['ok', 'ok', 'ok', 'ok']
      server sessions 1 (pool size 2)
      SHOW POOLS {'cl_active': 4, 'cl_waiting': 0, 'sv_active': 0, 'sv_idle': 1}
"""

from __future__ import annotations

import contextlib

import psycopg

from chaos.pgbouncer import PgBouncer
from chaos.postgres import PostgresServer

APP = "multiplex-evidence"


def main() -> None:
    with PostgresServer() as server:
        for mode in ("session", "transaction"):
            settings = {"query_wait_timeout": 2}
            with PgBouncer(server, pool_mode=mode, pool_size=2, settings=settings) as bouncer:
                clients, outcomes = [], []
                try:
                    for _ in range(4):
                        conn = bouncer.connect(application_name=APP, prepare_threshold=None)
                        clients.append(conn)
                        try:
                            conn.execute("SELECT 1")
                            outcomes.append("ok")
                        except psycopg.Error as exc:
                            outcomes.append(str(exc).strip().splitlines()[-1])
                    with server.connect() as admin:
                        sessions = admin.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            [APP],
                        ).fetchone()[0]
                    pool = next(p for p in bouncer.show("pools") if p["database"] == "postgres")
                finally:
                    for conn in clients:
                        with contextlib.suppress(Exception):
                            conn.close()
                shown = {k: pool[k] for k in ("cl_active", "cl_waiting", "sv_active", "sv_idle")}
                print(f"PgBouncer {bouncer.version} {mode}: clients {outcomes}")
                print(f"  server sessions {sessions} (pool size 2)")
                print(f"  SHOW POOLS {shown}")


if __name__ == "__main__":
    main()
