"""What pooling is worth: connect-per-request against plain_pool, at emulated round trips.

Two ways to serve a request that runs ``SELECT 1``, one thread:

- ``connect``: a new psycopg connection per request (TLS, ``sslmode=require``,
  scram-sha-256), ``SELECT 1``, close - what Django does with
  ``CONN_MAX_AGE=0``;
- ``pooled``: ``plain_pool.DatabaseWrapper`` with ``POSTGRES_POOL`` (same
  login, same TLS settings): checkout, ``SELECT 1``, return (with its reset).

Both go to one throwaway Postgres (``PostgresServer(tls=True)``: a certificate
made at start, a role that may log in only over TLS with scram-sha-256)
through the embedded fault proxy, one proxy per round trip time (RTT). The
RTT is emulated by one ``latency`` toxic on the downstream (server to client)
direction: a toxic delays every chunk of its own direction, so a
request/response exchange waits for it once per round trip, and one toxic of
R ms adds R ms to each round trip (the same toxic on both directions would add
2R). The proxy does not delay the TCP handshake (toxics act on the byte
stream), so a real network would charge each new connection one more RTT than
this does. The RTT obtained is measured on a ``SELECT 1`` through each proxy
and reported next to the asked one. RTT 0 is the proxy without a toxic.

Rounds are interleaved (every RTT and mode in each round, the order of the
modes alternating) so that machine noise hits every row alike; each figure is
the median over the rounds.

    PYTHONPATH=src:. python bench/bench_connect.py [--rtt 0 1 5 25] [--seconds 2]
        [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
from _common import POOL, bounded, pool_threads, sessions_left

from chaos.postgres import PostgresServer, TlsLogin
from chaos.toxiproxy.harness import ProxyHandle, ToxiproxyServer
from plain_pool import DatabaseWrapper, close_all_pools

DEFAULT_RTTS = (0, 1, 5, 25)
MODES = ("connect", "pooled")
#: Fewer requests than this in a measurement say nothing: it runs past --seconds.
MIN_REQUESTS = 3
MAX_RTT_MS = 2000
CONNECT_TIMEOUT = 10
#: Every connection the bench opens says so: the end-of-run check counts them.
APPLICATION_NAME = "bench_connect"


# --- arguments -----------------------------------------------------------------------


#: A round trip in whole milliseconds (Toxiproxy's latency is an integer of ms).
_rtt = bounded(int, "milliseconds", low=0, high=MAX_RTT_MS)
_seconds = bounded(float, "seconds", low=0.0, high=600.0, low_open=True)
_rounds = bounded(int, "rounds", low=1, high=100)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="connect = a new TLS + scram connection per request (Django CONN_MAX_AGE=0); "
        "pooled = plain_pool with POSTGRES_POOL. One thread, SELECT 1 per request.",
    )
    parser.add_argument(
        "--rtt",
        type=_rtt,
        nargs="+",
        default=list(DEFAULT_RTTS),
        metavar="MS",
        help="emulated round trips in ms (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=2.0,
        help="length of one measurement (one RTT, one mode, one round; default: %(default)s)",
    )
    parser.add_argument(
        "--rounds", type=_rounds, default=5, help="interleaved rounds (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    repeated = sorted({r for r in args.rtt if args.rtt.count(r) > 1})
    if repeated:
        parser.error(f"argument --rtt: {repeated[0]} given more than once")
    return args


# --- measuring -----------------------------------------------------------------------


@dataclass
class Target:
    """One RTT: its proxy, its pooled wrapper, what was measured through it."""

    rtt_ms: int
    proxy: ProxyHandle
    db: DatabaseWrapper
    measured_rtt_ms: float = math.nan
    per_second: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})


def connect_kwargs(login: TlsLogin, host: str, port: int) -> dict[str, Any]:
    """A Django-like connection: autocommit, TLS required (no verification), scram."""
    return {
        "host": host,
        "port": port,
        "dbname": "postgres",
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": APPLICATION_NAME,
        **login.connect_kwargs(),
    }


def plain_pool_settings(login: TlsLogin, host: str, port: int) -> dict[str, Any]:
    return {
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": port,
        "POSTGRES_DATABASE": "postgres",
        "POSTGRES_USER": login.user,
        "POSTGRES_PASSWORD": login.password,
        "POSTGRES_OPTIONS": {
            "sslmode": "require",
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": APPLICATION_NAME,
        },
        "POSTGRES_POOL": POOL,
    }


def connect_request(kwargs: dict[str, Any]) -> Callable[[], None]:
    def request() -> None:
        with psycopg.connect(**kwargs) as conn:
            conn.execute("SELECT 1").fetchone()

    return request


def pooled_request(db: DatabaseWrapper) -> Callable[[], None]:
    def request() -> None:
        db.cursor().execute("SELECT 1").fetchone()
        db.close()  # the request's end: back to the pool, reset included

    return request


def requests_per_second(request: Callable[[], None], seconds: float) -> float:
    """Run ``request`` back to back for ``seconds`` (at least MIN_REQUESTS times)."""
    request()  # warm up: caches, the pool's checkout path
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        request()
        count += 1
        now = time.perf_counter()
        if now >= deadline and count >= MIN_REQUESTS:
            return count / (now - start)


def select1_ms(kwargs: dict[str, Any], budget: float = 0.5) -> float:
    """Median ``SELECT 1`` round trip on one open connection, in ms."""
    with psycopg.connect(**kwargs) as conn:
        for _ in range(5):
            conn.execute("SELECT 1").fetchone()
        samples = []
        deadline = time.perf_counter() + budget
        while len(samples) < 20 or (time.perf_counter() < deadline and len(samples) < 1000):
            start = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def tls_in_use(login: TlsLogin, host: str, port: int) -> str:
    with psycopg.connect(**connect_kwargs(login, host, port)) as conn:
        row = conn.execute(
            "SELECT version, cipher, bits FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    if not row or not row[0]:
        raise RuntimeError("the benchmark's connections do not use TLS")
    return f"{row[0]} {row[1]}"


def versions(server: PostgresServer, proxy: ToxiproxyServer, tls: str) -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    libpq = psycopg.pq.version()
    return {
        "python": platform.python_version(),
        "postgres": server.version,
        "psycopg": psycopg.__version__,
        "libpq": f"{libpq // 10000}.{libpq % 10000}",
        "psycopg_pool": psycopg_pool.__version__,
        "plain_pool": dist("plain-pool"),
        "proxy": f"{proxy.kind} toxiproxy {proxy.version}",
        "tls": f"{tls}, RSA 2048 certificate",
        "auth": "scram-sha-256",
    }


@contextlib.contextmanager
def targets(
    proxy_server: ToxiproxyServer, server: PostgresServer, rtts: list[int]
) -> Iterator[list[Target]]:
    """A proxy (with its toxic) and a pooled wrapper per RTT; all closed on the way out."""
    assert server.tls is not None
    made: list[Target] = []
    try:
        for rtt in rtts:
            proxy = ProxyHandle.create(
                proxy_server, f"{server.host}:{server.port}", f"bench_connect_{rtt}ms"
            )
            settings = plain_pool_settings(server.tls, proxy.listen_host, proxy.listen_port)
            made.append(Target(rtt, proxy, DatabaseWrapper(settings, alias=f"bench-{rtt}ms")))
            if rtt:
                proxy.add_toxic("latency", stream="downstream", name="rtt", latency=rtt)
        yield made
    finally:
        try:
            for target in made:
                with contextlib.suppress(Exception):
                    target.db.close()
        finally:
            close_all_pools()
            for target in made:
                with contextlib.suppress(Exception):
                    target.proxy.delete()


def still_connected(server: PostgresServer, within: float = 5.0) -> int:
    """The bench's sessions still on the server after up to ``within`` seconds."""
    return sessions_left(server.connect, APPLICATION_NAME, within)


