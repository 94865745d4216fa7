"""Recovery after a fast server restart: caller errors and time to the first successful
request, ``CONN_HEALTH_CHECKS`` on and off, Django's pool and persistent connections.
Django's own code only, no adapter.

Each round: 4 connections in use before the restart (pool: ``min_size = max_size = 4``,
warmed by 4 concurrent requests; persistent: 4 worker threads, ``CONN_MAX_AGE = 600``,
each with its connection), then ``pg_ctl stop -m fast`` + start on the same port
(``PostgresServer.restart``, which returns once the server accepts connections), then
requests one after another (each: ``request_started``, ``SELECT 1`` through Django's
cursor, ``request_finished``; persistent: the 4 workers in turn) until one succeeds.
The server log (``log_connections``) shows when the new sessions were opened.
Counted: the requests that failed (the error Django raised) and the milliseconds from
the server accepting connections again to the first success.

What it shows (Django 5.2.19 on psycopg_pool 3.3.3):

- pool, checks on: no caller error, but the first request waits seconds although fresh
  sessions are open within milliseconds (server log). ``getconn`` takes the pooled
  connections one by one, ``check_connection`` fails on each dead one, and after each
  failed check psycopg_pool sleeps with its reconnection backoff (0, then about 1, 2,
  4, 8 s: ``AttemptWithBackoff`` reused by psycopg/psycopg PR #711, the fix of issue
  #709, to avoid a busy loop of checks) before the next. With 4 dead connections that is
  about 7 s; with 6 the sleeps (15 s) outlast the 10 s ``timeout`` and the request fails
  with ``PoolTimeout`` - the server had been up for 10 s;
- pool, checks off: each dead connection fails one request (``putconn`` sees it BAD and
  discards it), then requests succeed within milliseconds;
- persistent connections: Django's per-request health check (``CONN_HEALTH_CHECKS``)
  reconnects in the request (no error, milliseconds); without it each thread's dead
  connection fails one request, then ``errors_occurred`` + ``is_usable()`` at
  ``request_finished`` drops it.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/django/restart_recovery.py``

Recorded output (Django 5.2.19, psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15;
2026-12-06; 2 shared cores):

    Django 5.2.19, psycopg_pool 3.3.3, Postgres 15.18; getconn timeout 10 s; 3 rounds each
    pool4_checks_on        caller errors per round [0, 0, 0]; first success after 6386, 6548, 7248
        ms (median 6548)
        server log (log_connections), sessions opened after the server was up, round 1: +3 ms, +4
            ms, +916 ms, +2743 ms
    pool6_checks_on        caller errors per round [1, 1, 1]; first success after 10011, 10008,
        10006 ms (median 10008)
        3 x django.db.utils.OperationalError: couldn't get a connection after 10.00 sec
        server log (log_connections), sessions opened after the server was up, round 1: +17 ms, +19
            ms, +1103 ms, +3263 ms, +7623 ms, +10010 ms
    persistent4_checks_on  caller errors per round [0, 0, 0]; first success after 5, 5, 4 ms (median
        5)
        server log (log_connections), sessions opened after the server was up, round 1: +3 ms
    pool4_checks_off       caller errors per round [4, 4, 4]; first success after 10, 20, 8 ms
        (median 10)
        12 x django.db.utils.OperationalError: terminating connection due to administrator command
        server log (log_connections), sessions opened after the server was up, round 1: +6 ms, +9 ms
    persistent4_checks_off caller errors per round [4, 4, 4]; first success after 19, 9, 5 ms
        (median 9)
        12 x django.db.utils.OperationalError: terminating connection due to administrator command
        server log (log_connections), sessions opened after the server was up, round 1: +13 ms
"""

from __future__ import annotations

import collections
import datetime
import queue
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import django
import psycopg_pool
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import connections

from chaos.postgres import PostgresServer

SIZE = 4
#: A pool of 6 with checks on: 0 + 1 + 2 + 4 + 8 s of check backoff > the 10 s timeout.
BIG = 6
ROUNDS = 3
GIVE_UP = 30.0


