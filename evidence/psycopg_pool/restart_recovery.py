"""Recovery after a fast server restart (and a crash) through bare psycopg_pool, with
``check=ConnectionPool.check_connection`` and without a check: caller errors, time to
the first success, and when ``getconn`` ran its checks. psycopg_pool's and psycopg's
own code only, no adapter.

Each round: a pool of N (``min_size = max_size = N``, ``kwargs={"autocommit": True}``,
``timeout = 10``) with every connection open and idle (``pool.wait()``), then
``pg_ctl stop -m fast`` + start on the same port (``PostgresServer.restart``, which
returns once the server accepts connections: "up") or a crash (a backend SIGKILLed: the
postmaster ends every session and recovers; ``PostgresServer.crash``), then requests one
after another (``getconn()``, ``SELECT 1``, ``putconn()``) until one succeeds. Counted:
the requests that failed, the milliseconds from up to the first success, when each
"connection failed check" happened (psycopg_pool's own INFO log) and when the server
authorized each new session (``log_connections``).

What it shows (psycopg_pool 3.3.3):

- with the check: no caller error, but the first success waits 2**(N-1) - 1 s for N
  dead pooled connections (1 s for 2, 3 s for 3, 7 s for 4), although each dead
  connection's replacement is open within milliseconds of its failed check (server
  log), then waits in the pool. The wait is not the pool's reconnection backoff
  (``_add_connection``'s ``AttemptWithBackoff``: the replacements connect at once): it is
  ``ConnectionPool._getconn_with_check_loop`` (``psycopg_pool/pool.py``). ``getconn``
  takes the pooled connections in order (the dead ones first: replacements are
  appended behind them), ``check_connection`` fails on each, and between failed
  checks the loop sleeps with ``AttemptWithBackoff`` (``psycopg_pool/base.py``:
  0 s after the first failure, then 1 s +-10 %, doubling: 2, 4, 8 s), capped by the
  ``getconn`` timeout. That sleep came with psycopg/psycopg PR #711 ("Respect getconn
  timeout with failed connection checks, delay checks with backoff", psycopg_pool
  3.2.1), the fix of issue #709 (a user check that always fails looped forever): it
  reuses the reconnection backoff policy to avoid a busy loop of checks, and does
  not tell a dead connection (which a new check would not revive) from a failing one.
  With 6 dead connections the sleeps (0+1+2+4+8 s) outlast a 10 s timeout: see
  ``evidence/django/restart_recovery.py`` (Django's pool with ``CONN_HEALTH_CHECKS``
  runs this same loop). No upstream ticket about the restart latency was found;
  fecgov/fecfile-web-api PR #2208 works around it (``min_size = 0``).
- a crash behaves the same (every session ends; the pooled connections are dead).
- without a check: each dead pooled connection fails one caller (``putconn`` sees it
  BAD and discards it, a worker opens a replacement), then requests succeed within
  milliseconds.

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/psycopg_pool/restart_recovery.py

Recorded output (psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15; 2026-12-06; 2 shared
cores; long lines folded):

    psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15.18; getconn timeout 10 s; 3 rounds each
    restart, pool of 2, check=check_connection: caller errors per round [0, 0, 0]; first success
        after 1089, 1031, 990 ms (median 1031)
        failed checks inside getconn, s after up, round 1: [0.0, 0.0]
        sessions opened after up (server log), round 1: +3 ms, +3 ms
    restart, pool of 3, check=check_connection: caller errors per round [0, 0, 0]; first success
        after 3225, 3155, 2992 ms (median 3155)
        failed checks inside getconn, s after up, round 1: [0.0, 0.0, 1.08]
        sessions opened after up (server log), round 1: +2 ms, +2 ms, +1077 ms
    restart, pool of 4, check=check_connection: caller errors per round [0, 0, 0]; first success
        after 6546, 6360, 7453 ms (median 6546)
        failed checks inside getconn, s after up, round 1: [0.0, 0.0, 0.94, 2.81]
        sessions opened after up (server log), round 1: +2 ms, +2 ms, +941 ms, +2808 ms
    restart, pool of 2, check=None: caller errors per round [2, 2, 2]; first success after 5, 4,
        4 ms (median 4)
        6 x AdminShutdown: terminating connection due to administrator command
        sessions opened after up (server log), round 1: +4 ms, +6 ms
    restart, pool of 4, check=None: caller errors per round [4, 4, 4]; first success after 5, 4,
        5 ms (median 5)
        12 x AdminShutdown: terminating connection due to administrator command
        sessions opened after up (server log), round 1: +3 ms, +3 ms, +5 ms, +6 ms
    crash, pool of 2, check=check_connection: caller errors per round [0, 0, 0]; first success
        after 942, 1017, 940 ms (median 942)
        failed checks inside getconn, s after up, round 1: [0.0, 0.0]
        sessions opened after up (server log), round 1: +2 ms, +2 ms
    crash, pool of 2, check=None: caller errors per round [2, 2, 2]; first success after 3, 5, 3
        ms (median 3)
        6 x OperationalError: consuming input failed: server closed the connection unexpec
        sessions opened after up (server log), round 1: +2 ms, +3 ms
"""

