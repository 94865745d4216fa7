"""A server login that fails during a Postgres restart locks PgBouncer's clients out for
``server_login_retry`` (15 s), whichever app, pool or backoff is in front of it.

client (bare psycopg, no app pool) -> PgBouncer 1.18, transaction mode, shipped defaults
(``server_login_retry = 15``) -> Toxiproxy -> Postgres. Each row warms one server
connection (idle in PgBouncer's pool), restarts Postgres fast (``stop -m fast``, start on
the same port; "up" = the server accepts connections again), runs ``SELECT 1`` at up on a
client logged in before the restart (an app pool's idle connection), then opens a new
client every 0.05 s (plain_pool's reconnect cadence) or every 1 s (psycopg_pool's first
backoff step) until ``SELECT 1`` works. Only WHEN PgBouncer starts a server login,
relative to the restart, changes between rows:

- after up (nothing reaches PgBouncer during the restart): nothing happens;
- in flight when the shutdown begins: one client's ``pg_sleep`` holds the idle server
  connection, a second client's ``SELECT 1`` makes PgBouncer open another one, and a
  300 ms latency toxic on the server hop (upstream only) holds its startup packet, so
  the fast shutdown comes while that login is in flight (``sv_login`` = 1, asserted):
  the backend dies before it answers, "server conn crashed? (age=0s)": the matrix flip;
- while the server is down (between the stop and the start): a client's ``SELECT 1``
  makes PgBouncer connect; the proxy accepts, its upstream is refused.

PgBouncer's ``disconnect_server`` counts a server connection that ends in state
``SV_LOGIN`` as a failed login (``last_login_failed``, ``last_connect_failed``). From
then on ``check_fast_fail`` refuses every new client login, and drops a logged-in client
whose query finds no idle server connection ("server login has been failing, try again
later (server_login_retry)", 08P01), and ``launch_new_connection`` starts no server
login until ``server_login_retry`` after the failed one; a client that was already
waiting keeps waiting. The server is back within ~0.1 s; the first success comes 15 s
after the failed login, at either client cadence: the app's reconnect timing neither
triggers the lockout nor shortens it, a server login during the restart does.

In the matrix's ``restart`` probe that login came from plain_pool's give-back, which
leaves its ``DISCARD ALL`` in flight: the probe's two warm-up requests give back and the
restart follows within a millisecond; when the second reset reached PgBouncer while the
first held the only server connection, PgBouncer opened a second one at the restart's
instant (2 of 6 runs here, 3 of 6 when first seen; PgBouncer's log: "new connection to
server" 1 ms before Postgres's "received fast shutdown request", then "server conn
crashed? (age=0s)" or "login failed", then 15 s of refusals). psycopg_pool's putconn
and a per-request connection's close send nothing, so their columns never met the
window. The probe now waits for a settled PgBouncer before the fault
(``chaos.matrix.probes.settle_pooler``).

Run (from the repository root): ``PYTHONPATH=src:. .tox/matrix/bin/python
evidence/pgbouncer/restart_login_retry.py`` (about a minute).

Recorded output (PgBouncer 1.18.0, psycopg 3.3.9, Postgres 15; 2026-12-06; times from the
restart's SIGINT; long lines folded):

    PgBouncer 1.18.0, Postgres 15.18
    server login after up; a new client every 0.05 s:
      up +71 ms; first success 11 ms after up; 0 refused clients
      a client logged in before the restart, SELECT 1 at up: ok
      PgBouncer's server connections (its log):
        +1 ms got packet 'E' from server when not linked
        +2 ms closing because: server conn crashed? (age=0s)
        +76 ms new connection to server
    server login in flight; a new client every 0.05 s:
      up +79 ms; first success 14924 ms after up; 278 refused clients
        278 x server login has been failing, try again later (server_login_retry)
      PgBouncer just before the SIGINT (SHOW POOLS): {'cl_waiting': 1, 'sv_active': 1, 'sv_login':
          1}
      a client logged in before the restart, SELECT 1 at up: ProtocolViolation (08P01): server
          login has been failing, try again later (server_login_retry)
      the client in flight (pg_sleep): AdminShutdown (57P01): terminating connection due to
          administrator command after 0.1 s
      the client in flight (SELECT 1): ok after 15.0 s
      PgBouncer's server connections (its log):
        -54 ms new connection to server
        +0 ms closing because: server conn crashed? (age=0s)
        +4 ms closing because: server conn crashed? (age=0s)
        +14947 ms new connection to server
    server login while down; a new client every 0.05 s:
      up +87 ms; first success 15019 ms after up; 281 refused clients
        281 x server login has been failing, try again later (server_login_retry)
      a client logged in before the restart, SELECT 1 at up: ProtocolViolation (08P01): server
          login has been failing, try again later (server_login_retry)
      the client in flight (SELECT 1): ok after 15.0 s
      PgBouncer's server connections (its log):
        +2 ms got packet 'E' from server when not linked
        +2 ms closing because: server conn crashed? (age=0s)
        +11 ms new connection to server
        +11 ms closing because: server conn crashed? (age=0s)
        +15050 ms new connection to server
    server login while down; a new client every 1 s:
      up +92 ms; first success 15068 ms after up; 15 refused clients
        15 x server login has been failing, try again later (server_login_retry)
      a client logged in before the restart, SELECT 1 at up: ProtocolViolation (08P01): server
          login has been failing, try again later (server_login_retry)
      the client in flight (SELECT 1): ok after 15.1 s
      PgBouncer's server connections (its log):
        +1 ms got packet 'E' from server when not linked
        +1 ms closing because: server conn crashed? (age=0s)
        +10 ms new connection to server
        +11 ms closing because: server conn crashed? (age=0s)
        +15154 ms new connection to server

The idle server connection's end ("got packet 'E'": Postgres's 57P01 to an idle session)
is not a failed login; the row without a server login during the restart recovers in ms.
"""

