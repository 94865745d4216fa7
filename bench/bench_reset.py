"""Requests per second, side by side in one run: checkout, ``SELECT 1``, return.

Rows, each with health checks off and on, at each ``--threads`` count, pool of 4
(min = max = 4) everywhere, all against ONE server:

- ``psycopg_pool``: bare psycopg_pool, ``getconn`` / ``execute`` / ``putconn``
  (health checks on: ``check=ConnectionPool.check_connection``);
- ``django``: Django's own pooled backend (5.1+, ``OPTIONS={"pool": {...}}``),
  driven as a request drives it (below); skipped with a reason without Django;
- ``plain_pool``: ``DatabaseWrapper(...).cursor().execute("SELECT 1")`` then
  ``.close()``, with its session reset on return;
- ``plain_pool_noreset``: the same through the ``NoResetOnReturn`` variant (the
  reset's price); skipped with a reason if the variant is not importable.

Rounds are short and interleaved (round 1 of every row, then round 2 of every
row, the order rotated each round) so that machine noise hits every row alike;
the table gives the median and the spread (min-max) of the per-round rates, and
each row's ratio to Django's and to bare psycopg_pool's median (same threads,
same health checks).

How Django's pooled backend does health checks (read in Django 5.2's source,
``django/db/backends/postgresql/base.py``): its ``pool`` property builds one
``psycopg_pool.ConnectionPool`` per alias with ``check=ConnectionPool.check_connection``
when ``CONN_HEALTH_CHECKS`` is on (else ``check=None``) and no ``reset``; the pool
runs that check (one round trip, ``conn.execute("")``) inside every ``getconn()``,
which ``connect()`` calls on a request's first ``cursor()``. Django's own probe,
``close_if_health_check_failed()``, returns at once for a pooled backend ("The pool
only returns healthy connections"). The request signals trigger no check:
``request_started`` / ``request_finished`` run ``close_old_connections()`` ->
``close_if_unusable_or_obsolete()``, which with a pool (``CONN_MAX_AGE`` must be 0)
only calls the same ``close()`` -> ``putconn()`` at the end of the request. So a
request is ``with connections[alias].cursor() as c: c.execute("SELECT 1")`` then
``connections[alias].close()``, which is what the bench runs (signals not sent).

    python bench/bench_reset.py [--rounds 5] [--seconds 1.0] [--threads 1 8] [--json]
    python bench/bench_reset.py --profile plain_pool [--health-checks on]

Without ``--dsn`` a throwaway server is started with ``chaos.postgres``.
``--profile BACKEND`` runs that one row at 1 thread under cProfile (the calling
thread only: the pool's own worker threads are not in the profile) and prints
the top 25 functions by own time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import importlib
import json
import platform
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import psycopg
import psycopg_pool
from _common import POOL, bounded, pool_threads, sessions_left
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PROFILE_TOP = 25

Op = Callable[[], None]
#: Called once in each worker thread: returns that thread's request.
OpFactory = Callable[[], Op]


@dataclasses.dataclass(frozen=True)
class ConnParams:
    """Where the server is; the password never shows in a repr."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = dataclasses.field(default="", repr=False)
    #: Other libpq keywords (sslmode...), passed as connection options.
    options: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_conninfo(cls, conninfo: str) -> ConnParams:
        params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
        return cls(
            host=params.pop("host", ""),
            port=int(params.pop("port", "5432")),
            dbname=params.pop("dbname", "postgres"),
            user=params.pop("user", ""),
            password=params.pop("password", ""),
            options=params,
        )

    def tagged(self, application_name: str) -> ConnParams:
        """These params with ``application_name`` set, unless the caller set one."""
        if "application_name" in self.options:
            return self
        options = {**self.options, "application_name": application_name}
        return dataclasses.replace(self, options=options)

    def conninfo(self) -> str:
        return make_conninfo(
            "",
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            password=self.password or None,
            **self.options,
        )


class Backend(Protocol):
    name: str
    label: str

    def unavailable(self) -> str | None:
        """Why this backend's rows are skipped (None: they run)."""

    def open(self, params: ConnParams) -> None: ...

    def make_op(self, health_checks: bool) -> OpFactory: ...

    def close(self) -> None: ...