from __future__ import annotations

import collections
import datetime
import logging
import statistics
import time
from typing import Any

import psycopg
import psycopg_pool
from psycopg_pool import ConnectionPool

from chaos.postgres import PostgresServer

ROUNDS = 3
#: (fault, check, pool size): restart is ``pg_ctl stop -m fast`` + start; crash is a
#: SIGKILLed backend (the postmaster ends every session and recovers).
CASES = (
    ("restart", True, 2),
    ("restart", True, 3),
    ("restart", True, 4),
    ("restart", False, 2),
    ("restart", False, 4),
    ("crash", True, 2),
    ("crash", False, 2),
)
GIVE_UP = 30.0


class FailedChecks(logging.Handler):
    """Monotonic times of psycopg_pool's "connection failed check" log records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("connection failed check"):
            self.at.append(time.monotonic())


def connections_opened(pg: PostgresServer, offset: int, up: float) -> list[int]:
    """Milliseconds after ``up`` (wall clock) of each session the server authorized."""
    found = []
    for line in pg.log_path.read_text(errors="replace")[offset:].splitlines():
        if "connection authorized" in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
            at = stamp.replace(tzinfo=datetime.UTC).timestamp()
            if at >= up:  # not the harness's own readiness probe
                found.append(round((at - up) * 1000))
    return found


def one_round(pg: PostgresServer, size: int, check: bool, fault: str) -> dict[str, Any]:
    failed = FailedChecks()
    logger = logging.getLogger("psycopg.pool")
    logger.addHandler(failed)
    pool = ConnectionPool(
        pg.conninfo(connect_timeout=3),
        min_size=size,
        max_size=size,
        timeout=10,
        kwargs={"autocommit": True},
        check=ConnectionPool.check_connection if check else None,
        open=True,
    )
    try:
        pool.wait()
        offset = pg.log_path.stat().st_size
        pg.restart("fast") if fault == "restart" else pg.crash()
        up, up_wall = time.monotonic(), time.time()
        errors: collections.Counter[str] = collections.Counter()
        first = float("inf")
        while time.monotonic() - up < GIVE_UP:
            try:
                conn = pool.getconn()
            except Exception as exc:
                errors[f"{type(exc).__name__} (getconn): {str(exc)[:50]}"] += 1
                continue
            try:
                conn.execute("SELECT 1")
            except Exception as exc:
                errors[f"{type(exc).__name__}: {str(exc).strip()[:60]}"] += 1
                continue
            finally:
                pool.putconn(conn)
            first = (time.monotonic() - up) * 1000
            break
    finally:
        pool.close()
        logger.removeHandler(failed)
    return {
        "errors": errors,
        "first_ms": first,
        "checks_s": [round(at - up, 2) for at in failed.at],
        "opened_ms": connections_opened(pg, offset, up_wall),
    }


def main() -> None:
    logging.getLogger("psycopg.pool").setLevel(logging.INFO)
    logging.getLogger("psycopg.pool").propagate = False
    log = {"log_connections": "on", "log_line_prefix": "%m [%p] ", "log_timezone": "UTC"}
    with PostgresServer(settings=log) as pg:
        print(
            f"psycopg {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__}, "
            f"Postgres {pg.version}; getconn timeout 10 s; {ROUNDS} rounds each"
        )
        for fault, check, size in CASES:
            results = [one_round(pg, size, check, fault) for _ in range(ROUNDS)]
            checked = "check_connection" if check else "None"
            name = f"{fault}, pool of {size}, check={checked}"
            times = [r["first_ms"] for r in results]
            failed = [sum(r["errors"].values()) for r in results]
            print(
                f"{name}: caller errors per round {failed}; "
                f"first success after {', '.join(f'{t:.0f}' for t in times)} ms "
                f"(median {statistics.median(times):.0f})"
            )
            kinds: collections.Counter[str] = sum(
                (r["errors"] for r in results), collections.Counter()
            )
            for kind, n in kinds.items():
                print(f"    {n} x {kind}")
            if check:
                print(
                    "    failed checks inside getconn, s after up, round 1: "
                    f"{results[0]['checks_s']}"
                )
            print(
                "    sessions opened after up (server log), round 1: "
                f"{', '.join(f'+{ms} ms' for ms in results[0]['opened_ms'])}"
            )


if __name__ == "__main__":
    main()