from __future__ import annotations

import calendar
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg

from chaos.pgbouncer import PgBouncer
from chaos.postgres import PostgresServer
from chaos.toxiproxy.harness import ProxyHandle, ToxiproxyServer

#: How long the latency toxic holds the in-flight login's bytes (the shutdown comes first).
LOGIN_HELD_MS = 300
GIVE_UP_S = 25.0
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC")


def _query(bouncer: PgBouncer, sql: str = "SELECT 1") -> str:
    try:
        with bouncer.connect(prepare_threshold=None) as conn:
            conn.execute(sql)
        return "ok"
    except psycopg.Error as exc:
        return _reason(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1]
    return text.split("FATAL:", 1)[-1].strip()


def _in_thread(fn: Callable[[], str], out: dict[str, str], key: str) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        result = fn()
        out[key] = f"{result} after {time.monotonic() - started:.1f} s"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _run(conn: psycopg.Connection[Any], sql: str) -> Callable[[], str]:
    def run() -> str:
        try:
            conn.execute(sql)
            return "ok"
        except psycopg.Error as exc:
            return f"{type(exc).__name__} ({exc.sqlstate}): {_reason(exc)}"

    return run


def _first_success(bouncer: PgBouncer, up: float, every: float) -> tuple[Counter[str], float]:
    """New client connections every ``every`` s until SELECT 1 works: refusals, ms after up."""
    refused: Counter[str] = Counter()
    while time.monotonic() < up + GIVE_UP_S:
        outcome = _query(bouncer)
        if outcome == "ok":
            return refused, (time.monotonic() - up) * 1000
        refused[outcome] += 1
        time.sleep(every)
    raise RuntimeError(f"no success within {GIVE_UP_S} s: {dict(refused)}")


def _server_events(bouncer: PgBouncer, since_wall: float, zero: float | None = None) -> list[str]:
    """PgBouncer's log lines about server connections from ``since_wall`` on, in ms
    from ``zero`` (default ``since_wall``)."""
    zero = since_wall if zero is None else zero
    assert bouncer.log_path is not None
    events = []
    for line in bouncer.log_path.read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if not match or " S-0x" not in line:
            continue
        stamp = match.group(1)
        wall = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + float(stamp[19:])
        if wall < since_wall - 0.001:
            continue
        what = line.split("127.0.0.1:", 1)[-1].split(" ", 1)[-1]
        what = re.sub(r" \(from 127\.0\.0\.1:\d+\)", "", what)
        events.append(f"{(wall - zero) * 1000:+.0f} ms {what}")
    return events