def run(
    args: argparse.Namespace, progress: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows, and what the bench left behind (before the server and proxy close)."""
    with (
        PostgresServer(tls=True) as server,
        ToxiproxyServer(prefer="embedded") as proxy_server,
    ):
        with targets(proxy_server, server, args.rtt) as made:
            rows = measure(args, progress, server, proxy_server, made)
        problems = []
        if connected := still_connected(server):
            problems.append(f"{connected} session(s) still connected")
        if threads := pool_threads():
            problems.append(f"pool threads still running: {', '.join(threads)}")
        return rows, problems


def measure(
    args: argparse.Namespace,
    progress: Callable[[str], None],
    server: PostgresServer,
    proxy_server: ToxiproxyServer,
    made: list[Target],
) -> list[dict[str, Any]]:
    """Each RTT's real round trip, then the interleaved rounds."""
    login = server.tls
    assert login is not None
    direct = connect_kwargs(login, server.host, server.port)
    tls = tls_in_use(login, server.host, server.port)
    direct_ms = select1_ms(direct)
    progress(f"direct SELECT 1: {direct_ms:.3f} ms; {tls}")
    for target in made:
        kwargs = connect_kwargs(login, target.proxy.listen_host, target.proxy.listen_port)
        target.measured_rtt_ms = select1_ms(kwargs)
        pooled_request(target.db)()  # opens the pool...
        target.db.pool.wait(timeout=60)  # ...and fills it before any timing
        progress(
            f"RTT {target.rtt_ms} ms: SELECT 1 through the proxy {target.measured_rtt_ms:.3f} ms"
        )
    for round_no in range(args.rounds):
        order = MODES if round_no % 2 == 0 else MODES[::-1]
        for target in made:
            kwargs = connect_kwargs(login, target.proxy.listen_host, target.proxy.listen_port)
            requests = {"connect": connect_request(kwargs), "pooled": pooled_request(target.db)}
            for mode in order:
                rate = requests_per_second(requests[mode], args.seconds)
                target.per_second[mode].append(rate)
                progress(
                    f"round {round_no + 1}/{args.rounds} RTT {target.rtt_ms} ms "
                    f"{mode}: {rate:.1f}/s"
                )
    return results(made, direct_ms, versions(server, proxy_server, tls))


def results(
    made: list[Target], direct_ms: float, found_versions: dict[str, str]
) -> list[dict[str, Any]]:
    """One object per RTT and mode: medians over the rounds, and each round's figure."""
    baseline = next((t for t in made if t.rtt_ms == 0), None)
    rows = []
    for target in made:
        medians = {m: statistics.median(target.per_second[m]) for m in MODES}
        for mode in MODES:
            ms = statistics.median(1e3 / r for r in target.per_second[mode])
            round_trips = None
            if baseline is not None and target is not baseline:
                base_ms = statistics.median(1e3 / r for r in baseline.per_second[mode])
                added = target.measured_rtt_ms - baseline.measured_rtt_ms
                round_trips = round((ms - base_ms) / added, 2) if added > 0 else None
            rows.append(
                {
                    "rtt_ms": target.rtt_ms,
                    "measured_rtt_ms": round(target.measured_rtt_ms, 3),
                    "direct_select1_ms": round(direct_ms, 3),
                    "mode": mode,
                    "per_second": round(medians[mode], 1),
                    "ms_per_request": round(ms, 3),
                    "pooled_over_connect": round(medians["pooled"] / medians["connect"], 2),
                    "round_trips_per_request": round_trips,
                    "rounds_per_second": [round(r, 1) for r in target.per_second[mode]],
                    "versions": found_versions,
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    v = rows[0]["versions"]
    print(
        f"connect-per-request vs plain_pool, 1 thread, SELECT 1 per request; median of "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s"
    )
    print(
        f"PostgreSQL {v['postgres']}, {v['tls']}, {v['auth']}; psycopg {v['psycopg']} "
        f"(libpq {v['libpq']}), psycopg_pool {v['psycopg_pool']}, plain_pool {v['plain_pool']}; "
        f"{v['proxy']}; direct SELECT 1 {rows[0]['direct_select1_ms']:.3f} ms"
    )
    header = (
        f"{'RTT':>6} {'measured':>9} {'connect/s':>10} {'ms/req':>8} {'RTs':>5} "
        f"{'pooled/s':>10} {'ms/req':>8} {'RTs':>5} {'pooled/connect':>15}"
    )
    print(header)
    by_rtt: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_rtt.setdefault(row["rtt_ms"], {})[row["mode"]] = row

    def rts(row: dict[str, Any]) -> str:
        value = row["round_trips_per_request"]
        return "" if value is None else f"{value:.1f}"

    for rtt, pair in by_rtt.items():
        c, p = pair["connect"], pair["pooled"]
        print(
            f"{rtt:>3} ms {c['measured_rtt_ms']:>6.2f} ms {c['per_second']:>10,.1f} "
            f"{c['ms_per_request']:>8.2f} {rts(c):>5} {p['per_second']:>10,.1f} "
            f"{p['ms_per_request']:>8.2f} {rts(p):>5} {c['pooled_over_connect']:>14.1f}x"
        )
    print(
        "measured = median SELECT 1 through the proxy; RTs = extra ms per request per ms of "
        "measured RTT (round trips on the request's path)"
    )


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM: unwind like Ctrl-C, so every ``with`` block closes what it opened."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        rows, problems = run(args, progress)
    except KeyboardInterrupt:
        print("interrupted: server, proxy and pools closed", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, args)
    for problem in problems:
        print(f"left behind by the bench: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