class BarePsycopgPool:
    name = "psycopg_pool"
    label = "bare psycopg_pool"

    def __init__(self) -> None:
        self._pools: dict[bool, psycopg_pool.ConnectionPool] = {}
        self._params: ConnParams | None = None

    def unavailable(self) -> str | None:
        return None

    def open(self, params: ConnParams) -> None:
        self._params = params

    def _pool(self, health_checks: bool) -> psycopg_pool.ConnectionPool:
        if health_checks not in self._pools:
            assert self._params is not None
            check = psycopg_pool.ConnectionPool.check_connection if health_checks else None
            pool = psycopg_pool.ConnectionPool(
                self._params.conninfo(),
                kwargs={"autocommit": True},
                check=check,
                open=True,
                name=f"bench-bare-{'checked' if health_checks else 'unchecked'}",
                **POOL,
            )
            pool.wait()
            self._pools[health_checks] = pool
        return self._pools[health_checks]

    def make_op(self, health_checks: bool) -> OpFactory:
        pool = self._pool(health_checks)

        def make() -> Op:
            def op() -> None:
                conn = pool.getconn()
                conn.execute("SELECT 1")
                pool.putconn(conn)

            return op

        return make

    def close(self) -> None:
        while self._pools:
            self._pools.popitem()[1].close()


class DjangoPooled:
    """Django's postgresql backend with ``OPTIONS["pool"]``: one alias per health check mode."""

    name = "django"
    label = "Django pooled backend"
    #: Django insists on a "default" alias.
    ALIASES = {False: "default", True: "checked"}

    def __init__(self) -> None:
        self._opened = False

    def unavailable(self) -> str | None:
        try:
            import django
        except ImportError:
            return "Django is not installed (pip install 'plain-pool[bench]')"
        if django.VERSION < (5, 1):
            return f"Django {django.get_version()} has no pooled backend (5.1+)"
        from django.conf import settings

        if settings.configured and not self._opened:
            return (
                "Django settings were configured before the bench ran (one configure per process)"
            )
        return None

    def open(self, params: ConnParams) -> None:
        if self._opened:
            return
        import django
        from django.conf import settings

        def database(health_checks: bool) -> dict[str, Any]:
            return {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": params.host,
                "PORT": params.port,
                "NAME": params.dbname,
                "USER": params.user,
                "PASSWORD": params.password,
                "OPTIONS": {**params.options, "pool": dict(POOL)},
                "CONN_MAX_AGE": 0,  # required with a pool
                "CONN_HEALTH_CHECKS": health_checks,
            }

        settings.configure(
            DATABASES={alias: database(hc) for hc, alias in self.ALIASES.items()},
            USE_TZ=True,
            TIME_ZONE="UTC",
        )
        django.setup()
        self._opened = True

    def make_op(self, health_checks: bool) -> OpFactory:
        from django.db import connections

        alias = self.ALIASES[health_checks]

        def make() -> Op:
            def op() -> None:
                with connections[alias].cursor() as cursor:
                    cursor.execute("SELECT 1")
                connections[alias].close()

            return op

        return make

    def close(self) -> None:
        if not self._opened:
            return
        from django.db import connections

        for alias in self.ALIASES.values():
            connections[alias].close()
            connections[alias].close_pool()


class PlainPool:
    """plain_pool through its public wrapper; ``reset=False``: the NoResetOnReturn variant."""

    def __init__(self, reset: bool) -> None:
        self.reset = reset
        self.name = "plain_pool" if reset else "plain_pool_noreset"
        self.label = "plain_pool (reset)" if reset else "plain_pool (no reset)"
        self._settings: dict[bool, Any] = {}

    def _wrapper_class(self) -> type:
        if self.reset:
            from plain_pool import DatabaseWrapper

            return DatabaseWrapper
        # Imported lazily: the variants are test equipment and may leave the package.
        return importlib.import_module("chaos.targets.variants").VARIANTS["NoResetOnReturn"]

    def unavailable(self) -> str | None:
        try:
            self._wrapper_class()
        except (ImportError, AttributeError, KeyError) as exc:
            return f"chaos.targets.variants.VARIANTS['NoResetOnReturn'] not importable ({exc!r})"
        return None

    def open(self, params: ConnParams) -> None:
        from plain_pool import DatabaseSettings

        for hc in (False, True):
            self._settings[hc] = DatabaseSettings.coerce(
                {
                    "POSTGRES_HOST": params.host,
                    "POSTGRES_PORT": params.port,
                    "POSTGRES_DATABASE": params.dbname,
                    "POSTGRES_USER": params.user,
                    "POSTGRES_PASSWORD": params.password,
                    "POSTGRES_OPTIONS": dict(params.options),
                    "POSTGRES_POOL": dict(POOL),
                    "POSTGRES_CONN_HEALTH_CHECKS": hc,
                }
            )

    def make_op(self, health_checks: bool) -> OpFactory:
        cls = self._wrapper_class()
        settings = self._settings[health_checks]
        # The pool key ignores health checks: one alias per mode gives each its own pool.
        alias = f"bench-{self.name}-{'checked' if health_checks else 'unchecked'}"

        def make() -> Op:
            db = cls(settings, alias=alias)

            def op() -> None:
                db.cursor().execute("SELECT 1")
                db.close()

            return op

        return make

    def close(self) -> None:
        from plain_pool import close_all_pools

        close_all_pools()


