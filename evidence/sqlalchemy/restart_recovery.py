"""Recovery after a fast Postgres restart: SQLAlchemy's QueuePool with pool_pre_ping on and off.

A pool of 4, every connection opened and idle in the pool; ``pg_ctl restart -m fast``
(every session terminated, the server up again). Then requests, one after another as a
single-threaded service would serve them (``engine.connect()``, ``SELECT 1``,
``conn.close()``): the errors callers saw and the time from "the server accepts
connections again" to the first request that succeeded; then 8 more requests, to count
errors from connections still stale after the first success.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/sqlalchemy/restart_recovery.py [runs]``

Output (2026-12-06, 5 runs each, 2 cores shared with other work)::

    sqlalchemy 2.1.9, psycopg 3.3.9, server 15.18, pool of 4 (all idle at the restart)
    pool_pre_ping=True : caller errors 0 0 0 0 0; first success after 8.0 10.6 3.7 4.0 4.2 ms
      (median 4.2); errors later 0 0 0 0 0
    pool_pre_ping=False: caller errors 1 1 1 1 1; first success after 4.2 4.0 4.2 4.3 4.1 ms
      (median 4.2); errors later 0 0 0 0 0
      first error: OperationalError (sqlalchemy.exc, from psycopg.AdminShutdown): terminating
      connection due to administrator command

(Long lines folded here.)

Without the pre-ping, the first request gets the stale connection's error; SQLAlchemy then
sees a disconnect and invalidates the whole pool (``Pool._invalidate``: every
connection older than that moment is replaced at its next checkout), so one error in
all, not one per pooled connection. With the pre-ping the checkout pings, finds the
connection dead, invalidates the pool the same way and reconnects at once: no error,
no backoff (QueuePool connects on demand; psycopg_pool's reconnect backoff is what made
its recovery take seconds).
"""

from __future__ import annotations

import statistics
import sys
import time

import psycopg
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from chaos.postgres import PostgresServer

POOL = 4
AFTER = 8


def one_run(server: PostgresServer, pre_ping: bool) -> tuple[int, float, int, str]:
    url = URL.create(
        "postgresql+psycopg",
        username=server.superuser,
        host=server.host,
        port=server.port,
        database=server.dbname,
    )
    engine = create_engine(
        url,
        poolclass=QueuePool,
        pool_size=POOL,
        max_overflow=0,
        pool_timeout=5,
        pool_pre_ping=pre_ping,
        connect_args={"connect_timeout": 5},
    )
    try:
        held = [engine.connect() for _ in range(POOL)]
        for conn in held:
            conn.exec_driver_sql("SELECT 1").all()
            conn.close()
        server.restart("fast")
        up = time.monotonic()
        errors, first_error, recovered_ms = 0, "", None
        while recovered_ms is None:
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1").all()
                recovered_ms = (time.monotonic() - up) * 1000
            except sqlalchemy.exc.DBAPIError as exc:
                errors += 1
                if not first_error:
                    cause = type(exc.orig).__module__.split(".")[0] + "." + type(exc.orig).__name__
                    message = " ".join(str(exc.orig).split())[:90]
                    first_error = f"{type(exc).__name__} (sqlalchemy.exc, from {cause}): {message}"
                if time.monotonic() - up > 30:
                    raise
        later = 0
        for _ in range(AFTER):
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1").all()
            except sqlalchemy.exc.DBAPIError:
                later += 1
        return errors, recovered_ms, later, first_error
    finally:
        engine.dispose()


def main(runs: int) -> None:
    with PostgresServer() as server:
        print(
            f"sqlalchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
            f"server {server.version}, pool of {POOL} (all idle at the restart)"
        )
        for pre_ping in (True, False):
            results = [one_run(server, pre_ping) for _ in range(runs)]
            errors = " ".join(str(r[0]) for r in results)
            times = " ".join(f"{r[1]:.1f}" for r in results)
            later = " ".join(str(r[2]) for r in results)
            median = statistics.median(r[1] for r in results)
            print(
                f"pool_pre_ping={pre_ping!s:<5}: caller errors {errors}; first success after "
                f"{times} ms (median {median:.1f}); errors later {later}"
            )
            first = next((r[3] for r in results if r[3]), "")
            if first:
                print(f"  first error: {first}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
