"""A half-open server hop behind PgBouncer: the client's query waits until the link heals.

client -> PgBouncer -> Toxiproxy -> Postgres. The client's own link (to PgBouncer) is
healthy; between PgBouncer and Postgres a ``timeout`` toxic with ``timeout = 0`` drops
every byte and never closes (what the matrix's ``half_open`` row injects). PgBouncer's
defaults: ``query_timeout = 0`` (off), ``server_check_delay = 30`` (an idle server
connection is only re-checked after 30 s), kernel TCP keepalives (hours). The client uses
the harness's chaos bounds (connect_timeout 3 s, keepalives 1 s x 3, tcp_user_timeout
3 s): they guard the client's hop, which is fine.

For each mode, the program warms one server connection, adds the toxic, sends
``SELECT 1`` from a new client and measures when it returns; the toxic is removed after
6 s. Then the same with ``query_timeout = 2`` in pgbouncer.ini: PgBouncer ends the
query itself (and the client's session) after 2 s.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/pgbouncer/half_open_server_hop.py``

Recorded output (PgBouncer 1.18.0, psycopg 3.3.9, Postgres 15; 2026-12-06):

    PgBouncer 1.18.0 session:
      ProtocolViolation: server conn crashed? after 6.0 s (after the heal)
    PgBouncer 1.18.0 transaction:
      ProtocolViolation: server conn crashed? after 6.0 s (after the heal)
    PgBouncer 1.18.0 statement:
      ProtocolViolation: server conn crashed? after 6.0 s (after the heal)
    PgBouncer 1.18.0 transaction, query_timeout = 2:
      ProtocolViolation: query timeout after 2.3 s (before the heal)

The heal closes the connections the toxic held: PgBouncer then reports the server
connection as crashed. Without query_timeout nothing bounds the wait but the heal.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from chaos.faults.connect import CHAOS_TIMEOUTS
from chaos.pgbouncer import PgBouncer
from chaos.postgres import PostgresServer
from chaos.toxiproxy.harness import ProxyHandle, ToxiproxyServer

HEAL_AFTER_S = 6.0


def probe(bouncer: PgBouncer, proxy: ProxyHandle) -> str:
    kwargs: dict[str, Any] = {**CHAOS_TIMEOUTS.connect_kwargs(), "prepare_threshold": None}
    kwargs.pop("options")
    with bouncer.connect(**kwargs) as warm:
        warm.execute("SELECT 1")  # a server connection in PgBouncer's pool, idle
    proxy.add_toxic("timeout", stream="downstream", name="ho_down", timeout=0)
    proxy.add_toxic("timeout", stream="upstream", name="ho_up", timeout=0)
    timer = threading.Timer(HEAL_AFTER_S, proxy.reset)
    timer.start()
    started = time.monotonic()
    try:
        with bouncer.connect(**kwargs) as conn:
            conn.execute("SELECT 1")
        outcome = "SELECT 1 returned"
    except psycopg.Error as exc:
        outcome = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}"
    took = time.monotonic() - started
    timer.join()
    healed = "after the heal" if took >= HEAL_AFTER_S else "before the heal"
    return f"{outcome} after {took:.1f} s ({healed})"


def main() -> None:
    with PostgresServer() as server, ToxiproxyServer() as toxiproxy:
        for mode, settings in (
            ("session", {}),
            ("transaction", {}),
            ("statement", {}),
            ("transaction", {"query_timeout": 2}),
        ):
            proxy = ProxyHandle.create(toxiproxy, f"{server.host}:{server.port}", f"ho_{mode}")
            try:
                with PgBouncer(
                    server,
                    pool_mode=mode,
                    server_host=proxy.listen_host,
                    server_port=proxy.listen_port,
                    settings=settings,
                ) as bouncer:
                    extra = ", query_timeout = 2" if settings else ""
                    print(f"PgBouncer {bouncer.version} {mode}{extra}:\n  {probe(bouncer, proxy)}")
            finally:
                proxy.delete()


if __name__ == "__main__":
    main()