def all_backends() -> list[Backend]:
    return [BarePsycopgPool(), DjangoPooled(), PlainPool(reset=True), PlainPool(reset=False)]


BACKEND_NAMES = ("psycopg_pool", "django", "plain_pool", "plain_pool_noreset")


@dataclasses.dataclass(frozen=True)
class Row:
    backend: str
    threads: int
    health_checks: bool


# -- measuring ----------------------------------------------------------------


def run_threads(threads: int, seconds: float, make_op: OpFactory) -> float:
    """Run a request in a loop in ``threads`` threads for ``seconds``; return requests/s.

    Each thread builds its request and runs it once before the clock starts. A
    failure in any thread stops the others and is raised here.
    """
    counts = [0] * threads
    errors: list[BaseException] = []
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        try:
            op = make_op()
            op()
            start.wait()
            n = 0
            while not stop.is_set():
                op()
                n += 1
            counts[i] = n
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:
            errors.append(exc)
            stop.set()
            start.abort()

    workers = [
        threading.Thread(target=worker, args=(i,), name=f"bench-{i}") for i in range(threads)
    ]
    for t in workers:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    t0 = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def schedule(rows: Sequence[Row], rounds: int) -> list[list[Row]]:
    """Every row once per round; round ``r`` starts at row ``r`` (rotated order)."""
    n = len(rows)
    return [list(rows[r % n :]) + list(rows[: r % n]) for r in range(rounds)] if n else []


def summarize(
    rates: dict[Row, list[float]],
    skipped: dict[str, str],
    rows: Sequence[Row],
    labels: dict[str, str],
    versions: dict[str, Any],
    seconds: float,
) -> list[dict[str, Any]]:
    """One JSON-ready object per row, in ``rows`` order, ratios against Django and bare."""
    medians = {row: statistics.median(r) for row, r in rates.items() if r}

    def ratio(row: Row, against: str) -> float | None:
        base = medians.get(Row(against, row.threads, row.health_checks))
        mine = medians.get(row)
        return round(mine / base, 3) if mine is not None and base else None

    out = []
    for row in rows:
        per_round = rates.get(row, [])
        item: dict[str, Any] = {
            "backend": row.backend,
            "label": labels[row.backend],
            "threads": row.threads,
            "health_checks": row.health_checks,
            "per_second": round(medians[row]) if row in medians else None,
            "min": round(min(per_round)) if per_round else None,
            "max": round(max(per_round)) if per_round else None,
            "rounds": [round(r) for r in per_round],
            "seconds_per_round": seconds,
            "vs_django": ratio(row, "django"),
            "vs_psycopg_pool": ratio(row, "psycopg_pool"),
            "versions": versions,
        }
        if row.backend in skipped:
            item["skipped"] = skipped[row.backend]
        out.append(item)
    return out


