"""Giving a connection back over a half-open link blocks for as long as the link stays so:
SQLAlchemy's reset on return (a ROLLBACK) has no deadline.

SQLAlchemy 2.1.9, psycopg 3.3.9. A request opens a transaction (an uncommitted INSERT);
the link to the server then goes half-open (Toxiproxy's ``timeout`` toxic with timeout 0
on both streams: the proxy keeps both TCP connections open and drops all data, as a
stalled proxy, load balancer or NAT does); the request ends with ``conn.close()``, which
rolls the open transaction back (``Connection.close`` -> ``Transaction.close``; with no
transaction open, the pool's reset on return sends the same ``ROLLBACK`` when psycopg is
inside one) and psycopg waits for the answer, with no bound:
``pool_timeout`` only bounds checkouts, libpq's ``tcp_user_timeout`` and keepalives never
fire (the proxy's kernel acknowledges every byte), and ``statement_timeout`` is the
server's, which never sees the ROLLBACK. The request thread is stuck until the link heals
(here after 20 s); the server meanwhile keeps the session "idle in transaction" with the
INSERT's locks.

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/sqlalchemy/return_over_half_open_link.py

Output (2026-12-06)::

    sqlalchemy 2.1.9, psycopg 3.3.9, server 15.18, toxiproxy embedded
    request holds pid 22328 with an uncommitted INSERT; the link is now half-open
         3 s after conn.close(): still blocked; server: pid 22328 'idle in transaction'
        10 s after conn.close(): still blocked; server: pid 22328 'idle in transaction'
        20 s after conn.close(): still blocked; server: pid 22328 'idle in transaction'
    link healed after 20.0 s: conn.close() raised sqlalchemy.exc.OperationalError
      (from psycopg.OperationalError) 0.00 s later

(The last line folded here.)
"""

from __future__ import annotations

import threading
import time

import psycopg
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from chaos.postgres import PostgresServer
from chaos.toxiproxy.harness import ToxiproxyServer

HALF_OPEN_FOR = 20.0


def main() -> None:
    with PostgresServer() as server, ToxiproxyServer(prefer="embedded") as toxiproxy:
        proxy = toxiproxy.create_proxy("pg", f"{server.host}:{server.port}")
        host, _, port = proxy["listen"].rpartition(":")
        with server.connect() as admin:
            admin.execute("CREATE TABLE t (x int)")
        url = URL.create(
            "postgresql+psycopg",
            username=server.superuser,
            host=host,
            port=int(port),
            database=server.dbname,
        )
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=2,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": 2,
                "keepalives": 1,
                "keepalives_idle": 1,
                "keepalives_interval": 1,
                "keepalives_count": 3,
                "tcp_user_timeout": 3000,
            },
        )
        print(
            f"sqlalchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
            f"server {server.version}, toxiproxy {toxiproxy.kind}"
        )
        conn = engine.connect()
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # autobegin: a transaction is open
        for stream in ("upstream", "downstream"):
            toxiproxy.add_toxic(
                "pg",
                "timeout",
                stream=stream,
                name=f"half_open_{stream}",
                attributes={"timeout": 0},
            )
        print(f"request holds pid {pid} with an uncommitted INSERT; the link is now half-open")
        outcome: list[str] = []
        started = time.monotonic()

        def give_back() -> None:
            try:
                conn.close()
                outcome.append("returned")
            except Exception as exc:
                cause = type(getattr(exc, "orig", None) or exc)
                outcome.append(
                    f"raised {type(exc).__module__}.{type(exc).__name__} "
                    f"(from {cause.__module__.split('.')[0]}.{cause.__name__})"
                )

        thread = threading.Thread(target=give_back, daemon=True)
        thread.start()
        for waited in (3.0, 10.0, HALF_OPEN_FOR):
            thread.join(max(0.0, started + waited - time.monotonic()))
            with server.connect() as admin:
                state = admin.execute(
                    "SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
            blocked = "still blocked" if thread.is_alive() else "done"
            print(
                f"  {waited:4.0f} s after conn.close(): {blocked}; server: pid {pid} {state[0]!r}"
            )
        for stream in ("upstream", "downstream"):
            toxiproxy.remove_toxic("pg", f"half_open_{stream}")
        healed = time.monotonic()
        thread.join(10.0)
        print(
            f"link healed after {healed - started:.1f} s: conn.close() "
            f"{outcome[0] if outcome else 'STILL BLOCKED'} "
            f"{time.monotonic() - healed:.2f} s later"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