class Worker:
    """A long-lived request thread (Django's connections are per thread)."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.results: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                self.results.put((True, job()))
            except Exception as exc:
                self.results.put((False, exc))

    def call(self, job: Callable[[], Any]) -> tuple[bool, Any]:
        self.jobs.put(job)
        return self.results.get()

    def submit(self, job: Callable[[], Any]) -> None:
        self.jobs.put(job)


def request(alias: str, hold: float = 0.0) -> int:
    request_started.send(sender=None, environ={})
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        time.sleep(hold)
        return pid
    finally:
        request_finished.send(sender=None)


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


def one_round(
    pg: PostgresServer, alias: str, size: int
) -> tuple[int, float, collections.Counter, list[int]]:
    workers = [Worker() for _ in range(size)]
    for worker in workers:  # 4 connections in use at once: the pool (or 4 threads) holds 4
        worker.submit(lambda: request(alias, hold=0.2))
    before = {worker.results.get()[1] for worker in workers}
    assert len(before) == size, before
    offset = pg.log_path.stat().st_size
    pg.restart("fast")
    up, up_wall = time.monotonic(), time.time()
    errors: collections.Counter = collections.Counter()
    failed = 0
    while time.monotonic() - up < GIVE_UP:
        worker = workers[failed % size]
        ok, value = worker.call(lambda: request(alias))
        if ok:
            elapsed = (time.monotonic() - up) * 1000
            break
        failed += 1
        errors[f"{type(value).__module__}.{type(value).__name__}: {str(value).strip()[:60]}"] += 1
    else:
        elapsed = float("inf")
    opened = connections_opened(pg, offset, up_wall)
    for worker in workers:
        worker.call(lambda: connections[alias].close())
        worker.jobs.put(None)
    if connections[alias].settings_dict["OPTIONS"].get("pool"):
        connections[alias].close_pool()
    return failed, elapsed, errors, opened


def main() -> None:
    log = {"log_connections": "on", "log_line_prefix": "%m [%p] ", "log_timezone": "UTC"}
    with PostgresServer(settings=log) as pg:
        base = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": pg.host,
            "PORT": pg.port,
            "OPTIONS": {"connect_timeout": 3},
        }
        databases: dict[str, Any] = {"default": base}
        sizes: dict[str, int] = {}
        for checks in (True, False):
            on = "on" if checks else "off"
            for size in (SIZE, BIG) if checks else (SIZE,):
                pool = {"min_size": size, "max_size": size, "timeout": 10}
                alias = f"pool{size}_checks_{on}"
                sizes[alias] = size
                databases[alias] = dict(
                    base, CONN_HEALTH_CHECKS=checks, OPTIONS={**base["OPTIONS"], "pool": pool}
                )
            alias = f"persistent{SIZE}_checks_{on}"
            sizes[alias] = SIZE
            databases[alias] = dict(base, CONN_HEALTH_CHECKS=checks, CONN_MAX_AGE=600)
        settings.configure(DATABASES=databases, INSTALLED_APPS=[])
        django.setup()
        print(
            f"Django {django.get_version()}, psycopg_pool {psycopg_pool.__version__}, "
            f"Postgres {pg.version}; getconn timeout 10 s; {ROUNDS} rounds each"
        )
        for alias, size in sizes.items():
            results = [one_round(pg, alias, size) for _ in range(ROUNDS)]
            failed = [r[0] for r in results]
            times = [r[1] for r in results]
            kinds: collections.Counter = sum((r[2] for r in results), collections.Counter())
            print(
                f"{alias:22} caller errors per round {failed}; first success after "
                f"{', '.join(f'{t:.0f}' for t in times)} ms (median {statistics.median(times):.0f})"
            )
            for kind, n in kinds.items():
                print(f"    {n} x {kind}")
            print(
                "    server log (log_connections), sessions opened after the server was up, "
                f"round 1: {', '.join(f'+{ms} ms' for ms in results[0][3])}"
            )


if __name__ == "__main__":
    main()