def format_table(results: list[dict[str, Any]]) -> str:
    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:,}"

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    head = (
        f"{'backend':<22}{'threads':>8}  {'checks':<7}{'median/s':>10}  "
        f"{'spread (min-max)':<18}{'vs django':>10}{'vs psycopg_pool':>17}"
    )
    lines = [head, "-" * len(head)]
    notes = {}
    for r in results:
        if "skipped" in r:
            notes[r["backend"]] = r["skipped"]
            continue
        spread = f"{num(r['min'])}-{num(r['max'])}"
        lines.append(
            f"{r['backend']:<22}{r['threads']:>8}  {'on' if r['health_checks'] else 'off':<7}"
            f"{num(r['per_second']):>10}  {spread:<18}{pct(r['vs_django']):>10}"
            f"{pct(r['vs_psycopg_pool']):>17}"
        )
    if results:
        v = results[0]["versions"]
        lines.append("")
        lines.append(", ".join(f"{k} {v[k]}" for k in v))
        n = max(len(r["rounds"]) for r in results)
        lines.append(
            f"{n} round{'' if n == 1 else 's'} of {results[0]['seconds_per_round']} s per row,"
            " interleaved; median and spread of the per-round rates; pool of 4"
        )
    lines += [f"skipped {name}: {why}" for name, why in notes.items()]
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------


@contextlib.contextmanager
def server(params: ConnParams | None) -> Iterator[ConnParams]:
    """``params`` as given, or a throwaway server of our own, stopped on exit."""
    if params is not None:
        yield params
        return
    from chaos.postgres import PostgresServer

    with PostgresServer() as srv:
        yield ConnParams.from_conninfo(srv.conninfo())


def versions(params: ConnParams) -> dict[str, Any]:
    with psycopg.connect(params.conninfo(), connect_timeout=10) as conn:
        server_version = conn.info.parameter_status("server_version")
    try:
        import django

        django_version: str | None = django.get_version()
    except ImportError:
        django_version = None
    try:
        from importlib.metadata import version

        plain_pool_version: str | None = version("plain-pool")
    except Exception:
        plain_pool_version = None
    return {
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "psycopg_pool": psycopg_pool.__version__,
        "django": django_version,
        "plain_pool": plain_pool_version,
        "server_version": server_version,
    }


def measure(args: argparse.Namespace, params: ConnParams) -> list[dict[str, Any]]:
    backends = [b for b in all_backends() if b.name in args.backends]
    labels = {b.name: b.label for b in backends}
    checks = {"off": [False], "on": [True], "both": [False, True]}[args.health_checks or "both"]
    skipped = {b.name: why for b in backends if (why := b.unavailable())}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    rows = [Row(b.name, t, hc) for b in backends for hc in checks for t in args.threads]
    runnable = [r for r in rows if r.backend not in skipped]
    info = versions(params)
    rates: dict[Row, list[float]] = {r: [] for r in runnable}
    opened: list[Backend] = []
    try:
        factories: dict[Row, OpFactory] = {}
        for b in backends:
            if b.name in skipped:
                continue
            opened.append(b)
            b.open(params)
            for row in runnable:
                if row.backend == b.name:
                    factories[row] = b.make_op(row.health_checks)
        if args.warmup > 0:
            for row in runnable:
                run_threads(row.threads, args.warmup, factories[row])
        for order in schedule(runnable, args.rounds):
            for row in order:
                rates[row].append(run_threads(row.threads, args.seconds, factories[row]))
    finally:
        for b in reversed(opened):
            b.close()
    return summarize(rates, skipped, rows, labels, info, args.seconds)


def profile(args: argparse.Namespace, params: ConnParams) -> int:
    (backend,) = [b for b in all_backends() if b.name == args.profile]
    if why := backend.unavailable():
        print(f"cannot profile {backend.name}: {why}", file=sys.stderr)
        return 1
    health_checks = args.health_checks == "on"
    prof = cProfile.Profile()
    try:
        backend.open(params)
        op = backend.make_op(health_checks)()
        deadline = time.perf_counter() + max(args.warmup, 0.1)
        while time.perf_counter() < deadline:
            op()
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + args.profile_seconds
        prof.enable()
        while time.perf_counter() < deadline:
            op()
            n += 1
        prof.disable()
        elapsed = time.perf_counter() - t0
    finally:
        backend.close()
    print(
        f"{backend.label}, 1 thread, health checks {'on' if health_checks else 'off'}: "
        f"{n / elapsed:,.0f}/s under cProfile ({n} requests in {elapsed:.1f} s); this thread"
        " only, and psycopg's wait() holds the time spent waiting for the server"
    )
    stats = pstats.Stats(prof, stream=sys.stdout)
    short_paths(stats)
    stats.sort_stats("tottime").print_stats(PROFILE_TOP)
    return 0


def _short(func: tuple[str, int, str]) -> tuple[str, int, str]:
    path, line, name = func
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
            break
    return path, line, name