def _pool(bouncer: PgBouncer) -> dict[str, int]:
    (pool,) = [p for p in bouncer.show("pools") if p["database"] == bouncer.dbname]
    return {k: int(pool[k]) for k in ("cl_waiting", "sv_active", "sv_login")}


def row(server: PostgresServer, proxy: ProxyHandle, when: str, every: float) -> None:
    with PgBouncer(
        server,
        pool_mode="transaction",
        pool_size=2,
        server_host=proxy.listen_host,
        server_port=proxy.listen_port,
    ) as bouncer:
        first = bouncer.connect(prepare_threshold=None)
        second = bouncer.connect(prepare_threshold=None)
        pooled = bouncer.connect(prepare_threshold=None)  # an app pool's idle connection
        first.execute("SELECT 1")  # one server connection, idle in PgBouncer's pool
        second.execute("SELECT 1")
        warm = time.time()
        held: dict[str, str] = {}
        before: dict[str, int] = {}
        threads = []
        if when == "in flight":
            threads.append(_in_thread(_run(first, "SELECT pg_sleep(1)"), held, "pg_sleep"))
            time.sleep(0.05)
            proxy.add_toxic("latency", stream="upstream", name="hold", latency=LOGIN_HELD_MS)
            threads.append(_in_thread(_run(second, "SELECT 1"), held, "SELECT 1"))
            time.sleep(0.05)
            before = _pool(bouncer)
            assert before["sv_login"] == 1, before  # the login is in flight: deterministic
        sigint = time.time()
        if when == "while down":
            server.stop("fast")
            stopped = time.time()
            threads.append(_in_thread(_run(first, "SELECT 1"), held, "SELECT 1"))
            deadline = time.monotonic() + 5
            while not any("closing" in e for e in _server_events(bouncer, stopped)):
                assert time.monotonic() < deadline, "PgBouncer did not try the server"
                time.sleep(0.01)
            server.start()
            up = server.wait_ready()
        else:
            up = server.restart("fast")
        up_wall = time.time() - (time.monotonic() - up)
        if when == "in flight":
            proxy.remove_toxic("hold")
        reused = _run(pooled, "SELECT 1")()
        refused, first_ms = _first_success(bouncer, up, every)
        for thread in threads:
            thread.join(GIVE_UP_S)
        for conn in (first, second, pooled):
            conn.close()
        print(
            f"server login {when}; a new client every {every:g} s:\n"
            f"  up {(up_wall - sigint) * 1000:+.0f} ms; first success {first_ms:.0f} ms after up;"
            f" {sum(refused.values())} refused clients"
            + "".join(f"\n    {n} x {why}" for why, n in refused.items())
        )
        if before:
            print(f"  PgBouncer just before the SIGINT (SHOW POOLS): {before}")
        print(f"  a client logged in before the restart, SELECT 1 at up: {reused}")
        for name, outcome in held.items():
            print(f"  the client in flight ({name}): {outcome}")
        print("  PgBouncer's server connections (its log):")
        for event in _server_events(bouncer, warm, zero=sigint):
            print(f"    {event}")


def main() -> None:
    with PostgresServer() as server, ToxiproxyServer() as toxiproxy:
        proxy = ProxyHandle.create(toxiproxy, f"{server.host}:{server.port}", "login_retry")
        try:
            with PgBouncer(server) as bouncer:
                print(f"PgBouncer {bouncer.version}, Postgres {server.version}")
            row(server, proxy, "after up", 0.05)
            row(server, proxy, "in flight", 0.05)
            row(server, proxy, "while down", 0.05)
            row(server, proxy, "while down", 1.0)
        finally:
            proxy.delete()


if __name__ == "__main__":
    main()
