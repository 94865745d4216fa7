"""Checkouts per second: checkout + ``SELECT 1`` + return.

Compares plain_pool with its session reset, plain_pool without it (the
NoResetOnReturn variant: the reset's price) and bare psycopg_pool, on 1 and
8 threads with a pool of 4. Spec figures on the reference machine: bare
~6-7k/s on 1 thread, 9k+ on 8; a naive reset run by the pool's worker 3-4k/s.

    PYTHONPATH=src:. python bench/bench_reset.py [--seconds 3] [--json] [--dsn ...]

Without ``--dsn`` a throwaway server is started with chaos.postgres.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from plain_pool import DatabaseWrapper, close_all_pools
from plain_pool.variants import VARIANTS

POOL = {"min_size": 4, "max_size": 4, "timeout": 30}


def run_threads(threads: int, seconds: float, make_op: Callable[[], Callable[[], None]]) -> float:
    """Run ``op`` in ``threads`` threads for ``seconds``; return operations per second."""
    counts = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        op = make_op()
        op()  # warm up
        start.wait()
        n = 0
        while not stop.is_set():
            op()
            n += 1
        counts[i] = n

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


def plain_pool_op(settings: dict[str, Any], cls: type[DatabaseWrapper], alias: str):
    def make() -> Callable[[], None]:
        db = cls(settings, alias=alias)

        def op() -> None:
            db.cursor().execute("SELECT 1")
            db.close()

        return op

    return make


def bare_op(pool: ConnectionPool):
    def make() -> Callable[[], None]:
        def op() -> None:
            conn = pool.getconn()
            conn.execute("SELECT 1")
            pool.putconn(conn)

        return op

    return make


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[dict[str, Any]]:
    if dsn:
        yield conninfo_to_dict(dsn)
        return
    from chaos.postgres import PostgresServer

    with PostgresServer() as srv:
        yield conninfo_to_dict(srv.conninfo())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--dsn", default=None, help="an existing server (libpq conninfo)")
    args = parser.parse_args(argv)

    results: list[dict[str, Any]] = []
    with server(args.dsn) as params:
        settings = {
            "POSTGRES_HOST": str(params.get("host", "")),
            "POSTGRES_PORT": int(params.get("port", 5432)),
            "POSTGRES_DATABASE": params.get("dbname", "postgres"),
            "POSTGRES_USER": params.get("user", ""),
            "POSTGRES_PASSWORD": params.get("password", ""),
            "POSTGRES_POOL": POOL,
        }
        for threads in args.threads:
            for name, make in (
                ("plain_pool (reset)", plain_pool_op(settings, DatabaseWrapper, "bench")),
                (
                    "plain_pool (no reset)",
                    plain_pool_op(settings, VARIANTS["NoResetOnReturn"], "bench-noreset"),
                ),
            ):
                rate = run_threads(threads, args.seconds, make)
                results.append({"backend": name, "threads": threads, "per_second": round(rate)})
                close_all_pools()
            conninfo = " ".join(f"{k}={v}" for k, v in params.items() if v not in (None, ""))
            with ConnectionPool(conninfo, kwargs={"autocommit": True}, open=True, **POOL) as pool:
                pool.wait()
                rate = run_threads(threads, args.seconds, bare_op(pool))
            results.append(
                {"backend": "bare psycopg_pool", "threads": threads, "per_second": round(rate)}
            )

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'backend':<24}{'threads':>8}{'checkouts/s':>14}")
        for r in results:
            print(f"{r['backend']:<24}{r['threads']:>8}{r['per_second']:>14,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
