"""Too many clients for ``max_client_conn``: PgBouncer refuses the extra login at once
and the clients already in are untouched; an app pool in front turns the refusal into a
PoolTimeout at its timeout that does not say why.

PgBouncer 1.18, transaction mode, ``default_pool_size = 1``, ``max_client_conn = 3``.
Three bare psycopg clients log in and stay connected (idle); a fourth logs in. PgBouncer
checks the limit when a startup packet arrives (client.c: ``get_active_client_count() >
cf_max_client_conn``, the newcomer included), so the refusal comes at login, before
authentication, never at a query. libpq keeps only the text: psycopg's
``OperationalError`` has no sqlstate; the same login sent by hand shows the
ErrorResponse (08P01, not Postgres's 53300 too_many_connections). A login to the admin
console (database ``pgbouncer``) is never refused but counts: an open console takes a
slot from the app. Then an app pool of up to 4 (``min_size = 1``, ``timeout = 2``), ready
(one idle connection), with two bare clients on the other two slots: (a)
``psycopg_pool.ConnectionPool``, (b) plain_pool's ``DatabaseWrapper``; one checkout takes
the idle connection, a second needs a new login. Then a bare client closes and a
checkout runs again. "refused logins" counts PgBouncer's log lines ``closing because: no
more connections allowed (max_client_conn)``: psycopg_pool retries the login after 1 s,
then 2 s (``AttemptWithBackoff``; ``reconnect_timeout`` 300 s), plain_pool every 50 ms
(``RecoveringConnectionPool``). The pools are made ready first because a checkout on a
pool still filling starts a second login, and two logins racing for the last slot were
both refused (each counts the other; seen once while writing this).

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/pgbouncer/max_client_conn.py``

Recorded output (2026-12-06), the third of three runs; the other two agreed except in
the timings that depend on a backoff: psycopg_pool's recovery 1.30 and 0.72 s (its 1 s and
2 s delays carry 10 % jitter), plain_pool's 41 and 40 refused logins, recovery 0.05 s:

    PgBouncer 1.18.0, Postgres 15.18, psycopg 3.3.9, psycopg_pool 3.3.3; max_client_conn 3
    client 4, 3 holding: refused at login after 0 ms
      psycopg: OperationalError, sqlstate None, 'no more connections allowed (max_client_conn)'
      on the wire: ErrorResponse FATAL 08P01 'no more connections allowed (max_client_conn)'
    the 3 holding clients, SELECT 1 after the refusals: ok
    admin console, 3 holding: logs in; SHOW LISTS used_clients 4
    one client closed, the console still open: a new client refused at login after 0 ms
      psycopg: OperationalError, sqlstate None, 'no more connections allowed (max_client_conn)'
    the console closed: a new client logs in, SELECT 1 ok (try 1)
    psycopg_pool: 2 bare clients + 1 checkout hold 3 of 3; a 2nd checkout:
      after 2.00 s: PoolTimeout, sqlstate None, "couldn't get a connection after 2.00 sec"
      __cause__ None, __context__ suppressed
      refused logins meanwhile: 2
      the 2 bare clients, SELECT 1: ok
      a bare client closed: a checkout gets a connection after 0.86 s
    plain_pool: 2 bare clients + 1 checkout hold 3 of 3; a 2nd checkout:
      after 2.00 s: PoolTimeout, sqlstate None, "couldn't get a connection after 2.00 sec"
      __cause__ None, __context__ suppressed
      refused logins meanwhile: 40
      the 2 bare clients, SELECT 1: ok
      a bare client closed: a checkout gets a connection after 0.01 s

Since 8a861f6 plain_pool's PoolTimeout names and chains the refused login (its pool
records its last failed connection attempt); the same run's plain_pool lines now read:

    plain_pool: 2 bare clients + 1 checkout hold 3 of 3; a 2nd checkout:
      after 2.00 s: PoolTimeout, sqlstate None, 'no more connections allowed (max_client_conn)'
      __cause__ OperationalError, sqlstate None, 'no more connections allowed
        (max_client_conn)', __context__ suppressed
      refused logins meanwhile: 41
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool

from chaos.pgbouncer import LOGIN_ROLE, PgBouncer
from chaos.postgres import PostgresServer
from plain_pool import DatabaseWrapper, close_all_pools

MAX_CLIENTS = 3
POOL_TIMEOUT = 2.0
REFUSED = "closing because: no more connections allowed (max_client_conn)"


def _what(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    text = text.split("FATAL:", 1)[-1].strip()
    return f"{type(exc).__name__}, sqlstate {getattr(exc, 'sqlstate', None)}, {text!r}"


def _chain(exc: BaseException) -> str:
    cause, context = exc.__cause__, exc.__context__
    shown = "suppressed" if exc.__suppress_context__ else (context and _what(context))
    return f"__cause__ {cause and _what(cause)}, __context__ {shown}"


def _refusals(bouncer: PgBouncer) -> int:
    assert bouncer.log_path is not None
    return bouncer.log_path.read_text(errors="replace").count(REFUSED)


def _login(bouncer: PgBouncer) -> tuple[psycopg.Connection[Any] | None, str]:
    """A bare client: logs in and runs SELECT 1, or the refusal and how long it took."""
    started = time.monotonic()
    try:
        conn = bouncer.connect(prepare_threshold=None)
    except psycopg.Error as exc:
        ms = (time.monotonic() - started) * 1000
        return None, f"refused at login after {ms:.0f} ms\n  psycopg: {_what(exc)}"
    conn.execute("SELECT 1")
    return conn, "logs in, SELECT 1 ok"


def _wire_error(bouncer: PgBouncer) -> str:
    """A raw startup packet's answer: the ErrorResponse fields libpq folds into its text."""
    params = f"user\0{LOGIN_ROLE}\0database\0{bouncer.dbname}\0\0".encode()
    data = b""
    with socket.create_connection((bouncer.host, bouncer.port), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        while chunk := sock.recv(4096):
            data += chunk
    assert data[:1] == b"E", data[:1]
    fields = dict((f[:1].decode(), f[1:].decode()) for f in data[5:].split(b"\0") if f)
    return f"ErrorResponse {fields['S']} {fields['C']} {fields['M']!r}"


def _used_clients(admin: psycopg.Connection[Any]) -> int:
    rows = admin.execute("SHOW LISTS").fetchall()
    return int(next(n for item, n in rows if item == "used_clients"))


def bare_clients(bouncer: PgBouncer) -> None:
    held = [bouncer.connect(prepare_threshold=None) for _ in range(MAX_CLIENTS)]
    print(f"client {MAX_CLIENTS + 1}, {MAX_CLIENTS} holding: {_login(bouncer)[1]}")
    print(f"  on the wire: {_wire_error(bouncer)}")
    for conn in held:
        conn.execute("SELECT 1")
    print(f"the {MAX_CLIENTS} holding clients, SELECT 1 after the refusals: ok")
    with bouncer.admin() as admin:
        used = _used_clients(admin)
        print(f"admin console, {MAX_CLIENTS} holding: logs in; SHOW LISTS used_clients {used}")
        held.pop().close()
        while _used_clients(admin) > MAX_CLIENTS:  # PgBouncer saw the close
            time.sleep(0.01)
        extra, outcome = _login(bouncer)
        print(f"one client closed, the console still open: a new client {outcome}")
    tries = 0
    while extra is None:  # the console's close reached PgBouncer: at once, or a try later
        extra, outcome = _login(bouncer)
        tries += 1
    print(f"the console closed: a new client {outcome} (try {tries})")
    for conn in [*held, extra]:
        conn.close()


def pool_row(
    name: str, bouncer: PgBouncer, checkout: Callable[[], Any], release: Callable[[Any], None]
) -> None:
    """The pool is ready (one idle connection); two bare clients take the other slots."""
    blockers = [bouncer.connect(prepare_threshold=None) for _ in range(MAX_CLIENTS - 1)]
    first = checkout()
    before = _refusals(bouncer)
    started = time.monotonic()
    try:
        second = checkout()
        raise AssertionError(f"{name}: the second checkout got {second}")
    except psycopg_pool.PoolTimeout as exc:
        elapsed = time.monotonic() - started
        print(f"{name}: 2 bare clients + 1 checkout hold 3 of 3; a 2nd checkout:")
        print(f"  after {elapsed:.2f} s: {_what(exc)}")
        print(f"  {_chain(exc)}")
    print(f"  refused logins meanwhile: {_refusals(bouncer) - before}")
    for conn in blockers:
        conn.execute("SELECT 1")
    print("  the 2 bare clients, SELECT 1: ok")
    blockers.pop().close()
    started = time.monotonic()
    second = checkout()
    elapsed = time.monotonic() - started
    print(f"  a bare client closed: a checkout gets a connection after {elapsed:.2f} s")
    for conn in (first, second):
        release(conn)
    for conn in blockers:
        conn.close()


def main() -> None:
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)  # its "error connecting"
    with PostgresServer() as server:

        def bouncer() -> PgBouncer:
            return PgBouncer(
                server, pool_mode="transaction", pool_size=1, max_client_conn=MAX_CLIENTS
            )

        with bouncer() as pgb:
            print(
                f"PgBouncer {pgb.version}, Postgres {server.version}, psycopg"
                f" {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__};"
                f" max_client_conn {MAX_CLIENTS}"
            )
            bare_clients(pgb)
        with bouncer() as pgb:
            kwargs = pgb.connect_kwargs(prepare_threshold=None, autocommit=True)
            with psycopg_pool.ConnectionPool(
                "", kwargs=kwargs, min_size=1, max_size=4, timeout=POOL_TIMEOUT
            ) as pool:
                pool.wait()  # ready: the first checkout takes it, no grow
                pool_row("psycopg_pool", pgb, pool.getconn, pool.putconn)
        with bouncer() as pgb:
            settings = {
                "POSTGRES_HOST": pgb.host,
                "POSTGRES_PORT": pgb.port,
                "POSTGRES_DATABASE": pgb.dbname,
                "POSTGRES_USER": LOGIN_ROLE,
                "POSTGRES_PASSWORD": pgb.connect_kwargs()["password"],
                "POSTGRES_POOL": {"min_size": 1, "max_size": 4, "timeout": POOL_TIMEOUT},
            }

            def checkout() -> DatabaseWrapper:
                db = DatabaseWrapper(settings, alias="max-client-conn")
                db.ensure_connection()
                return db

            try:
                DatabaseWrapper(settings, alias="max-client-conn").pool.open(wait=True)
                pool_row("plain_pool", pgb, checkout, DatabaseWrapper.close)
            finally:
                close_all_pools()


if __name__ == "__main__":
    main()
