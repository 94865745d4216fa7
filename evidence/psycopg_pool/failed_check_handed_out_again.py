"""A connection whose user ``check`` failed goes back to the pool, and the same
``getconn()`` can hand it out: psycopg_pool's and psycopg's own code only, no adapter.

psycopg_pool's docs ("Connections life cycle"): "if a ``check`` callback was provided, it
is called on the connection before passing the connection to the client. If the check
fails, a new connection will be obtained." The code (``_getconn_with_check_loop`` in
``psycopg_pool/pool.py``, 3.3.3) returns the connection that failed the check with
``_putconn(conn, from_getconn=True)``; ``_return_connection`` rolls it back
(``_reset_connection``: psycopg_pool 3.2.6, "Reset transaction status of connection
failing check", psycopg/psycopg#1014) and discards it only if libpq knows it is broken
(``transaction_status == UNKNOWN``); otherwise ``_add_to_pool`` puts it back, behind the
others. The loop then sleeps (``AttemptWithBackoff``: 0 s after the first failure, then
about 1, 2, 4 s; psycopg/psycopg PR #711, the fix of #709) and takes the next pooled
connection. So "a new connection" means "another checkout": with a pool of one it is the
very session the check rejected, and with N connections it comes round again after the
others. A check that rejects a session for its own reasons (a ``ValueError``: the session
is up, but not in the state the application needs) is not a discard. Whether that is a
defect or only the docs' wording is for psycopg_pool to say; no ticket asks for it.

The program: a pool of one (``min_size = max_size = 1``, ``timeout = 5``) and a check
that raises ``ValueError`` once, then passes; ``getconn()``; then a check that rejects
every connection with pid P until the timeout. The server's ``log_connections`` counts
the sessions opened (a discard would open a replacement).

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/psycopg_pool/failed_check_handed_out_again.py

Recorded output (psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15; 2026-12-06):

    psycopg 3.3.9, psycopg_pool 3.3.3, 15.18
    1. check fails once (ValueError), then passes
       check calls (s, pid, result): [(0.0, 26954, 'fail'), (0.0, 26954, 'pass')]
       getconn() handed out pid 26954: the session that failed its check
       sessions the server opened for the pool: 1
    2. check rejects pid 26954 every time (pool timeout 5 s)
       check calls (s, pid, result): [(0.0, 26954, 'fail'), (0.0, 26954, 'fail'), (1.09, 26954,
           'fail'), (3.26, 26954, 'fail')]
       getconn(): PoolTimeout: couldn't get a connection after 5.00 sec
       sessions the server opened for the pool: 1
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
import psycopg_pool
from psycopg_pool import ConnectionPool

from chaos.postgres import PostgresServer


class Check:
    """A user ``check``: fails the first ``fail_first`` calls (or every call on ``reject_pid``)."""

    def __init__(self, fail_first: int = 0, reject_pid: int | None = None) -> None:
        self.fail_first = fail_first
        self.reject_pid = reject_pid
        self.calls: list[tuple[float, int, str]] = []
        self.t0 = time.monotonic()

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        pid = conn.info.backend_pid
        fail = len(self.calls) < self.fail_first or pid == self.reject_pid
        self.calls.append((round(time.monotonic() - self.t0, 2), pid, "fail" if fail else "pass"))
        if fail:
            raise ValueError(f"the application rejects session {pid}")


def sessions_opened(pg: PostgresServer, offset: int) -> int:
    text = pg.log_path.read_text(errors="replace")[offset:]
    return text.count("connection authorized")


def main() -> None:
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    with PostgresServer(settings={"log_connections": "on"}) as pg:
        print(
            f"psycopg {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__}, {pg.version}"
        )
        check = Check(fail_first=1)
        offset = pg.log_path.stat().st_size
        with ConnectionPool(
            pg.conninfo(), min_size=1, max_size=1, timeout=5, check=check, open=True
        ) as pool:
            pool.wait()
            check.t0 = time.monotonic()
            conn = pool.getconn()
            pid = conn.info.backend_pid
            pool.putconn(conn)
            print("1. check fails once (ValueError), then passes")
            print(f"   check calls (s, pid, result): {check.calls}")
            print(f"   getconn() handed out pid {pid}: the session that failed its check")
            print(f"   sessions the server opened for the pool: {sessions_opened(pg, offset)}")

            check.calls.clear()
            check.reject_pid = pid
            check.t0 = time.monotonic()
            try:
                pool.getconn()
            except psycopg_pool.PoolTimeout as exc:
                outcome = f"PoolTimeout: {exc}"
            else:
                outcome = "a connection"
            print(f"2. check rejects pid {pid} every time (pool timeout 5 s)")
            print(f"   check calls (s, pid, result): {check.calls}")
            print(f"   getconn(): {outcome}")
            print(f"   sessions the server opened for the pool: {sessions_opened(pg, offset)}")


if __name__ == "__main__":
    main()
