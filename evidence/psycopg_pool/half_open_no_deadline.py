"""Over a half-open link, psycopg_pool's ``getconn`` with ``check_connection``, the first
query on an unchecked connection, and ``putconn``'s rollback block for as long as the link
stays so: none has a client-side deadline, and the pool's ``timeout`` does not bound
them. psycopg_pool's and psycopg's own code only, no adapter.

psycopg 3.3.9, psycopg_pool 3.3.3. The pool (``min_size = max_size = 1``, ``timeout = 1``,
``kwargs={"autocommit": True}``) connects through the harness's embedded Toxiproxy. The
link goes half-open (Toxiproxy's ``timeout`` toxic with timeout 0 on both streams: the
proxy keeps both TCP connections open and drops all data, as a stalled proxy, load
balancer or NAT does) for 10 s, while:

1. ``getconn(timeout=1)`` with ``check=ConnectionPool.check_connection``: the check
   (``conn.execute("")``) waits for an answer. ``timeout`` bounds only the wait for a
   free connection (``_getconn_unchecked``); ``_check_connection`` runs the user's check
   with no deadline. When the link heals (the proxy closes what it held) the check
   fails, the loop finds its deadline long past and raises ``PoolTimeout``.
2. No check (psycopg_pool's default): ``getconn`` returns at once and the caller's first
   query (``SELECT 1``) waits instead, until the heal breaks the connection.
3. ``putconn`` of a connection with an uncommitted ``INSERT``: ``_reset_connection``
   calls ``conn.rollback()``, which waits for the answer; meanwhile the server keeps the
   session "idle in transaction" with the INSERT's locks.

libpq's ``tcp_user_timeout`` and keepalives (set here) never fire: the proxy's kernel
acknowledges every byte. ``connect_timeout`` bounds new connections only;
``statement_timeout`` is the server's, which never sees the statement. psycopg_pool offers
no bound for the check or for the rollback in ``putconn``: when the link heals, the
check fails, the query raises, and the rollback fails (psycopg_pool logs "rollback
failed ... Discarding connection", silenced here, and ``putconn`` returns). Django's pool
with ``CONN_HEALTH_CHECKS`` passes ``check=ConnectionPool.check_connection``
(``django/db/backends/postgresql/base.py``), so case 1 is its behaviour too. No upstream
ticket was found for the missing deadline.

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/psycopg_pool/half_open_no_deadline.py

Recorded output (psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15, embedded Toxiproxy;
2026-12-06; long lines folded):

    psycopg 3.3.9, psycopg_pool 3.3.3, server 15.18, toxiproxy embedded; pool timeout 1.0 s
    1. check=check_connection, pid 27158 idle in the pool; the link goes half-open
         3 s after getconn(): still blocked; server: pid 27158 'idle'
        10 s after getconn(): still blocked; server: pid 27158 'idle'
      link healed after 10.0 s: getconn() raised psycopg_pool.PoolTimeout: couldn't get a
          connection after 1.00 sec 0.00 s later
    2. no check, pid 28611 idle in the pool; the link goes half-open
         getconn() returned after 0.00 s
         3 s after getconn() + SELECT 1: still blocked; server: pid 28611 'idle'
        10 s after getconn() + SELECT 1: still blocked; server: pid 28611 'idle'
      link healed after 10.0 s: getconn() + SELECT 1 raised psycopg.OperationalError: consuming
          input failed: server closed the connection unexpectedly 0.00 s later
    3. a request holds pid 28816 with an uncommitted INSERT; the link goes half-open
         3 s after putconn(): still blocked; server: pid 28816 'idle in transaction'
        10 s after putconn(): still blocked; server: pid 28816 'idle in transaction'
      link healed after 10.0 s: putconn() returned 0.00 s later
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool
from psycopg_pool import ConnectionPool

from chaos.postgres import PostgresServer
from chaos.toxiproxy.harness import ToxiproxyServer

HALF_OPEN_FOR = 10.0
TIMEOUT = 1.0


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
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            outcome.append(f"raised {type(exc).__module__}.{type(exc).__name__}: {first_line}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for waited in (3.0, HALF_OPEN_FOR):
        thread.join(max(0.0, started + waited - time.monotonic()))
        with server.connect() as admin:
            row = admin.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
        blocked = "still blocked" if thread.is_alive() else f"done: {outcome}"
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
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    with PostgresServer() as server, ToxiproxyServer(prefer="embedded") as toxiproxy:
        proxy = toxiproxy.create_proxy("pg", f"{server.host}:{server.port}")
        host, _, port = proxy["listen"].rpartition(":")
        with server.connect(autocommit=True) as admin:
            admin.execute("CREATE TABLE t (x int)")
        conninfo = server.conninfo(
            host=host,
            port=int(port),
            connect_timeout=2,
            keepalives=1,
            keepalives_idle=1,
            keepalives_interval=1,
            keepalives_count=3,
            tcp_user_timeout=3000,
        )
        print(
            f"psycopg {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__}, "
            f"server {server.version}, toxiproxy {toxiproxy.kind}; pool timeout {TIMEOUT} s"
        )

        def new_pool(check: bool) -> ConnectionPool:
            pool = ConnectionPool(
                conninfo,
                min_size=1,
                max_size=1,
                timeout=TIMEOUT,
                kwargs={"autocommit": True},
                check=ConnectionPool.check_connection if check else None,
                open=True,
            )
            pool.wait()
            return pool

        with new_pool(check=True) as pool:
            with pool.connection() as conn:
                pid = conn.info.backend_pid
            print(f"1. check=check_connection, pid {pid} idle in the pool; the link goes half-open")
            blocked_while_half_open(
                toxiproxy, server, lambda: pool.putconn(pool.getconn()), "getconn()", pid
            )

        with new_pool(check=False) as pool:
            with pool.connection() as conn:
                pid = conn.info.backend_pid
            print(f"2. no check, pid {pid} idle in the pool; the link goes half-open")

            def first_query() -> None:
                conn = pool.getconn()
                print(f"     getconn() returned after {time.monotonic() - t0:.2f} s")
                try:
                    conn.execute("SELECT 1")
                finally:
                    pool.putconn(conn)

            t0 = time.monotonic()
            blocked_while_half_open(toxiproxy, server, first_query, "getconn() + SELECT 1", pid)

        with new_pool(check=False) as pool:
            conn = pool.getconn()
            pid = conn.info.backend_pid
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (1)")
            print(
                f"3. a request holds pid {pid} with an uncommitted INSERT; the link goes half-open"
            )
            blocked_while_half_open(toxiproxy, server, lambda: pool.putconn(conn), "putconn()", pid)


if __name__ == "__main__":
    main()