def short_paths(stats: pstats.Stats) -> None:
    """Paths from the package down (``django/db/backends/base/base.py``): ``strip_dirs``
    would leave two ``base.py:236(connect)`` apart by nothing."""
    table = stats.stats  # type: ignore[attr-defined]
    names = {func: _short(func) for func in table}
    if len(set(names.values())) < len(names):  # a clash: keep full paths
        return
    stats.stats = {  # type: ignore[attr-defined]
        names[func]: (cc, nc, tt, ct, {names.get(c, c): v for c, v in callers.items()})
        for func, (cc, nc, tt, ct, callers) in table.items()
    }


# -- arguments ----------------------------------------------------------------


_positive_float = bounded(float, "seconds", low=0.0, low_open=True)
_non_negative_float = bounded(float, "seconds", low=0.0)
_positive_int = bounded(int, "", low=1)


def _dsn(text: str) -> ConnParams:
    try:
        return ConnParams.from_conninfo(text)
    except (psycopg.ProgrammingError, ValueError):
        # The string may hold a password: do not echo it.
        raise argparse.ArgumentTypeError("not a valid libpq connection string") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_reset.py",
        description="Requests per second (checkout, SELECT 1, return): bare psycopg_pool, "
        "Django's pooled backend and plain_pool with and without its reset, side by side.",
    )
    parser.add_argument("--rounds", type=_positive_int, default=5, help="rounds per row (5)")
    parser.add_argument(
        "--seconds", type=_positive_float, default=1.0, help="seconds per round (1.0)"
    )
    parser.add_argument(
        "--warmup",
        type=_non_negative_float,
        default=0.3,
        help="untimed seconds per row before round 1 (0.3)",
    )
    parser.add_argument(
        "--threads", type=_positive_int, nargs="+", default=[1, 8], help="thread counts (1 8)"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKEND_NAMES,
        default=list(BACKEND_NAMES),
        metavar="BACKEND",
        help=f"rows to run, from: {', '.join(BACKEND_NAMES)} (all)",
    )
    parser.add_argument(
        "--health-checks",
        choices=("off", "on", "both"),
        default=None,
        help="health check modes (both; --profile: off)",
    )
    parser.add_argument(
        "--dsn", type=_dsn, default=None, help="an existing server (libpq conninfo)"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")
    out.add_argument(
        "--profile",
        choices=BACKEND_NAMES,
        default=None,
        metavar="BACKEND",
        help=f"profile one backend at 1 thread instead, from: {', '.join(BACKEND_NAMES)}",
    )
    parser.add_argument(
        "--profile-seconds",
        type=_positive_float,
        default=3.0,
        help="seconds under cProfile (3.0)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.profile and args.health_checks == "both":
        parser.error("argument --health-checks: --profile runs one mode, 'off' or 'on'")
    args.threads = list(dict.fromkeys(args.threads))
    args.backends = list(dict.fromkeys(args.backends))
    return args


#: Every connection the bench opens says so (unless --dsn names another application).
APPLICATION_NAME = "bench_reset"


def still_connected(params: ConnParams, within: float = 5.0) -> int:
    """The bench's sessions still on the server (unless --dsn names another application)."""
    app = params.options.get("application_name", APPLICATION_NAME)
    return sessions_left(
        lambda: psycopg.connect(
            params.conninfo(),
            autocommit=True,
            connect_timeout=10,
            application_name=f"{app}-check",
        ),
        app,
        within,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        (backend,) = [b for b in all_backends() if b.name == args.profile]
        if why := backend.unavailable():  # before starting a server for nothing
            print(f"cannot profile {backend.name}: {why}", file=sys.stderr)
            return 1
    with server(args.dsn) as params:
        params = params.tagged(APPLICATION_NAME)
        if args.profile:
            status = profile(args, params)
        else:
            results = measure(args, params)
            print(json.dumps(results, indent=2) if args.json else format_table(results))
            status = 0
        connected = still_connected(params)
    problems = [f"{connected} session(s) still connected"] if connected else []
    if threads := pool_threads():
        problems.append(f"pool threads still running: {', '.join(threads)}")
    for problem in problems:
        print(f"left behind by the bench: {problem}", file=sys.stderr)
    return 1 if problems else status


if __name__ == "__main__":
    raise SystemExit(main())
