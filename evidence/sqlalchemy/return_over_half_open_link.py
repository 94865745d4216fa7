"""Over a half-open link, giving a connection back and checking one out (the pre-ping) block
for as long as the link stays so: neither has a deadline in SQLAlchemy.

SQLAlchemy 2.1.9, psycopg 3.3.9. The link to the server goes half-open (Toxiproxy's
``timeout`` toxic with timeout 0 on both streams: the proxy keeps both TCP connections
open and drops all data, as a stalled proxy, load balancer or NAT does) for 20 s:

1. A request with an open transaction (an uncommitted INSERT) ends with ``conn.close()``,
   which rolls the transaction back (``Connection.close`` -> ``Transaction.close``; with
   none open, the pool's reset on return sends the same ``ROLLBACK`` when psycopg is
   inside one) and waits for the answer. The server meanwhile keeps the session "idle in
   transaction" with the INSERT's locks.
2. A request checks out the idle pooled connection: ``pool_pre_ping`` sends its ping
   (``;``) and waits for the answer, past ``pool_timeout`` (which bounds only the wait for
   a free connection).

Nothing bounds either wait: libpq's ``tcp_user_timeout`` and keepalives never fire (the
proxy's kernel acknowledges every byte), ``connect_timeout`` bounds new connections only,
``statement_timeout`` is the server's, which never sees the statement. Both calls come back
when the link heals: the close with the lost connection's error, the checkout with a new
connection (the failed ping invalidates the pool and SQLAlchemy reconnects). In 3 of 4
runs that reconnect raised OperationalError instead: this script heals in two steps (one
toxic per stream), the reconnect starts as soon as the first is removed and meets the
second - an artefact of the heal, not of SQLAlchemy; a checkout after it works.

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/sqlalchemy/return_over_half_open_link.py

Output (2026-12-06; long lines folded here)::

    sqlalchemy 2.1.9, psycopg 3.3.9, server 15.18, toxiproxy embedded
    1. request holds pid 27922 with an uncommitted INSERT; the link goes half-open
         3 s after conn.close(): still blocked; server: pid 27922 'idle in transaction'
        10 s after conn.close(): still blocked; server: pid 27922 'idle in transaction'
        20 s after conn.close(): still blocked; server: pid 27922 'idle in transaction'
      link healed after 20.0 s: conn.close() raised sqlalchemy.exc.OperationalError
        (from psycopg.OperationalError) 0.00 s later
    2. pid 28325 idle in the pool (pool_timeout=2); the link goes half-open
         3 s after engine.connect(): still blocked; server: pid 28325 'idle'
        10 s after engine.connect(): still blocked; server: pid 28325 'idle'
        20 s after engine.connect(): still blocked; server: pid 28325 'idle'
      link healed after 20.0 s: engine.connect() returned 0.00 s later
      a checkout 0.5 s after the heal: ok
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from chaos.postgres import PostgresServer
from chaos.toxiproxy.harness import ToxiproxyServer

HALF_OPEN_FOR = 20.0


def _describe(exc: BaseException) -> str:
    cause = type(getattr(exc, "orig", None) or exc)
    return (
        f"raised {type(exc).__module__}.{type(exc).__name__} "
        f"(from {cause.__module__.split('.')[0]}.{cause.__name__})"
    )


def blocked_while_half_open(
    toxiproxy: ToxiproxyServer, server: PostgresServer, call: Callable[[], Any], what: str, pid: int
) -> None:
    """Make the link half-open, run ``call`` in a thread, watch it for HALF_OPEN_FOR s, heal."""
    for stream in ("upstream", "downstream"):
        toxiproxy.add_toxic(
            "pg", "timeout", stream=stream, name=f"half_open_{stream}", attributes={"timeout": 0}
        )
    outcome: list[str] = []
    started = time.monotonic()

    def run() -> None:
        try:
            call()
            outcome.append("returned")
        except Exception as exc:
            outcome.append(_describe(exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for waited in (3.0, 10.0, HALF_OPEN_FOR):
        thread.join(max(0.0, started + waited - time.monotonic()))
        with server.connect() as admin:
            row = admin.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
        blocked = "still blocked" if thread.is_alive() else "done"
        print(f"  {waited:4.0f} s after {what}: {blocked}; server: pid {pid} {row[0]!r}")
    for stream in ("upstream", "downstream"):
        toxiproxy.remove_toxic("pg", f"half_open_{stream}")
    healed = time.monotonic()
    thread.join(10.0)
    print(
        f"  link healed after {healed - started:.1f} s: {what} "
        f"{outcome[0] if outcome else 'STILL BLOCKED'} {time.monotonic() - healed:.2f} s later"
    )


def main() -> None:
    # SQLAlchemy logs the failed reset ("Exception during reset or similar") with a traceback.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
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
        print(f"1. request holds pid {pid} with an uncommitted INSERT; the link goes half-open")
        blocked_while_half_open(toxiproxy, server, conn.close, "conn.close()", pid)

        with engine.connect() as conn:  # a new connection, idle in the pool afterwards
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        print(f"2. pid {pid} idle in the pool (pool_timeout=2); the link goes half-open")
        blocked_while_half_open(
            toxiproxy, server, lambda: engine.connect().close(), "engine.connect()", pid
        )
        time.sleep(0.5)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").all()
        print("  a checkout 0.5 s after the heal: ok")
        engine.dispose()


if __name__ == "__main__":
    main()
