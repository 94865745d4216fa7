"""Benchmark the fault proxy against a direct Postgres connection.

Measures, direct and through the proxy: the ``select 1`` round trip (p50,
p99 and the difference the proxy adds), bulk throughput (COPY of ~22 MB and a
200 000-row text result), connect time, and how accurately a 20 ms latency
toxic shows on ``select 1``.

    PYTHONPATH=src:. python bench/bench_proxy.py [--dsn "host=... port=..."] [--json out.json]

Without ``--dsn`` it starts a private Postgres (:class:`chaos.postgres.PostgresServer`).
The proxy is the one :class:`chaos.toxiproxy.harness.ToxiproxyServer` picks
(embedded unless ``TOXIPROXY_URL`` is set or ``toxiproxy-server`` is on PATH).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from chaos.toxiproxy.harness import ProxyHandle, ToxiproxyServer  # noqa: E402

BULK_ROWS = 200_000
COPY_SQL = "COPY (SELECT repeat('x', 100) || g FROM generate_series(1, {rows}) g) TO STDOUT"
ROWS_SQL = "SELECT g::text FROM generate_series(1, {rows}) g"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_select1(conninfo: str, n: int) -> list[float]:
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
        for _ in range(50):
            cur.execute("select 1")
            cur.fetchone()
        out = []
        for _ in range(n):
            start = time.perf_counter()
            cur.execute("select 1")
            cur.fetchone()
            out.append(time.perf_counter() - start)
    return out


def time_copy(conninfo: str, rows: int) -> tuple[float, int]:
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
        nbytes = 0
        start = time.perf_counter()
        with cur.copy(COPY_SQL.format(rows=rows)) as copy:
            for data in copy:
                nbytes += len(data)
        return time.perf_counter() - start, nbytes


def time_rows(conninfo: str, rows: int) -> float:
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        cur.execute(ROWS_SQL.format(rows=rows))
        assert len(cur.fetchall()) == rows
        return time.perf_counter() - start


def time_connect(conninfo: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        psycopg.connect(conninfo, autocommit=True).close()
        out.append(time.perf_counter() - start)
    return out


def best_of(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


@contextlib.contextmanager
def postgres(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    from chaos.postgres import PostgresServer

    with PostgresServer() as server:
        yield server.conninfo()


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    extra = ["--no-uvloop"] if args.no_uvloop else []
    with postgres(args.dsn) as direct, ToxiproxyServer(extra_args=extra) as proxy_server:
        params = conninfo_to_dict(direct)
        host = params.get("host", "127.0.0.1")
        port = int(params.get("port", 5432))
        proxy = ProxyHandle.create(proxy_server, f"{host}:{port}", "bench_pg")
        proxied = make_conninfo(direct, host=proxy.listen_host, port=proxy.listen_port)
        results["proxy"] = proxy_server.describe()

        direct_rtt: list[float] = []
        proxy_rtt: list[float] = []
        for _ in range(args.rounds):  # interleaved so drift hits both alike
            direct_rtt += time_select1(direct, args.n)
            proxy_rtt += time_select1(proxied, args.n)
        for label, samples in (("direct", direct_rtt), ("proxy", proxy_rtt)):
            results[f"select1_{label}_p50_us"] = percentile(samples, 0.5) * 1e6
            results[f"select1_{label}_p99_us"] = percentile(samples, 0.99) * 1e6
        results["select1_added_p50_us"] = (
            results["select1_proxy_p50_us"] - results["select1_direct_p50_us"]
        )
        results["select1_added_p99_us"] = (
            results["select1_proxy_p99_us"] - results["select1_direct_p99_us"]
        )

        for label, dsn in (("direct", direct), ("proxy", proxied)):
            copy_times = [time_copy(dsn, BULK_ROWS) for _ in range(3)]
            seconds, nbytes = min(copy_times)
            results[f"copy_{label}_MBps"] = nbytes / seconds / 1e6
            results[f"rows_{label}_s"] = best_of(lambda d=dsn: time_rows(d, BULK_ROWS), 3)
            results[f"connect_{label}_p50_ms"] = statistics.median(time_connect(dsn, 30)) * 1e3
        results["copy_bytes"] = nbytes
        results["copy_ratio"] = results["copy_proxy_MBps"] / results["copy_direct_MBps"]
        results["rows_ratio"] = results["rows_direct_s"] / results["rows_proxy_s"]

        proxy.add_toxic("latency", latency=20)
        toxic = time_select1(proxied, 100)
        results["latency20_p50_ms"] = percentile(toxic, 0.5) * 1e3
        results["latency20_p99_ms"] = percentile(toxic, 0.99) * 1e3
        proxy.delete()
    return results


def print_table(r: dict[str, Any]) -> None:
    print(r["proxy"])
    rows = [
        (
            "select 1 p50 (us)",
            r["select1_direct_p50_us"],
            r["select1_proxy_p50_us"],
            f"+{r['select1_added_p50_us']:.0f} us",
        ),
        (
            "select 1 p99 (us)",
            r["select1_direct_p99_us"],
            r["select1_proxy_p99_us"],
            f"+{r['select1_added_p99_us']:.0f} us",
        ),
        (
            "COPY throughput (MB/s)",
            r["copy_direct_MBps"],
            r["copy_proxy_MBps"],
            f"{r['copy_ratio']:.0%} of direct",
        ),
        (
            f"{BULK_ROWS} text rows (s)",
            r["rows_direct_s"],
            r["rows_proxy_s"],
            f"{r['rows_ratio']:.0%} of direct speed",
        ),
        ("connect p50 (ms)", r["connect_direct_p50_ms"], r["connect_proxy_p50_ms"], ""),
        ("20 ms latency toxic p50 / p99 (ms)", r["latency20_p50_ms"], r["latency20_p99_ms"], ""),
    ]
    print(f"{'':38} {'direct':>10} {'proxy':>10}  note")
    for label, a, b, note in rows:
        print(f"{label:38} {a:10.2f} {b:10.2f}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="libpq conninfo of an existing Postgres")
    parser.add_argument("--n", type=int, default=2000, help="select 1 per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-uvloop", action="store_true", help="embedded server on stock asyncio")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
